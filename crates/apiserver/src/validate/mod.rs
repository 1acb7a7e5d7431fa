//! Validation: what kube-apiserver answers 422 Invalid for, with its field paths —
//! names, labels, required fields, supported values, selectors matching templates,
//! and fields that may not change.

use serde_json::Value;

use crate::names;
use crate::resources::Resource;
use crate::status::Cause;

mod networking;
mod rbac;

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn meta(res: &Resource, o: &Value, out: &mut Vec<Cause>) {
    let name = s(o, "/metadata/name").unwrap_or("");
    if name.is_empty() {
        out.push(Cause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    } else {
        let bad = match res.kind {
            _ if res.custom.is_some() => names::dns1123_subdomain(name),
            "Namespace" => names::dns1123_label(name),
            "Service" => names::dns1035_label(name),
            // RBAC names are path segments ("system:node"), as kube validates them.
            _ if res.group == "rbac.authorization.k8s.io" => names::path_segment(name),
            _ => names::dns1123_subdomain(name),
        };
        if let Some(why) = bad {
            out.push(Cause::invalid("metadata.name", name, why));
        }
    }
    for (k, v) in o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(why) = names::qualified_name(k) {
            out.push(Cause::invalid("metadata.labels", k, why));
        }
        match v.as_str() {
            Some(val) => {
                if let Some(why) = names::label_value(val) {
                    out.push(Cause::invalid(format!("metadata.labels.{k}"), val, why));
                }
            }
            None => out.push(Cause::invalid(
                format!("metadata.labels.{k}"),
                &v.to_string(),
                "must be a string",
            )),
        }
    }
    for k in o
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        if let Some(why) = names::qualified_name(k) {
            out.push(Cause::invalid("metadata.annotations", k, why));
        }
    }
    let size: usize = o
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if size > 256 * 1024 {
        out.push(Cause {
            reason: "FieldValueTooLong",
            field: "metadata.annotations".into(),
            message: format!("Too long: may not be more than 262144 bytes (have {size})"),
        });
    }
}

fn pod_spec(spec: &Value, path: &str, in_job: bool, out: &mut Vec<Cause>) {
    pod_spec_with(spec, path, in_job, &[], out)
}

