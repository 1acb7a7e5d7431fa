//! autoscaling/v1 HorizontalPodAutoscalers, served by converting to and from the
//! autoscaling/v2 form they are stored in, as kube-apiserver serves one kind at
//! several versions. v1 carries one target (CPU utilization); a v1 write keeps what
//! it cannot express (other metrics, behavior) from the stored object, and a v1 read
//! shows the status conditions in the annotation kube uses for them. `kubectl
//! autoscale` (1.32) creates its autoscalers this way.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::api::{Api, Body, Request, Response};
use crate::resources::{self, Resource};
use crate::status::ApiError;

/// The annotation kube keeps a v1 autoscaler's status conditions in.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
const V1: &str = "autoscaling/v1";
const V2: &str = "autoscaling/v2";
const KIND: &str = "HorizontalPodAutoscaler";

fn stored() -> &'static Resource {
    resources::find("autoscaling", "v2", "horizontalpodautoscalers").expect("served")
}

/// Whether a metric is the CPU utilization target v1 can express.
fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn is_cpu(m: &Value) -> bool {
    m["type"] == "Resource" && m["resource"]["name"] == "cpu"
}

/// The fields v1 and v2 share, in the spec and in the status.
const SPEC_FIELDS: [&str; 3] = ["scaleTargetRef", "minReplicas", "maxReplicas"];
const STATUS_FIELDS: [&str; 4] = [
    "observedGeneration",
    "lastScaleTime",
    "currentReplicas",
    "desiredReplicas",
];

/// The first metric of a list (spec.metrics or status.currentMetrics) `pick` picks.
fn find_metric(list: &Value, pick: fn(&Value) -> bool) -> Option<&Value> {
    list.as_array().into_iter().flatten().find(|m| pick(m))
}

/// A list of metrics without those `drop` picks.
fn other_metrics(list: &Value, drop: fn(&Value) -> bool) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|m| !drop(m))
        .cloned()
        .collect()
}

/// The v1 form of a stored (v2) autoscaler.
pub fn to_v1(o: &Value) -> Value {
    let mut meta = o.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let spec = &o["spec"];
    let mut s = Map::new();
    for k in SPEC_FIELDS {
        if let Some(v) = spec.get(k) {
            s.insert(k.into(), v.clone());
        }
    }
    let target = find_metric(&spec["metrics"], is_cpu_utilization)
        .and_then(|m| m["resource"]["target"].get("averageUtilization"));
    if let Some(t) = target {
        s.insert("targetCPUUtilizationPercentage".into(), t.clone());
    }
    let mut out = json!({"apiVersion": V1, "kind": KIND, "spec": s});
    if let Some(st) = o.get("status").filter(|s| s.is_object()) {
        let mut status = Map::new();
        for k in STATUS_FIELDS {
            if let Some(v) = st.get(k) {
                status.insert(k.into(), v.clone());
            }
        }
        status.entry("currentReplicas").or_insert_with(|| json!(0));
        status.entry("desiredReplicas").or_insert_with(|| json!(0));
        let current = find_metric(&st["currentMetrics"], is_cpu)
            .and_then(|m| m["resource"]["current"].get("averageUtilization"));
        if let Some(c) = current {
            status.insert("currentCPUUtilizationPercentage".into(), c.clone());
        }
        out["status"] = Value::Object(status);
        if let Some(c) = st
            .get("conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            if let Some(m) = meta.as_object_mut() {
                let ann = m.entry("annotations").or_insert_with(|| json!({}));
                ann[CONDITIONS_ANNOTATION] = json!(Value::Array(c.clone()).to_string());
            }
        }
    }
    out["metadata"] = meta;
    out
}

/// The stored (v2) form of a v1 autoscaler, keeping from `base` (the stored object,
/// for an update) what v1 cannot say.
pub fn to_v2(v1: &Value, base: Option<&Value>) -> Value {
    let mut out = base.cloned().unwrap_or_else(|| json!({}));
    out["apiVersion"] = json!(V2);
    out["kind"] = json!(KIND);
    let mut meta = v1.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        ann.remove(CONDITIONS_ANNOTATION);
    }
    out["metadata"] = meta;
    let spec = &v1["spec"];
    if !out["spec"].is_object() {
        out["spec"] = json!({});
    }
    for k in SPEC_FIELDS {
        match spec.get(k) {
            Some(v) => out["spec"][k] = v.clone(),
            None => {
                if let Some(s) = out["spec"].as_object_mut() {
                    s.remove(k);
                }
            }
        }
    }
    let mut metrics = other_metrics(&out["spec"]["metrics"], is_cpu_utilization);
    if let Some(t) = spec.get("targetCPUUtilizationPercentage") {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": t}}}),
        );
    }
    // None left: v2's defaulting targets 80% CPU, as v1's does.
    if metrics.is_empty() {
        if let Some(s) = out["spec"].as_object_mut() {
            s.remove("metrics");
        }
    } else {
        out["spec"]["metrics"] = Value::Array(metrics);
    }
    if let Some(st) = v1.get("status").filter(|s| s.is_object()) {
        if !out["status"].is_object() {
            out["status"] = json!({});
        }
        for k in STATUS_FIELDS {
            if let Some(v) = st.get(k) {
                out["status"][k] = v.clone();
            }
        }
        if let Some(c) = st.get("currentCPUUtilizationPercentage") {
            let mut current = other_metrics(&out["status"]["currentMetrics"], is_cpu);
            current.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": c}}}),
            );
            out["status"]["currentMetrics"] = Value::Array(current);
        }
    }
    out
}

