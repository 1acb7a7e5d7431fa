//! Serving one kind at a version other than the one it is stored in: a request is
//! made again of the stored version (its path and body converted), and its answer
//! converted back — whole bodies and watch streams event by event. Shared by
//! autoscaling/v1 HorizontalPodAutoscalers (`hpa_v1`) and custom resources' other
//! served versions (`crd::versions`).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::request::{Body, Request, Response};

/// Converts one JSON value of an answer (an object, a list, a watch event) in place.
pub type ConvertOut = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// The answer `r` with each of its JSON values converted by `convert`; anything not
/// JSON (YAML is made afterwards, see [`yaml_if_asked`]) left as it was.
pub fn map_answer(r: Response, convert: ConvertOut) -> Response {
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
                convert(&mut v);
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
                                convert(&mut v);
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

/// The request as made of the stored version: its path's `from` segment (`/v1/`
/// after the group) replaced by `to`, with `body` converted (or, None, the request's
/// own body: DeleteOptions and the like need no conversion). Answers come as JSON,
/// to be converted; YAML is made at the end.
pub fn forwarded(req: &Request, from: &str, to: &str, body: Option<&Value>) -> Request {
    let mut headers = req.headers.clone();
    let accept = req.header("accept").unwrap_or("");
    if !accept.contains("as=Table") && !accept.contains("as=PartialObjectMetadata") {
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
    }
    if body.is_some() && !req.media_type().starts_with("application/apply-patch") {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    Request {
        method: req.method.clone(),
        path: req.path.replacen(from, to, 1),
        query: req.query.clone(),
        headers,
        body: match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).unwrap_or_default()),
            None => req.body.clone(),
        },
        user: req.user.clone(),
    }
}

/// The answer as YAML when the request asked for YAML.
pub fn yaml_if_asked(req: &Request, mut r: Response) -> Response {
    let yaml = req
        .header("accept")
        .is_some_and(|a| a.starts_with("application/yaml"));
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
    r
}
