//! The HorizontalPodAutoscaler controller, as kube's: every 15 s each autoscaler
//! reads its target's scale (the /scale subresource), the usage of the target's pods
//! from metrics.k8s.io (which berth's API server serves from the node agents), and
//! for each Resource metric (cpu or memory, as a utilization of the pods' requests or
//! an average value) the replicas that would bring usage to the target —
//! ceil(replicas × usage / target), unchanged within kube's 10% tolerance. The
//! largest wins, bounded by min and max replicas and by kube's default rates (up: at
//! most double or +4 per 15 s; down: only to the highest recommendation of the last
//! 5 minutes). The scale is written through /scale with a SuccessfulRescale event;
//! the status carries the current metrics and the AbleToScale, ScalingActive and
//! ScalingLimited conditions `kubectl describe hpa` shows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_events::EventType;
use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

use crate::index::Index;
use crate::informer::itself;
use crate::{Error, Shared};

/// How often each autoscaler is looked at (kube's --horizontal-pod-autoscaler-sync-period).
const SYNC: Duration = Duration::from_secs(15);
/// Usage within this fraction of the target changes nothing (kube's tolerance).
const TOLERANCE: f64 = 0.1;
/// How far back scale-down recommendations are remembered (kube's default window).
const DOWN_WINDOW_SECS: i64 = 300;

struct Ctx {
    client: kube::Client,
    pods: Arc<Index<Pod>>,
    recorder: berth_events::Recorder,
    /// Per autoscaler UID: its recent recommendations (when, replicas).
    history: Mutex<HashMap<String, Vec<(Timestamp, i32)>>>,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::HPA),
        pods: shared.pods_by_namespace.clone(),
        recorder: shared.recorder("horizontal-pod-autoscaler", berth_pods::identities::HPA),
        history: Default::default(),
    });
    crate::drive(
        "horizontalpodautoscaler",
        shared.autoscalers.store(),
        shared.autoscalers.trigger(itself),
        reconcile,
        ctx,
    )
}

/// The plural resource name of a scale target's kind: the built-in ones known, any
/// other (a custom resource with a scale subresource) asked of discovery.
async fn plural(client: &kube::Client, api_version: &str, kind: &str) -> Result<String, String> {
    let known = match kind {
        "Deployment" => Some("deployments"),
        "ReplicaSet" => Some("replicasets"),
        "StatefulSet" => Some("statefulsets"),
        "ReplicationController" => Some("replicationcontrollers"),
        _ => None,
    };
    if let Some(p) = known {
        return Ok(p.into());
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk)
        .await
        .map(|(ar, _)| ar.plural)
        .map_err(|e| format!("the scale target's kind {kind} ({api_version}) is not served: {e}"))
}

/// The URL of the target's /scale.
async fn scale_url(client: &kube::Client, hpa: &HorizontalPodAutoscaler) -> Result<String, String> {
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let r = &hpa.spec.as_ref().ok_or("no spec")?.scale_target_ref;
    let api_version = r.api_version.clone().unwrap_or_else(|| "v1".into());
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let plural = plural(client, &api_version, &r.kind).await?;
    Ok(format!("{base}/namespaces/{ns}/{plural}/{}/scale", r.name))
}

async fn get_json(client: &kube::Client, url: &str) -> Result<Value, kube::Error> {
    client
        .request::<Value>(
            http::Request::get(url)
                .body(Vec::new())
                .expect("a valid request"),
        )
        .await
}

/// A pod's usage of `resource` (CPU in millicores, memory in bytes), by pod name.
async fn usage(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
) -> Result<HashMap<String, i128>, kube::Error> {
    let sel: String = form_urlencoded::byte_serialize(selector.as_bytes()).collect();
    let v = get_json(
        client,
        &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={sel}"),
    )
    .await?;
    let mut out = HashMap::new();
    for item in v["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let total: i128 = item["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["usage"][resource].as_str())
            .filter_map(|q| {
                let q = Quantity(q.to_string());
                if resource == "cpu" {
                    berth_pods::milli_value(&q).ok()
                } else {
                    berth_pods::value(&q).ok().map(i128::from)
                }
            })
            .sum();
        out.insert(name, total);
    }
    Ok(out)
}

/// What one metric recommends, and what it measured.
struct Measured {
    replicas: i32,
    status: MetricStatus,
    /// How the metric reads in an event ("cpu resource utilization (percentage of request)").
    reason: String,
    above: bool,
}