/// A response's JSON with every stored-form autoscaler in it (an object, a list's
/// items, a watch event's object) in its v1 form; anything else (a Status, a Table,
/// metadata only) as it was.
fn convert_out(v: &mut Value) {
    match v.get("kind").and_then(Value::as_str) {
        Some(KIND) if v["apiVersion"] == V2 => *v = to_v1(v),
        Some("HorizontalPodAutoscalerList") => {
            v["apiVersion"] = json!(V1);
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                for i in items {
                    *i = to_v1(i);
                }
            }
        }
        _ if v.get("type").is_some() => {
            if let Some(o) = v.get_mut("object") {
                convert_out(o);
            }
        }
        _ => {}
    }
}

/// Converts an answer of the stored version into v1.
fn answer_v1(r: Response) -> Response {
    let Response {
        status,
        headers,
        body,
    } = r;
    let json = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("application/json"));
    let body = match body {
        Body::Full(b) if json => match serde_json::from_slice::<Value>(&b) {
            Ok(mut v) => {
                convert_out(&mut v);
                Body::Full(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
            }
            Err(_) => Body::Full(b),
        },
        Body::Stream(mut rx) => {
            // A watch: each event line converted as it comes.
            let (tx, out) = mpsc::channel::<Bytes>(16);
            tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    let mut converted = Vec::with_capacity(chunk.len());
                    for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        match serde_json::from_slice::<Value>(line) {
                            Ok(mut v) => {
                                convert_out(&mut v);
                                converted.extend(serde_json::to_vec(&v).unwrap_or_default());
                            }
                            Err(_) => converted.extend_from_slice(line),
                        }
                        converted.push(b'\n');
                    }
                    if tx.send(Bytes::from(converted)).await.is_err() {
                        return;
                    }
                }
            });
            Body::Stream(out)
        }
        b => b,
    };
    Response {
        status,
        headers,
        body,
    }
}

/// The request as made of the stored version, with `body`.
fn forwarded(req: &Request, body: Option<&Value>) -> Request {
    let mut headers = req.headers.clone();
    // Converted here from JSON; YAML is made at the end, protobuf is not offered.
    let accept = req.header("accept").unwrap_or("");
    if !accept.contains("as=Table") && !accept.contains("as=PartialObjectMetadata") {
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
    }
    if body.is_some() {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    Request {
        method: req.method.clone(),
        path: req.path.replacen("/autoscaling/v1/", "/autoscaling/v2/", 1),
        query: req.query.clone(),
        headers,
        body: body
            .map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()))
            .unwrap_or_default(),
        user: req.user.clone(),
    }
}

fn parse(req: &Request, res: &Resource) -> Result<Value, ApiError> {
    let v = crate::crud::parse_body(req)?;
    if let Err((path, e)) = (res.decode)(&v) {
        return Err(ApiError::bad_request(format!(
            "the body is not an autoscaling/v1 HorizontalPodAutoscaler: {path}: {e}"
        )));
    }
    Ok(v)
}

/// Serves an autoscaling/v1 request through the stored version.
pub async fn handle(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let v2 = stored();
    let yaml = req
        .header("accept")
        .is_some_and(|a| a.starts_with("application/yaml"));
    let r = match (&req.method, name) {
        (&Method::POST, None) => {
            let body = to_v2(&parse(req, res)?, None);
            crate::crud::handle(api, &forwarded(req, Some(&body)), v2, ns, None, sub).await?
        }
        (&Method::PUT, Some(n)) => {
            let v1 = parse(req, res)?;
            let (cur, _) = crate::crud::read(api, v2, ns, n).await?;
            let body = to_v2(&v1, Some(&cur));
            crate::crud::handle(api, &forwarded(req, Some(&body)), v2, ns, name, sub).await?
        }
        (&Method::PATCH, Some(n)) => patch(api, req, ns, n, sub).await?,
        _ => crate::crud::handle(api, &forwarded(req, None), v2, ns, name, sub).await?,
    };
    let r = answer_v1(r);
    if yaml {
        if let Body::Full(b) = &r.body {
            if let Ok(v) = serde_json::from_slice::<Value>(b) {
                let y = serde_yaml::to_string(&v).unwrap_or_default();
                return Ok(Response::bytes(r.status, "application/yaml", y));
            }
        }
    }
    Ok(r)
}

