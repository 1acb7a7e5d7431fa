//! A custom resource's served versions other than its storage version: with
//! conversion strategy None (the only one berth serves) objects differ between
//! versions only in their apiVersion, so a request is made of the storage version
//! with the apiVersion in its body rewritten, and its answer rewritten back.

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};

use crate::converted::{forwarded, map_answer, yaml_if_asked};
use crate::request::{Request, Response};
use crate::resources::{self, Resource};
use crate::state::Api;
use crate::status::ApiError;

/// Rewrites every object of kind `kind` in an answer (object, list, watch event)
/// whose apiVersion is of `group` (any version: the storage version's, or an older
/// one an object was written in) to apiVersion `to`.
fn rewrite(v: &mut Value, kind: &str, list_kind: &str, group: &str, to: &str) {
    let k = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let of_group = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|av| av.split_once('/'))
        .is_some_and(|(g, _)| g == group);
    if (k == kind || k == list_kind) && of_group {
        v["apiVersion"] = json!(to);
    }
    if k == list_kind {
        for i in v
            .get_mut("items")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            rewrite(i, kind, list_kind, group, to);
        }
    }
    if v.get("type").is_some() {
        if let Some(o) = v.get_mut("object") {
            rewrite(o, kind, list_kind, group, to);
        }
    }
}

/// Serves a request of `res`, a served version that is not the storage version.
pub async fn handle(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let stored = resources::storage_of(res);
    let (from_seg, to_seg) = (
        format!("/{}/{}/", res.group, res.version),
        format!("/{}/{}/", stored.group, stored.version),
    );
    let (served_av, stored_av) = (res.api_version(), stored.api_version());
    // A Scale (autoscaling/v1) is the same at every version: passed as it is.
    let scale = sub == Some("scale");
    let body = match (&req.method, req.media_type()) {
        _ if scale => None,
        (&Method::POST | &Method::PUT, _) | (&Method::PATCH, "application/apply-patch+yaml") => {
            let mut v: Value = if req.method == Method::PATCH {
                serde_yaml::from_slice(&req.body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                crate::objects::parse_body(req)?
            };
            match v.get("apiVersion").and_then(Value::as_str) {
                None | Some("") => {}
                Some(av) if av == served_av => v["apiVersion"] = json!(stored_av),
                Some(av) => {
                    return Err(ApiError::bad_request(format!(
                        "the API version in the data ({av}) does not match the expected API version ({served_av})"
                    )))
                }
            }
            Some(v)
        }
        _ => None,
    };
    let r = crate::objects::handle(
        api,
        &forwarded(req, &from_seg, &to_seg, body.as_ref()),
        stored,
        ns,
        name,
        sub,
    )
    .await?;
    let (kind, list_kind, group) = (res.kind.to_string(), res.list_kind(), res.group.to_string());
    let r = map_answer(
        r,
        Arc::new(move |v: &mut Value| rewrite(v, &kind, &list_kind, &group, &served_av)),
    );
    Ok(yaml_if_asked(req, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_served_version() {
        let mut list = json!({"kind": "CronTabList", "apiVersion": "x.io/v1",
                              "items": [{"kind": "CronTab", "apiVersion": "x.io/v1"}]});
        rewrite(&mut list, "CronTab", "CronTabList", "x.io", "x.io/v2");
        assert_eq!(list["apiVersion"], "x.io/v2");
        assert_eq!(list["items"][0]["apiVersion"], "x.io/v2");
        let mut ev =
            json!({"type": "ADDED", "object": {"kind": "CronTab", "apiVersion": "x.io/v1"}});
        rewrite(&mut ev, "CronTab", "CronTabList", "x.io", "x.io/v2");
        assert_eq!(ev["object"]["apiVersion"], "x.io/v2");
        let mut status = json!({"kind": "Status", "apiVersion": "v1"});
        rewrite(&mut status, "CronTab", "CronTabList", "x.io", "x.io/v2");
        assert_eq!(status["apiVersion"], "v1");
    }
}
