//! Defaulting as kube-apiserver does it, so what a client reads back is what it would
//! read from kube: pod spec and container defaults (also inside every pod template),
//! workload strategies, service fields, secret stringData.

use serde_json::{json, Map, Value};

fn set(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.into(), v);
    }
}

fn obj<'a>(v: &'a mut Value, k: &str) -> Option<&'a mut Map<String, Value>> {
    v.get_mut(k).and_then(Value::as_object_mut)
}

fn ensure_obj<'a>(m: &'a mut Map<String, Value>, k: &str) -> &'a mut Map<String, Value> {
    if !m.get(k).is_some_and(Value::is_object) {
        m.insert(k.into(), json!({}));
    }
    m.get_mut(k)
        .and_then(Value::as_object_mut)
        .expect("just set")
}

fn probe(p: &mut Value) {
    if let Some(m) = p.as_object_mut() {
        set(m, "timeoutSeconds", json!(1));
        set(m, "periodSeconds", json!(10));
        set(m, "successThreshold", json!(1));
        set(m, "failureThreshold", json!(3));
        if let Some(h) = obj(p, "httpGet") {
            set(h, "path", json!("/"));
            set(h, "scheme", json!("HTTP"));
        }
    }
}

fn container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    let image = m
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let last = image.rsplit('/').next().unwrap_or("");
    let tag = if image.contains('@') {
        Some("digest")
    } else {
        last.split_once(':').map(|(_, t)| t)
    };
    let policy = match tag {
        None | Some("latest") => "Always",
        _ => "IfNotPresent",
    };
    set(m, "imagePullPolicy", json!(policy));
    set(m, "terminationMessagePath", json!("/dev/termination-log"));
    set(m, "terminationMessagePolicy", json!("File"));
    set(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(pm) = p.as_object_mut() {
                set(pm, "protocol", json!("TCP"));
            }
        }
    }
    if let Some(env) = m.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(fr) = e
                .pointer_mut("/valueFrom/fieldRef")
                .and_then(Value::as_object_mut)
            {
                set(fr, "apiVersion", json!("v1"));
            }
        }
    }
    for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pr) = m.get_mut(p) {
            probe(pr);
        }
    }
}

/// Defaults of a pod spec (a pod's or a template's).
pub fn pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set(m, "restartPolicy", json!("Always"));
    set(m, "terminationGracePeriodSeconds", json!(30));
    set(m, "dnsPolicy", json!("ClusterFirst"));
    set(m, "securityContext", json!({}));
    set(m, "schedulerName", json!("default-scheduler"));
    set(m, "enableServiceLinks", json!(true));
    if let Some(sa) = m.get("serviceAccountName").cloned() {
        set(m, "serviceAccount", sa);
    }
    for k in ["containers", "initContainers"] {
        if let Some(cs) = m.get_mut(k).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
    if let Some(vols) = m.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            for (k, mode) in [
                ("secret", "defaultMode"),
                ("configMap", "defaultMode"),
                ("projected", "defaultMode"),
                ("downwardAPI", "defaultMode"),
            ] {
                if let Some(s) = obj(v, k) {
                    set(s, mode, json!(420));
                }
            }
            if let Some(h) = obj(v, "hostPath") {
                set(h, "type", json!(""));
            }
        }
    }
}

fn template(o: &mut Value, ptr: &str) {
    if let Some(spec) = o.pointer_mut(&format!("{ptr}/spec")) {
        pod_spec(spec);
    }
    if let Some(t) = o.pointer_mut(ptr).and_then(Value::as_object_mut) {
        let meta = ensure_obj(t, "metadata");
        set(meta, "creationTimestamp", Value::Null);
    }
}

