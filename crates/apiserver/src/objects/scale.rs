//! The scale subresource: an autoscaling/v1 Scale view of replicas, read, replaced
//! and patched.

use std::sync::Arc;

use serde_json::{json, Value};

use super::body::{parse_body, write_opts};
use super::meta::{meta_mut, meta_str};
use super::read::read;
use super::write::replace;
use crate::api::Api;
use crate::patch;
use crate::request::{Request, Response};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

pub(super) fn to_scale(o: &Value) -> Value {
    // A ReplicationController's selector is the label map itself.
    let sel = o
        .pointer("/spec/selector/matchLabels")
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
        .unwrap_or_default();
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
        "spec": {"replicas": o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": o.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": sel},
    })
}

pub(super) async fn scale_update(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    patch_body: Option<Value>,
) -> Result<Response, ApiError> {
    let opts = write_opts(req, "unknown")?;
    for attempt in 0.. {
        let (cur, rev) = read(api, res, ns, name).await?;
        let mut scale = to_scale(&cur);
        match &patch_body {
            None => scale = parse_body(req)?,
            Some(p) => {
                let ct = req.header("content-type").unwrap_or("");
                let r = if ct.starts_with("application/json-patch") {
                    patch::json_patch(&mut scale, p)
                } else if ct.starts_with("application/merge-patch")
                    || ct.starts_with("application/apply-patch")
                {
                    patch::merge_patch(&mut scale, p)
                } else {
                    patch::strategic(&mut scale, p, "Scale")
                };
                r.map_err(|e| ApiError::new(422, "Invalid", e.0))?;
            }
        }
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
        let pinned = patch_body.is_none()
            && scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|r| !r.is_empty());
        if pinned
            && scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                != Some(&rev.to_string())
        {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
        let mut new = cur.clone();
        new["spec"]["replicas"] = json!(replicas);
        meta_mut(&mut new).remove("resourceVersion");
        match replace(
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
        {
            Err(e) if e.reason == "Conflict" && !pinned && attempt < 5 => continue,
            Err(e) => return Err(e),
            Ok(o) => return Ok(Response::json(200, &to_scale(&o))),
        }
    }
    unreachable!()
}