/// [`pod_spec`], with more volume names mounts may use (a StatefulSet's claim
/// templates).
fn pod_spec_with(spec: &Value, path: &str, in_job: bool, claims: &[&str], out: &mut Vec<Cause>) {
    let containers = arr(spec, "/containers");
    if containers.is_empty() {
        out.push(Cause::required(format!("{path}.containers")));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (kind, list) in [
        ("containers", containers),
        ("initContainers", arr(spec, "/initContainers")),
    ] {
        for (i, c) in list.iter().enumerate() {
            let p = format!("{path}.{kind}[{i}]");
            match s(c, "/name") {
                None | Some("") => out.push(Cause::required(format!("{p}.name"))),
                Some(n) => {
                    if let Some(why) = names::dns1123_label(n) {
                        out.push(Cause::invalid(format!("{p}.name"), n, why));
                    }
                    if seen.contains(&n) {
                        out.push(Cause::duplicate(format!("{p}.name"), n));
                    }
                    seen.push(n);
                }
            }
            if s(c, "/image").is_none_or(|i| i.trim().is_empty()) {
                out.push(Cause::required(format!("{p}.image")));
            }
            for (j, port) in arr(c, "/ports").iter().enumerate() {
                let n = port
                    .get("containerPort")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    out.push(Cause::invalid(
                        format!("{p}.ports[{j}].containerPort"),
                        &n.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            if let Some(pol) = s(c, "/imagePullPolicy") {
                if !["Always", "IfNotPresent", "Never"].contains(&pol) {
                    out.push(Cause::not_supported(
                        format!("{p}.imagePullPolicy"),
                        pol,
                        &["Always", "IfNotPresent", "Never"],
                    ));
                }
            }
        }
    }
    let rp = s(spec, "/restartPolicy").unwrap_or("Always");
    let allowed: &[&str] = if in_job {
        &["OnFailure", "Never"]
    } else {
        &["Always", "OnFailure", "Never"]
    };
    if !allowed.contains(&rp) {
        out.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            rp,
            allowed,
        ));
    }
    if let Some(d) = s(spec, "/dnsPolicy") {
        let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !ok.contains(&d) {
            out.push(Cause::not_supported(format!("{path}.dnsPolicy"), d, &ok));
        }
    }
    let mut vols: Vec<&str> = claims.to_vec();
    for (i, v) in arr(spec, "/volumes").iter().enumerate() {
        match s(v, "/name") {
            None | Some("") => out.push(Cause::required(format!("{path}.volumes[{i}].name"))),
            Some(n) => {
                if vols.contains(&n) {
                    out.push(Cause::duplicate(format!("{path}.volumes[{i}].name"), n));
                }
                vols.push(n);
            }
        }
    }
    for (i, c) in containers.iter().enumerate() {
        for (j, m) in arr(c, "/volumeMounts").iter().enumerate() {
            let n = s(m, "/name").unwrap_or("");
            if !vols.contains(&n) {
                out.push(Cause {
                    reason: "FieldValueNotFound",
                    field: format!("{path}.containers[{i}].volumeMounts[{j}].name"),
                    message: format!("Not found: \"{n}\""),
                });
            }
        }
    }
}

fn selector_matches_template(o: &Value, sel: &str, labels: &str, out: &mut Vec<Cause>) {
    let Some(selector) = o.pointer(sel) else {
        out.push(Cause::required(
            sel.trim_start_matches('/').replace('/', "."),
        ));
        return;
    };
    let ml = selector.get("matchLabels").and_then(Value::as_object);
    let me = selector.get("matchExpressions").and_then(Value::as_array);
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|m| m.is_empty()) {
        out.push(Cause::invalid(
            sel.trim_start_matches('/').replace('/', "."),
            "null",
            "empty selector is invalid for deployment",
        ));
        return;
    }
    let tl = o.pointer(labels).and_then(Value::as_object);
    let ok = ml
        .into_iter()
        .flatten()
        .all(|(k, v)| tl.and_then(|t| t.get(k)) == Some(v));
    if !ok {
        let tl_str = tl
            .map(|m| {
                let mut v: Vec<String> = m
                    .iter()
                    .map(|(k, x)| format!("{k}:{}", x.as_str().unwrap_or("")))
                    .collect();
                v.sort();
                format!("map[{}]", v.join(" "))
            })
            .unwrap_or_else(|| "map[]".into());
        out.push(Cause::invalid(
            labels.trim_start_matches('/').replace('/', "."),
            &tl_str,
            "`selector` does not match template `labels`",
        ));
    }
}

fn non_negative(o: &Value, ptr: &str, out: &mut Vec<Cause>) {
    if let Some(n) = o.pointer(ptr).and_then(Value::as_i64) {
        if n < 0 {
            out.push(Cause::invalid(
                ptr.trim_start_matches('/').replace('/', "."),
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// Everything wrong with `o` (a create when `old` is None, else an update).
pub fn validate(res: &Resource, o: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = Vec::new();
    meta(res, o, &mut out);
    if let Some(c) = res.custom {
        // A custom object: its schema says what is valid, nothing of built-in kinds.
        if let Some(schema) = &c.schema {
            let errs = crate::crd::values::validate(schema, o);
            let mut rules = Vec::new();
            if c.rules {
                crate::crd::cel::validate(schema, o, old, &errs, &mut rules);
            }
            out.extend(errs);
            out.extend(rules);
        }
        return out;
    }
    match res.kind {
        "CustomResourceDefinition" => crate::crd::definition::validate(o, old, &mut out),
        "CertificateSigningRequest" => crate::certificates::csr::validate(o, old, &mut out),
        "Pod" => {
            match o.get("spec") {
                Some(spec) => pod_spec(spec, "spec", false, &mut out),
                None => out.push(Cause::required("spec")),
            }
            if let Some(old) = old {
                let strip = |v: &Value| {
                    let mut sp = v.get("spec").cloned().unwrap_or(Value::Null);
                    for k in ["containers", "initContainers"] {
                        if let Some(cs) = sp.get_mut(k).and_then(Value::as_array_mut) {
                            for c in cs {
                                if let Some(m) = c.as_object_mut() {
                                    m.remove("image");
                                }
                            }
                        }
                    }
                    if let Some(m) = sp.as_object_mut() {
                        m.remove("activeDeadlineSeconds");
                        m.remove("tolerations");
                        m.remove("terminationGracePeriodSeconds");
                    }
                    sp
                };
                if strip(o) != strip(old) {
                    out.push(Cause {
                        reason: "FieldValueForbidden",
                        field: "spec".into(),
                        message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                    });
                }
            }
        }
        "ReplicationController" => {
            let sel = o.pointer("/spec/selector").and_then(Value::as_object);
            let tl = o
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object);
            match sel {
                None => out.push(Cause::required("spec.selector")),
                Some(m) if m.is_empty() => out.push(Cause::required("spec.selector")),
                Some(m) => {
                    if !m.iter().all(|(k, v)| tl.and_then(|t| t.get(k)) == Some(v)) {
                        out.push(Cause::invalid(
                            "spec.template.metadata.labels",
                            &Value::Object(tl.cloned().unwrap_or_default()).to_string(),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
            non_negative(o, "/spec/replicas", &mut out);
            match o.pointer("/spec/template/spec") {
                Some(spec) => pod_spec(spec, "spec.template.spec", false, &mut out),
                None => out.push(Cause::required("spec.template.spec")),
            }
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            selector_matches_template(
                o,
                "/spec/selector",
                "/spec/template/metadata/labels",
                &mut out,
            );
            non_negative(o, "/spec/replicas", &mut out);
            let claims: Vec<&str> = arr(o, "/spec/volumeClaimTemplates")
                .iter()
                .filter_map(|t| s(t, "/metadata/name"))
                .collect();
            match o.pointer("/spec/template/spec") {
                Some(spec) => pod_spec_with(spec, "spec.template.spec", false, &claims, &mut out),
                None => out.push(Cause::required("spec.template.spec")),
            }
            if let Some(rp) = s(o, "/spec/template/spec/restartPolicy") {
                if rp != "Always" {
                    out.push(Cause::not_supported(
                        "spec.template.spec.restartPolicy",
                        rp,
                        &["Always"],
                    ));
                }
            }
            if res.kind == "Deployment" {
                if let Some(t) = s(o, "/spec/strategy/type") {
                    if !["RollingUpdate", "Recreate"].contains(&t) {
                        out.push(Cause::not_supported(
                            "spec.strategy.type",
                            t,
                            &["Recreate", "RollingUpdate"],
                        ));
                    }
                }
            }
            if let Some(old) = old {
                if o.pointer("/spec/selector") != old.pointer("/spec/selector") {
                    out.push(Cause::immutable("spec.selector"));
                }
            }
        }
        "Job" => {
            match o.pointer("/spec/template/spec") {
                Some(spec) => pod_spec(spec, "spec.template.spec", true, &mut out),
                None => out.push(Cause::required("spec.template.spec")),
            }
            non_negative(o, "/spec/parallelism", &mut out);
            non_negative(o, "/spec/completions", &mut out);
            non_negative(o, "/spec/backoffLimit", &mut out);
            if let Some(old) = old {
                if o.pointer("/spec/template") != old.pointer("/spec/template") {
                    out.push(Cause::immutable("spec.template"));
                }
                if o.pointer("/spec/completions") != old.pointer("/spec/completions") {
                    out.push(Cause::immutable("spec.completions"));
                }
            }
        }
        "PodDisruptionBudget" => {
            let (min, max) = (
                o.pointer("/spec/minAvailable"),
                o.pointer("/spec/maxUnavailable"),
            );
            if min.is_some_and(|v| !v.is_null()) && max.is_some_and(|v| !v.is_null()) {
                out.push(Cause::invalid(
                    "spec",
                    "",
                    "minAvailable and maxUnavailable cannot be both set",
                ));
            }
            for (field, v) in [("spec.minAvailable", min), ("spec.maxUnavailable", max)] {
                match v {
                    Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => out.push(
                        Cause::invalid(field, &n.to_string(), "must be greater than or equal to 0"),
                    ),
                    Some(Value::String(p)) => {
                        let pct = p.strip_suffix('%').and_then(|n| n.parse::<u32>().ok());
                        if pct.is_none_or(|n| n > 100) {
                            out.push(Cause::invalid(
                                field,
                                p,
                                "must be an integer or a percentage between 0% and 100%",
                            ));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(p) = s(o, "/spec/unhealthyPodEvictionPolicy") {
                let ok = ["IfHealthyBudget", "AlwaysAllow"];
                if !ok.contains(&p) {
                    out.push(Cause::not_supported(
                        "spec.unhealthyPodEvictionPolicy",
                        p,
                        &ok,
                    ));
                }
            }
        }
        "PriorityClass" => {
            let name = s(o, "/metadata/name").unwrap_or("");
            let value = o.get("value").and_then(Value::as_i64);
            match value {
                None => out.push(Cause::required("value")),
                Some(v)
                    if v > crate::priority::HIGHEST_USER_PRIORITY
                        && !name.starts_with("system-") =>
                {
                    out.push(Cause::invalid(
                        "value",
                        &v.to_string(),
                        format!(
                            "maximum allowed value of a user defined priority is {}",
                            crate::priority::HIGHEST_USER_PRIORITY
                        ),
                    ))
                }
                _ => {}
            }
            if let Some(p) = s(o, "/preemptionPolicy") {
                let ok = ["PreemptLowerPriority", "Never"];
                if !ok.contains(&p) {
                    out.push(Cause::not_supported("preemptionPolicy", p, &ok));
                }
            }
            if let Some(old) = old {
                if old.get("value") != o.get("value") {
                    out.push(Cause::immutable("value"));
                }
            }
        }
        "NetworkPolicy" => networking::network_policy(o, &mut out),
        "Role" | "ClusterRole" if res.group == "rbac.authorization.k8s.io" => {
            rbac::role(o, res.kind == "ClusterRole", &mut out)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            rbac::binding(o, old, res.kind == "ClusterRoleBinding", &mut out)
        }
        "Ingress" => networking::ingress(o, &mut out),
        "HorizontalPodAutoscaler" => {
            for f in ["kind", "name"] {
                if s(o, &format!("/spec/scaleTargetRef/{f}")).is_none_or(str::is_empty) {
                    out.push(Cause::required(format!("spec.scaleTargetRef.{f}")));
                }
            }
            let min = o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let max = o
                .pointer("/spec/maxReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if min < 1 {
                out.push(Cause::invalid(
                    "spec.minReplicas",
                    &min.to_string(),
                    "must be greater than or equal to 1",
                ));
            }
            if max < min {
                out.push(Cause::invalid(
                    "spec.maxReplicas",
                    &max.to_string(),
                    "must be greater than or equal to `minReplicas`",
                ));
            }
        }
        "CronJob" => {
            let tz = s(o, "/spec/timeZone");
            match s(o, "/spec/schedule") {
                None | Some("") => out.push(Cause::required("spec.schedule")),
                Some(sc) => match berth_cron::Schedule::parse(sc, tz) {
                    Ok(_) => {}
                    Err(e @ berth_cron::Error::TimeZone(_)) => out.push(Cause::invalid(
                        "spec.timeZone",
                        tz.unwrap_or(""),
                        e.to_string(),
                    )),
                    Err(e) => out.push(Cause::invalid("spec.schedule", sc, e.to_string())),
                },
            }
            match o.pointer("/spec/jobTemplate/spec/template/spec") {
                Some(spec) => pod_spec(spec, "spec.jobTemplate.spec.template.spec", true, &mut out),
                None => out.push(Cause::required("spec.jobTemplate.spec.template.spec")),
            }
            if let Some(c) = s(o, "/spec/concurrencyPolicy") {
                let ok = ["Allow", "Forbid", "Replace"];
                if !ok.contains(&c) {
                    out.push(Cause::not_supported("spec.concurrencyPolicy", c, &ok));
                }
            }
        }
        "Service" => {
            let ty = s(o, "/spec/type").unwrap_or("ClusterIP");
            let ok = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
            if !ok.contains(&ty) {
                out.push(Cause::not_supported("spec.type", ty, &ok));
            }
            let ports = arr(o, "/spec/ports");
            if ports.is_empty() && ty != "ExternalName" && s(o, "/spec/clusterIP") != Some("None") {
                out.push(Cause::required("spec.ports"));
            }
            for (i, p) in ports.iter().enumerate() {
                let n = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    out.push(Cause::invalid(
                        format!("spec.ports[{i}].port"),
                        &n.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if ports.len() > 1 && s(p, "/name").is_none_or(str::is_empty) {
                    out.push(Cause::required(format!("spec.ports[{i}].name")));
                }
            }
            if let Some(old) = old {
                let before = s(old, "/spec/clusterIP");
                if before.is_some() && s(o, "/spec/clusterIP") != before {
                    out.push(Cause::immutable("spec.clusterIPs[0]"));
                }
            }
        }
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                for k in o
                    .get(field)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|m| m.keys())
                {
                    if let Some(why) = names::config_key(k) {
                        out.push(Cause::invalid(format!("{field}[{k}]"), k, why));
                    }
                }
            }
            if let Some(old) = old {
                if old.get("immutable") == Some(&Value::Bool(true))
                    && (o.get("data") != old.get("data")
                        || o.get("binaryData") != old.get("binaryData"))
                {
                    out.push(Cause {
                        reason: "FieldValueForbidden",
                        field: "data".into(),
                        message: "Forbidden: field is immutable when `immutable` is set".into(),
                    });
                }
                if res.kind == "Secret" && o.get("type") != old.get("type") {
                    out.push(Cause::immutable("type"));
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployments_need_a_matching_selector_and_valid_containers() {
        let res = crate::resources::find("apps", "v1", "deployments").unwrap();
        let d = json!({
            "metadata": {"name": "Web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "other"}},
                                  "spec": {"containers": [{"name": "c"}]}}}
        });
        let causes = validate(res, &d, None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"metadata.name"), "{fields:?}");
        assert!(
            fields.contains(&"spec.template.metadata.labels"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.template.spec.containers[0].image"),
            "{fields:?}"
        );
    }

    #[test]
    fn cron_schedules_and_time_zones_name_the_field() {
        let res = crate::resources::find("batch", "v1", "cronjobs").unwrap();
        let cj = |schedule: &str, tz: Option<&str>| {
            let mut o = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
                "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}});
            if let Some(tz) = tz {
                o["spec"]["timeZone"] = json!(tz);
            }
            validate(res, &o, None)
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert!(cj("*/5 * * * *", None).is_empty());
        assert!(cj("@hourly", Some("Europe/Paris")).is_empty());
        assert_eq!(
            cj("every minute", None),
            ["spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields (minute hour day-of-month month day-of-week), found 2: \"every minute\""]
        );
        assert_eq!(
            cj("* * * * *", Some("Mars/Olympus")),
            ["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]
        );
    }
}
