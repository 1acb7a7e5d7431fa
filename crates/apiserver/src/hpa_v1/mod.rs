//! autoscaling/v1 HorizontalPodAutoscalers, served by converting to and from the
//! autoscaling/v2 form they are stored in (see `convert`), as kube-apiserver serves
//! one kind at several versions: each v1 request is made of the stored version and
//! its answer converted back, watches event by event. `kubectl autoscale` (1.32)
//! creates its autoscalers this way. Server-side apply of the v1 form is refused
//! (415) with a pointer to the v2 form.

mod convert;

pub use convert::{to_v1, to_v2, CONDITIONS_ANNOTATION};

use std::sync::Arc;

use convert::{KIND, V1, V2};
use http::Method;
use serde_json::{json, Value};

use crate::request::{Request, Response};
use crate::resources::{self, Resource};
use crate::state::Api;
use crate::status::ApiError;

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

fn forwarded(req: &Request, body: Option<&Value>) -> Request {
    crate::converted::forwarded(req, "/autoscaling/v1/", "/autoscaling/v2/", body)
}

fn parse(req: &Request, res: &Resource) -> Result<Value, ApiError> {
    let v = crate::objects::parse_body(req)?;
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
    let v2 = resources::storage_of(res);
    let r = match (&req.method, name) {
        (&Method::POST, None) => {
            let body = to_v2(&parse(req, res)?, None);
            crate::objects::handle(api, &forwarded(req, Some(&body)), v2, ns, None, sub).await?
        }
        (&Method::PUT, Some(n)) => {
            let v1 = parse(req, res)?;
            let (cur, _) = crate::objects::read(api, v2, ns, n).await?;
            let body = to_v2(&v1, Some(&cur));
            crate::objects::handle(api, &forwarded(req, Some(&body)), v2, ns, name, sub).await?
        }
        (&Method::PATCH, Some(n)) => patch(api, req, v2, ns, n, sub).await?,
        _ => crate::objects::handle(api, &forwarded(req, None), v2, ns, name, sub).await?,
    };
    let r = crate::converted::map_answer(r, std::sync::Arc::new(convert_out));
    Ok(crate::converted::yaml_if_asked(req, r))
}

/// A patch of the v1 form: applied to the v1 form of the stored object, which is then
/// written back (retried on a conflict unless the patch names a resourceVersion).
async fn patch(
    api: &Arc<Api>,
    req: &Request,
    v2: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let ct = req.media_type();
    if ct == "application/apply-patch+yaml" {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "server-side apply of autoscaling/v1 HorizontalPodAutoscalers is not supported by berth: apply the autoscaling/v2 form",
        ));
    }
    let format = crate::patch::Format::of(ct)?;
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let pinned = body.pointer("/metadata/resourceVersion").is_some();
    crate::objects::retry_on_conflict(pinned, || async {
        let (cur, _) = crate::objects::read(api, v2, ns, name).await?;
        let mut doc = to_v1(&cur);
        format.apply(&mut doc, &body, KIND)?;
        let stored_form = to_v2(&doc, Some(&cur));
        let mut put = forwarded(req, Some(&stored_form));
        put.method = Method::PUT;
        crate::objects::handle(api, &put, v2, ns, Some(name), sub).await
    })
    .await
}
