//! One row per object: the cells kube's printers fill for each kind.

use serde_json::{json, Value};

use super::human_duration;

fn age_of(ts: Option<&str>) -> String {
    let Some(ts) = ts else {
        return "<unknown>".into();
    };
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn selector(v: &Value, ptr: &str) -> String {
    let mut parts: Vec<String> = v
        .pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    or_none(parts.join(","))
}

/// A label selector as kube formats one (`a=b,c in (d,e),!f`; `<none>` when empty).
fn label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in arr(sel, "/matchExpressions") {
        let key = s(e, "/key");
        let values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        parts.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    or_none(parts.join(","))
}

fn containers_images(v: &Value, ptr: &str) -> (String, String) {
    let cs = arr(v, ptr);
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn int_or_string(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

/// The pod's STATUS column, as kubectl shows it.
fn pod_status(p: &Value) -> String {
    let mut reason = s(p, "/status/phase").to_string();
    if !s(p, "/status/reason").is_empty() {
        reason = s(p, "/status/reason").to_string();
    }
    for c in arr(p, "/status/containerStatuses") {
        if let Some(w) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            if !w.is_empty() {
                reason = w.to_string();
            }
        } else if let Some(t) = c.pointer("/state/terminated") {
            let r = s(t, "/reason");
            reason = if !r.is_empty() {
                r.to_string()
            } else if let Some(sig) = t.get("signal").and_then(Value::as_i64).filter(|x| *x != 0) {
                format!("Signal:{sig}")
            } else {
                format!("ExitCode:{}", i(t, "/exitCode"))
            };
        }
    }
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    if reason.is_empty() {
        "Pending".into()
    } else {
        reason
    }
}

pub(super) fn row(kind: &str, o: &Value) -> Vec<Value> {
    let name = s(o, "/metadata/name").to_string();
    let age = age_of(
        o.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
    );
    match kind {
        "Pod" => {
            let total = arr(o, "/spec/containers").len();
            let statuses = arr(o, "/status/containerStatuses");
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| i(c, "/restartCount")).sum();
            let gates = arr(o, "/spec/readinessGates");
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age),
                json!(or_none(s(o, "/status/podIP").into())),
                json!(or_none(s(o, "/spec/nodeName").into())),
                json!(or_none(s(o, "/status/nominatedNodeName").into())),
                json!(if gates.is_empty() {
                    "<none>".to_string()
                } else {
                    format!("0/{}", gates.len())
                }),
            ]
        }
        "Namespace" => vec![json!(name), json!(s(o, "/status/phase")), json!(age)],
        "Node" => {
            let ready = arr(o, "/status/conditions")
                .iter()
                .find(|c| s(c, "/type") == "Ready")
                .map(|c| {
                    if s(c, "/status") == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let mut status = ready.to_string();
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            let addr = |t: &str| {
                arr(o, "/status/addresses")
                    .iter()
                    .find(|a| s(a, "/type") == t)
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                json!(name),
                json!(status),
                json!(or_none(roles.join(","))),
                json!(age),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(or_none(s(o, "/status/nodeInfo/osImage").into())),
                json!(or_none(s(o, "/status/nodeInfo/kernelVersion").into())),
                json!(or_none(
                    s(o, "/status/nodeInfo/containerRuntimeVersion").into()
                )),
            ]
        }
        "Service" => {
            let ports: Vec<String> = arr(o, "/spec/ports")
                .iter()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{}:{np}/{proto}", i(p, "/port")),
                        None => format!("{}/{proto}", i(p, "/port")),
                    }
                })
                .collect();
            let ext: Vec<String> = arr(o, "/spec/externalIPs")
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .chain(
                    arr(o, "/status/loadBalancer/ingress")
                        .iter()
                        .map(|x| s(x, "/ip").to_string()),
                )
                .collect();
            let ty = match s(o, "/spec/type") {
                "" => "ClusterIP",
                t => t,
            };
            let ext = if ext.is_empty() {
                if ty == "LoadBalancer" {
                    "<pending>".to_string()
                } else {
                    "<none>".to_string()
                }
            } else {
                ext.join(",")
            };
            vec![
                json!(name),
                json!(ty),
                json!(or_none(s(o, "/spec/clusterIP").into())),
                json!(ext),
                json!(or_none(ports.join(","))),
                json!(age),
                json!(selector(o, "/spec/selector")),
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in arr(o, "/subsets") {
                for a in arr(sub, "/addresses") {
                    for p in arr(sub, "/ports") {
                        eps.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                    }
                }
            }
            vec![json!(name), json!(or_none(eps.join(","))), json!(age)]
        }
        "ConfigMap" => {
            let n = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + o.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![json!(name), json!(n), json!(age)]
        }
        "Secret" => {
            let n = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            let ty = match s(o, "/type") {
                "" => "Opaque",
                t => t,
            };
            vec![json!(name), json!(ty), json!(n), json!(age)]
        }
        "ServiceAccount" => vec![json!(name), json!(arr(o, "/secrets").len()), json!(age)],
        "Event" => {
            let last = o
                .pointer("/lastTimestamp")
                .or_else(|| o.pointer("/eventTime"))
                .or_else(|| o.pointer("/series/lastObservedTime"))
                .or_else(|| o.pointer("/metadata/creationTimestamp"))
                .and_then(Value::as_str);
            let (ok, on) = if o.get("regarding").is_some() {
                (s(o, "/regarding/kind"), s(o, "/regarding/name"))
            } else {
                (s(o, "/involvedObject/kind"), s(o, "/involvedObject/name"))
            };
            let msg = if o.get("note").is_some() {
                s(o, "/note")
            } else {
                s(o, "/message")
            };
            let count = o.get("count").and_then(Value::as_i64).unwrap_or(1);
            vec![
                json!(age_of(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(format!("{}/{on}", ok.to_ascii_lowercase())),
                json!(msg),
                json!(or_none(
                    s(o, "/source/component").to_string() + s(o, "/reportingController")
                )),
                json!(count.to_string()),
                json!(name),
            ]
        }
        "PersistentVolume" => {
            let claim = match o.get("spec").and_then(|sp| sp.get("claimRef")) {
                Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
                None => String::new(),
            };
            vec![
                json!(name),
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(o, "/spec/accessModes")),
                json!(match s(o, "/spec/persistentVolumeReclaimPolicy") {
                    "" => "Retain",
                    p => p,
                }),
                json!(s(o, "/status/phase")),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!(age),
            ]
        }
        "PersistentVolumeClaim" => vec![
            json!(name),
            json!(s(o, "/status/phase")),
            json!(s(o, "/spec/volumeName")),
            json!(s(o, "/status/capacity/storage")),
            json!(access_modes(o, "/status/accessModes")),
            json!(s(o, "/spec/storageClassName")),
            json!(age),
        ],
        "Deployment" => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    spec_replicas(o)
                )),
                json!(i(o, "/status/updatedReplicas")),
                json!(i(o, "/status/availableReplicas")),
                json!(age),
                json!(c),
                json!(im),
                json!(selector(o, "/spec/selector/matchLabels")),
            ]
        }
        "ReplicaSet" | "ReplicationController" => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            // A ReplicationController's selector is the label map itself.
            let sel = if kind == "ReplicaSet" {
                "/spec/selector/matchLabels"
            } else {
                "/spec/selector"
            };
            vec![
                json!(name),
                json!(spec_replicas(o)),
                json!(i(o, "/status/replicas")),
                json!(i(o, "/status/readyReplicas")),
                json!(age),
                json!(c),
                json!(im),
                json!(selector(o, sel)),
            ]
        }
        "StatefulSet" => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    spec_replicas(o)
                )),
                json!(age),
                json!(c),
                json!(im),
            ]
        }
        "DaemonSet" => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                json!(name),
                json!(i(o, "/status/desiredNumberScheduled")),
                json!(i(o, "/status/currentNumberScheduled")),
                json!(i(o, "/status/numberReady")),
                json!(i(o, "/status/updatedNumberScheduled")),
                json!(i(o, "/status/numberAvailable")),
                json!(selector(o, "/spec/template/spec/nodeSelector")),
                json!(age),
                json!(c),
                json!(im),
                json!(selector(o, "/spec/selector/matchLabels")),
            ]
        }
        "ControllerRevision" => {
            let owner = arr(o, "/metadata/ownerReferences")
                .iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .map(|r| {
                    let g = s(r, "/apiVersion").split('/').next().unwrap_or("");
                    format!(
                        "{}.{g}/{}",
                        s(r, "/kind").to_ascii_lowercase(),
                        s(r, "/name")
                    )
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(name),
                json!(owner),
                json!(i(o, "/revision")),
                json!(age),
            ]
        }
        "Job" => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            let conds = arr(o, "/status/conditions");
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(n) => format!("{}/{n}", i(o, "/status/succeeded")),
                None => format!("{}/1", i(o, "/status/succeeded")),
            };
            let dur = match (
                o.pointer("/status/startTime").and_then(Value::as_str),
                o.pointer("/status/completionTime").and_then(Value::as_str),
            ) {
                (Some(a), Some(b)) => {
                    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
                        (Ok(a), Ok(b)) => human_duration(b.as_second() - a.as_second()),
                        _ => String::new(),
                    }
                }
                (Some(a), None) => age_of(Some(a)),
                _ => String::new(),
            };
            vec![
                json!(name),
                json!(status),
                json!(completions),
                json!(dur),
                json!(age),
                json!(c),
                json!(im),
                json!(selector(o, "/spec/selector/matchLabels")),
            ]
        }
        "CronJob" => {
            let (c, im) = containers_images(o, "/spec/jobTemplate/spec/template/spec/containers");
            let last = o
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
                .map(|t| age_of(Some(t)))
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(name),
                json!(s(o, "/spec/schedule")),
                json!(or_none(s(o, "/spec/timeZone").into())),
                json!(o
                    .pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(arr(o, "/status/active").len()),
                json!(last),
                json!(age),
                json!(c),
                json!(im),
                json!(selector(o, "/spec/jobTemplate/spec/selector/matchLabels")),
            ]
        }
        "NetworkPolicy" => vec![
            json!(name),
            json!(label_selector(o.pointer("/spec/podSelector"))),
            json!(age),
        ],
        "Lease" => vec![json!(name), json!(s(o, "/spec/holderIdentity")), json!(age)],
        "Role" | "ClusterRole" | "CustomResourceDefinition" => {
            vec![json!(name), json!(s(o, "/metadata/creationTimestamp"))]
        }
        "CertificateSigningRequest" => {
            // kubectl's: the approval, then Issued or Failed; Pending before either.
            let mut cond: Vec<&str> = arr(o, "/status/conditions")
                .iter()
                .filter_map(|c| c.get("type").and_then(Value::as_str))
                .collect();
            if o.pointer("/status/certificate").is_some() {
                cond.push("Issued");
            }
            let cond = if cond.is_empty() {
                "Pending".to_string()
            } else {
                cond.join(",")
            };
            let duration = o
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(human_duration)
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(name),
                json!(age),
                json!(s(o, "/spec/signerName")),
                json!(s(o, "/spec/username")),
                json!(duration),
                json!(cond),
            ]
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let of_kind = |kind: &str| {
                arr(o, "/subjects")
                    .iter()
                    .filter(|x| x.get("kind").and_then(Value::as_str) == Some(kind))
                    .map(|x| match kind {
                        "ServiceAccount" => format!("{}/{}", s(x, "/namespace"), s(x, "/name")),
                        _ => s(x, "/name").to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                json!(age),
                json!(of_kind("User")),
                json!(of_kind("Group")),
                json!(of_kind("ServiceAccount")),
            ]
        }
        "Ingress" => {
            let hosts: Vec<String> = arr(o, "/spec/rules")
                .iter()
                .filter_map(|r| r.get("host").and_then(Value::as_str).map(str::to_string))
                .collect();
            let addrs: Vec<String> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|a| {
                    a.get("ip")
                        .or_else(|| a.get("hostname"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            let ports = if arr(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                json!(name),
                json!(or_none(s(o, "/spec/ingressClassName").into())),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(addrs.join(",")),
                json!(ports),
                json!(age),
            ]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = arr(o, "/ports")
                .iter()
                .map(|p| i(p, "/port").to_string())
                .collect();
            let eps: Vec<String> = arr(o, "/endpoints")
                .iter()
                .flat_map(|e| {
                    arr(e, "/addresses")
                        .iter()
                        .filter_map(|a| a.as_str().map(str::to_string))
                })
                .collect();
            vec![
                json!(name),
                json!(s(o, "/addressType")),
                json!(or_none(ports.join(","))),
                json!(or_none(eps.join(","))),
                json!(age),
            ]
        }
        "PodDisruptionBudget" => vec![
            json!(name),
            json!(int_or_string(o, "/spec/minAvailable")),
            json!(int_or_string(o, "/spec/maxUnavailable")),
            json!(i(o, "/status/disruptionsAllowed")),
            json!(age),
        ],
        "HorizontalPodAutoscaler" => vec![
            json!(name),
            json!(format!(
                "{}/{}",
                s(o, "/spec/scaleTargetRef/kind"),
                s(o, "/spec/scaleTargetRef/name")
            )),
            json!(hpa_targets(o)),
            json!(o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .to_string()),
            json!(i(o, "/spec/maxReplicas")),
            json!(i(o, "/status/currentReplicas")),
            json!(age),
        ],
        "PriorityClass" => vec![
            json!(name),
            json!(i(o, "/value")),
            json!(o
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            json!(age),
            json!(o
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")),
        ],
        "StorageClass" => {
            let default = o
                .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                .and_then(Value::as_str)
                == Some("true");
            vec![
                json!(if default {
                    format!("{name} (default)")
                } else {
                    name.to_string()
                }),
                json!(o.get("provisioner").and_then(Value::as_str).unwrap_or("")),
                json!(o
                    .get("reclaimPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("Delete")),
                json!(o
                    .get("volumeBindingMode")
                    .and_then(Value::as_str)
                    .unwrap_or("Immediate")),
                json!(o
                    .get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()),
                json!(age),
            ]
        }
        "CSINode" => vec![
            json!(name),
            json!(o
                .pointer("/spec/drivers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)),
            json!(age),
        ],
        _ => vec![json!(name), json!(age)],
    }
}

/// kubectl's TARGETS of an autoscaler: each metric as "cpu: 75%/50%" (current or
/// <unknown>, then the target).
fn hpa_targets(o: &Value) -> String {
    let current = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let metrics = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| {
            vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}})]
        });
    let parts: Vec<String> = metrics
        .iter()
        .map(|m| {
            let name = m
                .pointer("/resource/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let target = m.pointer("/resource/target");
            let now = current
                .iter()
                .find(|c| c.pointer("/resource/name").and_then(Value::as_str) == Some(name))
                .and_then(|c| c.pointer("/resource/current"));
            let utilization = target
                .and_then(|t| t.get("averageUtilization"))
                .and_then(Value::as_i64);
            match utilization {
                Some(want) => {
                    let have = now
                        .and_then(|c| c.get("averageUtilization"))
                        .and_then(Value::as_i64)
                        .map_or("<unknown>".to_string(), |v| format!("{v}%"));
                    format!("{name}: {have}/{want}%")
                }
                None => {
                    let want = target
                        .and_then(|t| t.get("averageValue"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let have = now
                        .and_then(|c| c.get("averageValue"))
                        .and_then(Value::as_str)
                        .unwrap_or("<unknown>");
                    format!("{name}: {have}/{want}")
                }
            }
        })
        .collect();
    parts.join(", ")
}

fn spec_replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn access_modes(o: &Value, ptr: &str) -> String {
    arr(o, ptr)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}
