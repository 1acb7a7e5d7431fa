//! What kube-apiserver's admission plugins add to an object at create, where berth does
//! the same: the ServiceAccount plugin's `kube-api-access-*` volume, so that a
//! container finds a token, the cluster CA and its namespace at
//! /var/run/secrets/kubernetes.io/serviceaccount (kube-rs's and client-go's in-cluster
//! configuration read them there); and the DefaultTolerationSeconds plugin's
//! five-minute tolerations of not-ready and unreachable nodes.

use serde_json::{json, Value};

/// Where the token volume is mounted in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount plugin on a new pod: the service account defaulted to `default`
/// and, unless the pod opts out (automountServiceAccountToken: false) or mounts
/// something at the token path itself, a projected volume of a bound token (an hour),
/// the cluster CA and the namespace, mounted read-only in every container.
pub fn service_account(pod: &mut Value) {
    // A mirror of a static pod runs from its file: nothing is added to it.
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    if spec.get("automountServiceAccountToken") == Some(&json!(false)) {
        return;
    }
    let mounts_token_path = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH))
    };
    let name = crate::names::generate("kube-api-access-");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]
        }
    });
    let mut added = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if mounts_token_path(c) {
                continue;
            }
            let mounts = c
                .as_object_mut()
                .map(|o| o.entry("volumeMounts").or_insert_with(|| json!([])));
            if let Some(Value::Array(ms)) = mounts {
                ms.push(json!({"name": name, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}));
                added = true;
            }
        }
    }
    if added {
        if let Value::Array(vs) = spec.entry("volumes").or_insert_with(|| json!([])) {
            vs.push(volume);
        }
    }
}

/// The DefaultTolerationSeconds plugin on a new pod: unless it already tolerates them,
/// it tolerates the NoExecute taints of a not-ready and of an unreachable node for
/// 300 s, so a node that goes away loses its pods after five minutes, not at once.
pub fn default_toleration_seconds(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tols.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = list.iter().any(|t| {
            let effect_ok = t
                .get("effect")
                .and_then(Value::as_str)
                .is_none_or(|e| e.is_empty() || e == "NoExecute");
            let key_ok = match t.get("key").and_then(Value::as_str).unwrap_or("") {
                "" => t.get("operator").and_then(Value::as_str) == Some("Exists"),
                k => k == key,
            };
            effect_ok && key_ok
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gets_the_token_volume_in_every_container_unless_it_opts_out() {
        let mut p = json!({"spec": {"containers": [{"name": "a"}, {"name": "b",
            "volumeMounts": [{"name": "x", "mountPath": "/x"}]}],
            "initContainers": [{"name": "i"}]}});
        service_account(&mut p);
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        let vols = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 1);
        let name = vols[0]["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5);
        for path in [
            "/spec/containers/0",
            "/spec/containers/1",
            "/spec/initContainers/0",
        ] {
            let ms = p.pointer(path).unwrap()["volumeMounts"].as_array().unwrap();
            assert!(
                ms.iter().any(|m| m["name"] == name
                    && m["mountPath"] == TOKEN_MOUNT_PATH
                    && m["readOnly"] == true),
                "{path}"
            );
        }
        let mut off = json!({"spec": {"automountServiceAccountToken": false, "serviceAccountName": "builder",
            "containers": [{"name": "a"}]}});
        service_account(&mut off);
        assert!(off["spec"]["volumes"].is_null());
        assert_eq!(off["spec"]["serviceAccount"], "builder");
        let mut own = json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "t", "mountPath": TOKEN_MOUNT_PATH}]}]}});
        service_account(&mut own);
        assert!(
            own["spec"]["volumes"].is_null(),
            "a pod that mounts the path itself keeps it"
        );
    }

    #[test]
    fn five_minute_tolerations_are_added_unless_the_pod_has_its_own() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod);
        let tols = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[0]["tolerationSeconds"], 300);
        let mut own = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        default_toleration_seconds(&mut own);
        let tols = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 2, "{tols:?}");
        assert_eq!(tols[0]["tolerationSeconds"], 5);
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }
}