async fn measure(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    metric: &MetricSpec,
    selector: &str,
    current: i32,
) -> Result<Measured, String> {
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let r = metric
        .resource
        .as_ref()
        .filter(|_| metric.type_ == "Resource")
        .ok_or_else(|| {
            format!(
                "metrics of type {} are not supported by berth (Resource only)",
                metric.type_
            )
        })?;
    let used = usage(&ctx.client, &ns, selector, &r.name)
        .await
        .map_err(|e| {
            format!(
                "unable to get metrics for resource {}: {}",
                r.name,
                crate::api_message(&e)
            )
        })?;
    // The target's running pods that have a reading (the metrics API selected them
    // by the scale's selector).
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .get(&ns)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| used.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    if pods.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {}: no metrics returned from resource metrics API",
            r.name
        ));
    }
    let total_used: i128 = pods
        .iter()
        .map(|p| used[p.metadata.name.as_deref().unwrap_or_default()])
        .sum();
    let n = pods.len() as f64;
    let fmt_quantity = |v: i128| {
        if r.name == "cpu" {
            Quantity(format!("{v}m"))
        } else {
            Quantity(v.to_string())
        }
    };
    let average = total_used / pods.len() as i128;
    let (ratio, status_value, reason) = match (
        r.target.type_.as_str(),
        r.target.average_utilization,
        r.target.average_value.as_ref(),
    ) {
        ("Utilization", Some(target), _) => {
            let requested: i128 = pods
                .iter()
                .map(|p| berth_pods::pod_request(p, &r.name))
                .sum();
            if requested <= 0 {
                return Err(format!(
                    "failed to get {} utilization: missing request for {}",
                    r.name, r.name
                ));
            }
            let utilization = (total_used * 100 / requested) as i32;
            (
                f64::from(utilization) / f64::from(target.max(1)),
                MetricValueStatus {
                    average_utilization: Some(utilization),
                    average_value: Some(fmt_quantity(average)),
                    ..Default::default()
                },
                format!("{} resource utilization (percentage of request)", r.name),
            )
        }
        ("AverageValue", _, Some(target)) => {
            let want = if r.name == "cpu" {
                berth_pods::milli_value(target).unwrap_or(0)
            } else {
                berth_pods::value(target).map(i128::from).unwrap_or(0)
            };
            if want <= 0 {
                return Err(format!("invalid target value for {}", r.name));
            }
            (
                average as f64 / want as f64,
                MetricValueStatus {
                    average_value: Some(fmt_quantity(average)),
                    ..Default::default()
                },
                format!("{} resource", r.name),
            )
        }
        (t, _, _) => return Err(format!("invalid target type {t} for resource {}", r.name)),
    };
    let replicas = if (ratio - 1.0).abs() <= TOLERANCE {
        current
    } else {
        (ratio * n).ceil() as i32
    };
    Ok(Measured {
        replicas,
        status: MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: r.name.clone(),
                current: status_value,
            }),
            ..Default::default()
        },
        reason,
        above: ratio > 1.0,
    })
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    old: &HorizontalPodAutoscalerStatus,
) -> HorizontalPodAutoscalerCondition {
    let s = if status { "True" } else { "False" };
    let since = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == s)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    HorizontalPodAutoscalerCondition {
        type_: kind.into(),
        status: s.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(since),
    }
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = hpa.metadata.uid.clone().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let old = hpa.status.clone().unwrap_or_default();
    let url = scale_url(&ctx.client, &hpa).await.map_err(Error::Failed)?;
    let scale = match get_json(&ctx.client, &url).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "the HPA controller was unable to get the target's current scale: {}",
                crate::api_message(&e)
            );
            ctx.recorder
                .about(hpa.as_ref(), EventType::Warning, "FailedGetScale", &msg);
            let status = HorizontalPodAutoscalerStatus {
                conditions: Some(vec![condition(
                    "AbleToScale",
                    false,
                    "FailedGetScale",
                    &msg,
                    &old,
                )]),
                ..old.clone()
            };
            write_status(&ctx, &hpa, status).await?;
            return Ok(Action::requeue(SYNC));
        }
    };
    let current = scale["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
    let selector = scale["status"]["selector"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let min = spec.min_replicas.unwrap_or(1).max(1);
    let max = spec.max_replicas.max(min);
    let metrics = spec.metrics.clone().unwrap_or_else(|| {
        // kube's default: 80% CPU utilization.
        serde_json::from_value(json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]))
        .unwrap_or_default()
    });
    let mut measured = Vec::new();
    let mut failure = None;
    // Out of bounds by hand: brought back within them first, as kube does.
    let out_of_bounds = if current > 0 && current < min {
        Some((min, "Current number of replicas below Spec.MinReplicas"))
    } else if current > max {
        Some((max, "Current number of replicas above Spec.MaxReplicas"))
    } else {
        None
    };
    if current > 0 && out_of_bounds.is_none() {
        for m in &metrics {
            match measure(&ctx, &hpa, m, &selector, current).await {
                Ok(x) => measured.push(x),
                Err(e) => failure = Some(e),
            }
        }
    }
    let now = Timestamp::now();
    let mut conditions = Vec::new();
    let best = measured.iter().max_by_key(|m| m.replicas);
    let recommended = match best {
        Some(b) => b.replicas,
        None => current,
    };
    // Scale-down stabilization: the highest recommendation of the window.
    let stabilized = {
        let mut h = ctx.history.lock().unwrap_or_else(|e| e.into_inner());
        let list = h.entry(uid.clone()).or_default();
        list.push((now, recommended));
        list.retain(|(t, _)| now.as_second() - t.as_second() <= DOWN_WINDOW_SECS);
        if recommended < current {
            list.iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(recommended)
                .min(current)
        } else {
            recommended
        }
    };
    // Scale-up rate: at most double, or four more, per sync.
    let up_limit = (current.saturating_mul(2)).max(current.saturating_add(4));
    let mut desired = match out_of_bounds {
        Some((bound, _)) => bound,
        None => stabilized.min(up_limit),
    };
    let limited = if desired > max {
        desired = max;
        Some((
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        ))
    } else if desired < min {
        desired = min;
        Some((
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        ))
    } else {
        None
    };
    if current == 0 {
        // Scaled to zero by hand: autoscaling is off, as kube leaves it.
        desired = 0;
        conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &old,
        ));
    } else if out_of_bounds.is_some() {
        conditions.push(condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count",
            &old,
        ));
    } else if let Some(f) = &failure {
        if measured.is_empty() {
            ctx.recorder.about(
                hpa.as_ref(),
                EventType::Warning,
                "FailedGetResourceMetric",
                f,
            );
            conditions.push(condition(
                "ScalingActive",
                false,
                "FailedGetResourceMetric",
                f,
                &old,
            ));
            desired = current.clamp(min, max);
        } else {
            conditions.push(condition("ScalingActive", true, "ValidMetricFound", "the HPA was able to successfully calculate a replica count from some of its metrics", &old));
        }
    } else {
        conditions.push(condition("ScalingActive", true, "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)", &old));
    }
    match limited {
        Some((reason, msg)) => {
            conditions.push(condition("ScalingLimited", true, reason, msg, &old))
        }
        None => conditions.push(condition(
            "ScalingLimited",
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
            &old,
        )),
    }
    let mut last_scale = old.last_scale_time.clone();
    if desired != current && current > 0 {
        let patch = json!({"spec": {"replicas": desired}});
        let req = http::Request::patch(&url)
            .header("Content-Type", "application/merge-patch+json")
            .body(serde_json::to_vec(&patch).unwrap_or_default())
            .expect("a valid request");
        match ctx.client.request::<Value>(req).await {
            Ok(_) => {
                let why = match (out_of_bounds, best) {
                    (Some((_, why)), _) => why.to_string(),
                    (None, Some(b)) => format!(
                        "{} {} target",
                        b.reason,
                        if b.above { "above" } else { "below" }
                    ),
                    (None, None) => "replica bounds".into(),
                };
                ctx.recorder.about(
                    hpa.as_ref(),
                    EventType::Normal,
                    "SuccessfulRescale",
                    &format!("New size: {desired}; reason: {why}"),
                );
                conditions.insert(
                    0,
                    condition(
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        &format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                        &old,
                    ),
                );
                last_scale = Some(Time(now));
            }
            Err(e) => {
                let msg = format!(
                    "the HPA controller was unable to update the target scale: {}",
                    crate::api_message(&e)
                );
                ctx.recorder
                    .about(hpa.as_ref(), EventType::Warning, "FailedRescale", &msg);
                conditions.insert(
                    0,
                    condition("AbleToScale", false, "FailedUpdateScale", &msg, &old),
                );
            }
        }
    } else {
        conditions.insert(
            0,
            condition(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
                &old,
            ),
        );
    }
    let status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: desired,
        current_metrics: Some(measured.into_iter().map(|m| m.status).collect())
            .filter(|v: &Vec<_>| !v.is_empty()),
        last_scale_time: last_scale,
        observed_generation: hpa.metadata.generation,
        conditions: Some(conditions),
    };
    write_status(&ctx, &hpa, status).await?;
    Ok(Action::requeue(SYNC))
}

async fn write_status(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
) -> Result<(), Error> {
    let old = hpa.status.clone().unwrap_or_default();
    if !crate::status_differs(&old, &status) {
        return Ok(());
    }
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let api: kube::Api<HorizontalPodAutoscaler> = kube::Api::namespaced(ctx.client.clone(), &ns);
    let patch = crate::status_patch(&status, &["currentMetrics", "lastScaleTime"]);
    api.patch_status(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await?;
    Ok(())
}