/// Applies kind-specific defaults to a new or updated object.
pub fn apply(res: &crate::resources::Resource, o: &mut Value) {
    if let Some(c) = res.custom {
        // A custom object: its schema's defaults, nothing of the built-in kinds.
        if let Some(schema) = &c.schema {
            crate::crd::values::default(schema, o);
        }
        return;
    }
    match res.kind {
        "CustomResourceDefinition" => crate::crd::definition::default(o),
        "Pod" => {
            if let Some(spec) = o.get_mut("spec") {
                // Priority and preemptionPolicy come from the Priority admission
                // (crate::priority), after defaulting.
                pod_spec(spec);
            }
        }
        "Deployment" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "replicas", json!(1));
                set(s, "revisionHistoryLimit", json!(10));
                set(s, "progressDeadlineSeconds", json!(600));
                let st = ensure_obj(s, "strategy");
                set(st, "type", json!("RollingUpdate"));
                if st.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = ensure_obj(st, "rollingUpdate");
                    set(ru, "maxUnavailable", json!("25%"));
                    set(ru, "maxSurge", json!("25%"));
                }
            }
            template(o, "/spec/template");
        }
        "ReplicaSet" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "replicas", json!(1));
            }
            template(o, "/spec/template");
        }
        "ReplicationController" => {
            // No selector: the template's labels (and those of the object), as kube
            // defaults a ReplicationController.
            let labels = o.pointer("/spec/template/metadata/labels").cloned();
            if let Some(s) = obj(o, "spec") {
                set(s, "replicas", json!(1));
                set(s, "minReadySeconds", json!(0));
                if let Some(l) = labels.clone() {
                    set(s, "selector", l);
                }
            }
            if let (Some(l), Some(m)) = (labels, obj(o, "metadata")) {
                set(m, "labels", l);
            }
            template(o, "/spec/template");
        }
        "StatefulSet" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "replicas", json!(1));
                set(s, "podManagementPolicy", json!("OrderedReady"));
                set(s, "revisionHistoryLimit", json!(10));
                set(
                    s,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                let us = ensure_obj(s, "updateStrategy");
                set(us, "type", json!("RollingUpdate"));
                if us.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = ensure_obj(us, "rollingUpdate");
                    set(ru, "partition", json!(0));
                }
            }
            template(o, "/spec/template");
        }
        "DaemonSet" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "revisionHistoryLimit", json!(10));
                let us = ensure_obj(s, "updateStrategy");
                set(us, "type", json!("RollingUpdate"));
                if us.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = ensure_obj(us, "rollingUpdate");
                    set(ru, "maxUnavailable", json!(1));
                    set(ru, "maxSurge", json!(0));
                }
            }
            template(o, "/spec/template");
        }
        "Job" => {
            job_spec(o.get_mut("spec"));
            template(o, "/spec/template");
        }
        "CronJob" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "concurrencyPolicy", json!("Allow"));
                set(s, "suspend", json!(false));
                set(s, "successfulJobsHistoryLimit", json!(3));
                set(s, "failedJobsHistoryLimit", json!(1));
            }
            job_spec(o.pointer_mut("/spec/jobTemplate/spec"));
            template(o, "/spec/jobTemplate/spec/template");
            if let Some(jt) = o
                .pointer_mut("/spec/jobTemplate")
                .and_then(Value::as_object_mut)
            {
                let meta = ensure_obj(jt, "metadata");
                set(meta, "creationTimestamp", Value::Null);
            }
        }
        "Service" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "type", json!("ClusterIP"));
                set(s, "sessionAffinity", json!("None"));
                let ty = s
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if ty != "ExternalName" {
                    set(s, "internalTrafficPolicy", json!("Cluster"));
                    set(s, "ipFamilyPolicy", json!("SingleStack"));
                    set(s, "ipFamilies", json!(["IPv4"]));
                }
                if ty == "NodePort" || ty == "LoadBalancer" {
                    set(s, "externalTrafficPolicy", json!("Cluster"));
                }
                if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        if let Some(pm) = p.as_object_mut() {
                            set(pm, "protocol", json!("TCP"));
                            if let Some(port) = pm.get("port").cloned() {
                                set(pm, "targetPort", port);
                            }
                        }
                    }
                }
            }
        }
        "NetworkPolicy" => {
            if let Some(s) = obj(o, "spec") {
                for key in ["ingress", "egress"] {
                    for rule in s
                        .get_mut(key)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        let ports = rule.get_mut("ports").and_then(Value::as_array_mut);
                        for p in ports.into_iter().flatten() {
                            if let Some(pm) = p.as_object_mut() {
                                set(pm, "protocol", json!("TCP"));
                            }
                        }
                    }
                }
                // Ingress always; Egress when there are egress rules (kube's default).
                let egress = s
                    .get("egress")
                    .and_then(Value::as_array)
                    .is_some_and(|e| !e.is_empty());
                let types = if egress {
                    json!(["Ingress", "Egress"])
                } else {
                    json!(["Ingress"])
                };
                set(s, "policyTypes", types);
                set(s, "podSelector", json!({}));
            }
        }
        "Secret" => {
            if let Some(m) = o.as_object_mut() {
                set(m, "type", json!("Opaque"));
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    use base64::Engine;
                    let data = ensure_obj(m, "data");
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or("").to_string();
                        data.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(s)),
                        );
                    }
                }
            }
        }
        "Namespace" => {
            let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            if let Some(m) = o.as_object_mut() {
                let spec = ensure_obj(m, "spec");
                set(spec, "finalizers", json!(["kubernetes"]));
                let meta = ensure_obj(m, "metadata");
                let labels = ensure_obj(meta, "labels");
                labels.insert("kubernetes.io/metadata.name".into(), name);
            }
        }
        "PersistentVolume" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "persistentVolumeReclaimPolicy", json!("Retain"));
                set(s, "volumeMode", json!("Filesystem"));
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(s) = obj(o, "spec") {
                set(s, "volumeMode", json!("Filesystem"));
            }
        }
        _ => {}
    }
}

fn job_spec(spec: Option<&mut Value>) {
    let Some(s) = spec.and_then(Value::as_object_mut) else {
        return;
    };
    set(s, "backoffLimit", json!(6));
    set(s, "completionMode", json!("NonIndexed"));
    set(s, "suspend", json!(false));
    set(s, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if s.get("completions").is_none() && s.get("parallelism").is_none() {
        s.insert("completions".into(), json!(1));
        s.insert("parallelism".into(), json!(1));
    }
    set(s, "parallelism", json!(1));
}

/// Job selectors, generated from the job's uid as kube does unless manualSelector.
pub fn job_selector(o: &mut Value) {
    let uid = o
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let manual = o.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    if manual {
        return;
    }
    let labels = json!({
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    });
    if let Some(s) = obj(o, "spec") {
        if s.get("selector").is_none() {
            s.insert(
                "selector".into(),
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
        }
    }
    if let Some(meta) = o
        .pointer_mut("/spec/template/metadata")
        .and_then(Value::as_object_mut)
    {
        let l = ensure_obj(meta, "labels");
        for (k, v) in labels.as_object().into_iter().flatten() {
            l.entry(k.clone()).or_insert(v.clone());
        }
    }
}