/// A patch of the v1 form: applied to the v1 form of the stored object, which is then
/// written back (retried on a conflict unless the patch names a resourceVersion).
async fn patch(
    api: &Arc<Api>,
    req: &Request,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let v2 = stored();
    let ct = req.media_type();
    if ct == "application/apply-patch+yaml" {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "server-side apply of autoscaling/v1 HorizontalPodAutoscalers is not supported by berth: apply the autoscaling/v2 form",
        ));
    }
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let pinned = body.pointer("/metadata/resourceVersion").is_some();
    for attempt in 0.. {
        let (cur, _) = crate::crud::read(api, v2, ns, name).await?;
        let mut doc = to_v1(&cur);
        let r = match ct {
            "application/json-patch+json" => crate::patch::json_patch(&mut doc, &body),
            "application/merge-patch+json" => crate::patch::merge_patch(&mut doc, &body),
            "application/strategic-merge-patch+json" => {
                crate::patch::strategic(&mut doc, &body, KIND)
            }
            _ => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"),
                ))
            }
        };
        if let Err(crate::patch::PatchError(m)) = r {
            return Err(ApiError::new(422, "Invalid", m));
        }
        let stored_form = to_v2(&doc, Some(&cur));
        let mut put = forwarded(req, Some(&stored_form));
        put.method = Method::PUT;
        match crate::crud::handle(api, &put, v2, ns, Some(name), sub).await {
            Err(e) if e.reason == "Conflict" && !pinned && attempt < 5 => continue,
            r => return r,
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_hpa() -> Value {
        json!({"apiVersion": V2, "kind": KIND,
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 81, "averageValue": "81m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]}})
    }

    #[test]
    fn the_v1_form_shows_the_cpu_target_usage_and_conditions() {
        let v1 = to_v1(&stored_hpa());
        assert_eq!(v1["apiVersion"], V1);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"]["maxReplicas"], 4);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 81);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        assert_eq!(v1["metadata"]["resourceVersion"], "7");
        let conds: Value = serde_json::from_str(
            v1["metadata"]["annotations"][CONDITIONS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(conds[0]["type"], "AbleToScale");
    }

    #[test]
    fn a_v1_write_keeps_what_v1_cannot_say() {
        let cur = stored_hpa();
        let mut v1 = to_v1(&cur);
        v1["spec"]["targetCPUUtilizationPercentage"] = json!(70);
        v1["spec"]["maxReplicas"] = json!(9);
        let v2 = to_v2(&v1, Some(&cur));
        assert_eq!(v2["apiVersion"], V2);
        let metrics = v2["spec"]["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 70);
        assert_eq!(metrics[1]["resource"]["name"], "memory");
        assert_eq!(
            v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            60
        );
        assert_eq!(v2["spec"]["maxReplicas"], 9);
        assert!(v2["metadata"]["annotations"]
            .get(CONDITIONS_ANNOTATION)
            .is_none());
        // The usage figure keeps its other fields.
        assert_eq!(
            v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            81
        );
        // No target in v1 and nothing else: no metrics, for v2's default (80% CPU).
        let fresh = to_v2(
            &json!({"apiVersion": V1, "kind": KIND, "metadata": {"name": "x"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3}}),
            None,
        );
        assert!(fresh["spec"].get("metrics").is_none(), "{fresh}");
        assert_eq!(fresh["spec"]["maxReplicas"], 3);
    }

    #[tokio::test]
    async fn lists_and_watch_events_are_converted() {
        let list = json!({"apiVersion": V2, "kind": "HorizontalPodAutoscalerList",
            "metadata": {"resourceVersion": "9"}, "items": [stored_hpa()]});
        let r = answer_v1(Response::json(200, &list));
        let Body::Full(b) = r.body else {
            panic!("a whole body")
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["apiVersion"], V1);
        assert_eq!(v["items"][0]["spec"]["targetCPUUtilizationPercentage"], 50);
        // Two events in one chunk, as the hub batches them.
        let (tx, rx) = mpsc::channel(4);
        let line = |t: &str| {
            let mut l = serde_json::to_vec(&json!({"type": t, "object": stored_hpa()})).unwrap();
            l.push(b'\n');
            l
        };
        tx.send(Bytes::from([line("ADDED"), line("MODIFIED")].concat()))
            .await
            .unwrap();
        drop(tx);
        let r = answer_v1(Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Stream(rx),
        });
        let Body::Stream(mut out) = r.body else {
            panic!("a stream")
        };
        let chunk = out.recv().await.unwrap();
        let events: Vec<Value> = chunk
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["type"], "MODIFIED");
        assert_eq!(events[1]["object"]["apiVersion"], V1);
        assert_eq!(
            events[1]["object"]["spec"]["targetCPUUtilizationPercentage"],
            50
        );
    }
}
