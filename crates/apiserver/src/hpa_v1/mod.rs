//! autoscaling/v1 HorizontalPodAutoscalers, served by converting to and from the
//! autoscaling/v2 form they are stored in (see `convert`), as kube-apiserver serves
//! one kind at several versions: each v1 request is made of the stored version and
//! its answer converted back, watches event by event. `kubectl autoscale` (1.32)
//! creates its autoscalers this way. Server-side apply of the v1 form is refused
//! (415) with a pointer to the v2 form.

mod convert;

pub use convert::{to_v1, to_v2, CONDITIONS_ANNOTATION};

use std::sync::Arc;

use bytes::Bytes;
use convert::{KIND, V1, V2};
use http::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::request::{Body, Request, Response};
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
        Body::Stream(mut rx) if json => {
            // A watch: each event line converted as it comes (the hub sends whole
            // lines, several to a chunk). It ends with the client, so that the watch
            // it converts ends too.
            let (tx, out) = mpsc::channel::<Bytes>(16);
            tokio::spawn(async move {
                loop {
                    let chunk = tokio::select! {
                        c = rx.recv() => match c {
                            Some(c) => c,
                            None => return,
                        },
                        _ = tx.closed() => return,
                    };
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

/// The request as made of the stored version, with `body` converted (or, None, the
/// request's own body: DeleteOptions and the like need no conversion).
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
        body: match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).unwrap_or_default()),
            None => req.body.clone(),
        },
        user: req.user.clone(),
    }
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
    let yaml = req
        .header("accept")
        .is_some_and(|a| a.starts_with("application/yaml"));
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
    let mut r = answer_v1(r);
    if yaml {
        if let Body::Full(b) = &r.body {
            if let Ok(v) = serde_json::from_slice::<Value>(b) {
                r.body = Body::Full(Bytes::from(serde_yaml::to_string(&v).unwrap_or_default()));
                r.headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                r.headers
                    .push(("content-type".into(), "application/yaml".into()));
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
