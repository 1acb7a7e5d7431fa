//! The scale subresource: an autoscaling/v1 Scale view of replicas, read, replaced
//! and patched.

use std::sync::Arc;

use serde_json::{json, Value};

use super::body::{parse_body, write_opts};
use super::meta::{meta_mut, meta_str};
use super::patching::retry_on_conflict;
use super::read::read;
use super::write::replace;
use crate::crd::custom::{get_path, set_path};
use crate::patch;
use crate::request::{Request, Response};
use crate::resources::Resource;
use crate::state::Api;
use crate::status::{ApiError, Cause};

pub(super) fn to_scale(res: &Resource, o: &Value) -> Value {
    let (spec_replicas, status_replicas, sel) = match res.custom.and_then(|c| c.scale.as_ref()) {
        // A custom resource says where its replicas and selector are.
        Some(p) => (
            get_path(o, &p.spec_replicas).and_then(Value::as_i64),
            get_path(o, &p.status_replicas).and_then(Value::as_i64),
            p.label_selector
                .as_deref()
                .and_then(|l| get_path(o, l))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        None => (
            o.pointer("/spec/replicas").and_then(Value::as_i64),
            o.pointer("/status/replicas").and_then(Value::as_i64),
            builtin_selector(o),
        ),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(o, "name"),
            "namespace": meta_str(o, "namespace"),
            "uid": meta_str(o, "uid"),
            "resourceVersion": meta_str(o, "resourceVersion"),
            "creationTimestamp": meta_str(o, "creationTimestamp"),
        },
        "spec": {"replicas": spec_replicas.unwrap_or(0)},
        "status": {"replicas": status_replicas.unwrap_or(0), "selector": sel},
    })
}

/// The selector of a built-in kind with a scale subresource, in its string form.
fn builtin_selector(o: &Value) -> String {
    // A ReplicationController's selector is the label map itself.
    o.pointer("/spec/selector/matchLabels")
        .or_else(|| {
            o.pointer("/spec/selector")
                .filter(|s| s.get("matchExpressions").is_none())
        })
        .and_then(Value::as_object)
        .map(|m| {
            let mut v: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                .collect();
            v.sort();
            v.join(",")
        })
        .unwrap_or_default()
}

/// A PUT (`patch_body` None) or PATCH of the scale subresource: the Scale's replicas
/// written to the object (retried on a conflict unless a PUT pins a resourceVersion).
pub(super) async fn scale_update(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    patch_body: Option<Value>,
) -> Result<Response, ApiError> {
    let opts = write_opts(req, "unknown")?;
    let put = match &patch_body {
        None => Some(parse_body(req)?),
        Some(_) => None,
    };
    // Server-side apply of a Scale has no managed fields of its own: a merge.
    let format = match req.media_type() {
        "application/apply-patch+yaml" => patch::Format::Merge,
        ct => patch::Format::of(ct).unwrap_or(patch::Format::Strategic),
    };
    let pinned_rv = put
        .as_ref()
        .and_then(|s| s.pointer("/metadata/resourceVersion"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let o = retry_on_conflict(pinned_rv.is_some(), || async {
        let (cur, rev) = read(api, res, ns, name).await?;
        let scale = match (&put, &patch_body) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => {
                let mut scale = to_scale(res, &cur);
                format.apply(&mut scale, p, "Scale")?;
                scale
            }
            (None, None) => unreachable!("a PUT has its body"),
        };
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &replicas.to_string(),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        if pinned_rv.is_some_and(|want| want != rev.to_string()) {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
        let mut new = cur.clone();
        match res.custom.and_then(|c| c.scale.as_ref()) {
            Some(p) => {
                if !set_path(&mut new, &p.spec_replicas, json!(replicas)) {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "{} of \"{name}\" cannot hold replicas at {}",
                            res.qualified(),
                            p.spec_replicas
                        ),
                    ));
                }
            }
            None => new["spec"]["replicas"] = json!(replicas),
        }
        meta_mut(&mut new).remove("resourceVersion");
        replace(
            api,
            res,
            ns,
            name,
            &cur,
            rev,
            new,
            Some("scale"),
            &opts,
            None,
        )
        .await
    })
    .await?;
    Ok(Response::json(200, &to_scale(res, &o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_view_carries_replicas_and_a_sorted_selector() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u",
                                    "resourceVersion": "9"},
                       "spec": {"replicas": 3, "selector": {"matchLabels": {"tier": "b", "app": "a"}}},
                       "status": {"replicas": 2}});
        let deployments = crate::resources::find("apps", "v1", "deployments").unwrap();
        let s = to_scale(deployments, &d);
        assert_eq!(s["kind"], "Scale");
        assert_eq!(s["metadata"]["resourceVersion"], "9");
        assert_eq!(
            (
                s["spec"]["replicas"].as_i64(),
                s["status"]["replicas"].as_i64()
            ),
            (Some(3), Some(2))
        );
        assert_eq!(s["status"]["selector"], "app=a,tier=b");
        // A ReplicationController's selector is the label map itself.
        let rc =
            json!({"metadata": {"name": "rc"}, "spec": {"replicas": 1, "selector": {"app": "a"}}});
        assert_eq!(to_scale(deployments, &rc)["status"]["selector"], "app=a");
        // Expressions have no string form in a Scale: left empty.
        let expr = json!({"metadata": {"name": "x"}, "spec": {"selector": {"matchExpressions": [
            {"key": "app", "operator": "Exists"}]}}});
        assert_eq!(to_scale(deployments, &expr)["status"]["selector"], "");
    }
}
