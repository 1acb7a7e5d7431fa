//! Request dispatch: what a path names (discovery, OpenAPI, health, a resource, an
//! object, a subresource), who may ask, and the answer's encoding (JSON, YAML, Table).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::authz::Attributes;
use crate::request::{Body, Request, Response};
use crate::resources::{self, Backing, Resource};
use crate::status::ApiError;
use crate::{discovery, hpa_v1, objects, openapi, resource_metrics};

pub use crate::state::Api;

/// What a path names.
#[derive(Debug)]
pub enum Target<'a> {
    /// A non-resource path (/version, /healthz, discovery, OpenAPI...).
    Other,
    /// A resource collection, object or subresource.
    Resource {
        /// The resource.
        res: &'static Resource,
        /// The namespace in the path.
        ns: Option<&'a str>,
        /// The object's name.
        name: Option<&'a str>,
        /// The subresource.
        sub: Option<&'a str>,
    },
}

/// Parses a resource path: /api/v1/... or /apis/GROUP/VERSION/...
pub fn parse_path(path: &str) -> Result<Target<'_>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(Target::Other),
    };
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, more @ ..] if !matches!(*plural, "status" | "finalize") => (
            Some(*ns),
            std::iter::once(*plural)
                .chain(more.iter().copied())
                .collect::<Vec<_>>(),
        ),
        other => (None, other.to_vec()),
    };
    let res = resources::find(group, version, rest[0]).ok_or_else(not_found)?;
    if ns.is_some() && !res.namespaced {
        return Err(not_found());
    }
    let name = rest.get(1).copied();
    let sub = rest.get(2).copied();
    if rest.len() > 3 && !matches!(sub, Some("proxy")) {
        return Err(not_found());
    }
    if let Some(s) = sub {
        if !res.subresources.contains(&s) {
            return Err(not_found());
        }
    }
    if name == Some("") {
        return Err(not_found());
    }
    Ok(Target::Resource { res, ns, name, sub })
}

fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/healthz/" | "/livez/" | "/readyz/" | "/cacerts"
    ) || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
        || path.starts_with("/healthz/")
}

impl Api {
    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, mut req: Request) -> Response {
        let start = Instant::now();
        if let Some(asker) = req.user.take() {
            match crate::authz::impersonate::resolve(&self.authz, asker, &req.path, &req.headers) {
                Ok(u) => req.user = Some(u),
                Err(e) => return Response::error(&e),
            }
        }
        // Parsed once: metrics, authorization and dispatch all read it.
        let target = parse_path(&req.path);
        let (verb, resource) = describe(&req, &target);
        let resp = match self.dispatch(&req, verb, target).await {
            Ok(r) => r,
            Err(e) => {
                if e.code >= 500 {
                    tracing::warn!(method = %req.method, path = %req.path, code = e.code, "{}", e.message);
                }
                Response::error(&e)
            }
        };
        // A watch's latency is its lifetime, not a request's: recorded as zero.
        let took = match resp.body {
            Body::Stream(_) => std::time::Duration::ZERO,
            Body::Full(_) => start.elapsed(),
        };
        self.metrics.observe(verb, &resource, resp.status, took);
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: &Request,
        verb: &'static str,
        target: Result<Target<'_>, ApiError>,
    ) -> Result<Response, ApiError> {
        if !is_public(&req.path) {
            let Some(user) = &req.user else {
                return Err(ApiError::unauthorized());
            };
            let target = match &target {
                Ok(t) => t,
                Err(e) => return Err(e.clone()),
            };
            self.authz
                .check(&Attributes::of(user, req, verb, target))
                .inspect_err(|e| {
                    // A component refused is a gap in its default role: worth a line.
                    let component = user.name.starts_with("system:serviceaccount:kube-system:")
                        || (user.name.starts_with("system:")
                            && !user.name.starts_with("system:serviceaccount:")
                            && user.name != crate::request::ANONYMOUS);
                    if component {
                        tracing::warn!(user = %user.name, "{}", e.message);
                    }
                })?;
            crate::authz::restriction::admit(&self.hub, user, req, verb, target)?;
        }
        match target? {
            Target::Resource { res, ns, name, sub } => {
                if res.namespaced && ns.is_none() && !(req.method == Method::GET && name.is_none())
                {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        format!(
                            "{} are namespaced: use /namespaces/NAMESPACE/{}",
                            res.plural, res.plural
                        ),
                    ));
                }
                match res.backing {
                    Backing::NodeMetrics => {
                        resource_metrics::handle(self, req, res, ns, name).await
                    }
                    Backing::Converted if res.custom.is_some() => {
                        crate::crd::versions::handle(self, req, res, ns, name, sub).await
                    }
                    Backing::Converted => hpa_v1::handle(self, req, res, ns, name, sub).await,
                    Backing::Store | Backing::Review => {
                        objects::handle(self, req, res, ns, name, sub).await
                    }
                }
            }
            Target::Other => self.non_resource(req).await,
        }
    }

    async fn non_resource(&self, req: &Request) -> Result<Response, ApiError> {
        if req.method != Method::GET && req.method != Method::HEAD {
            return Err(ApiError::method_not_allowed(format!(
                "{} is not supported on {}",
                req.method, req.path
            )));
        }
        let path = req.path.trim_end_matches('/');
        let accept = req.header("accept").unwrap_or("");
        let aggregated = accept
            .split(',')
            .next()
            .is_some_and(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2"));
        let not_found = || {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        };
        match path {
            "/healthz" | "/livez" | "/readyz" => {
                if path == "/readyz" && !self.ready.load(std::sync::atomic::Ordering::Acquire) {
                    return Ok(Response::bytes(
                        500,
                        "text/plain; charset=utf-8",
                        "[-]startup not finished\nreadyz check failed",
                    ));
                }
                if path != "/livez" {
                    use berth_store::Store;
                    if let Err(e) = self.store.revision().await {
                        return Ok(Response::bytes(
                            500,
                            "text/plain; charset=utf-8",
                            format!("[-]etcd failed: {e}\n{} check failed", &path[1..]),
                        ));
                    }
                }
                Ok(Response::bytes(200, "text/plain; charset=utf-8", "ok"))
            }
            "/version" => Ok(Response::json(200, &crate::version::version_info())),
            berth_join::SERVER_BOOTSTRAP_PATH => match &self.server_bootstrap {
                Some(b) => Ok(Response::json(200, &serde_json::to_value(b).unwrap_or_default())),
                None => Err(ApiError::new(
                    409,
                    "Conflict",
                    "this server keeps its state in SQLite, which one server alone may use: to run several servers, start them all on etcd (--datastore-endpoint)",
                )),
            },
            // The CA bundle, to anyone (as k3s serves it): a joining node checks it
            // against its join token's hash before trusting it.
            "/cacerts" => Ok(Response::bytes(
                200,
                "text/plain; charset=utf-8",
                self.ca_bundle.clone(),
            )),
            "/metrics" => Ok(Response::bytes(
                200,
                "text/plain; version=0.0.4",
                self.metrics.render(self.hub.watchers()),
            )),
            "/api" if aggregated => Ok(aggregated_response(req, discovery::aggregated(true))),
            "/apis" if aggregated => Ok(aggregated_response(req, discovery::aggregated(false))),
            "/api" => Ok(Response::json(
                200,
                &discovery::core_versions(&self.address),
            )),
            "/apis" => Ok(Response::json(200, &discovery::group_list())),
            // kubectl asks for the protobuf form only (and fails on JSON).
            "/openapi/v2"
                if req
                    .header("accept")
                    .is_some_and(|a| a.contains(OPENAPI_V2_PROTOBUF)) =>
            {
                // kube-openapi's answer type (the "@" form is only asked for).
                Ok(Response::bytes(
                    200,
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    openapi_v2_protobuf().clone(),
                ))
            }
            "/openapi/v2" => {
                let doc = openapi_v2();
                Ok(Response::bytes(200, "application/json", doc.clone()))
            }
            "/openapi/v3" => Ok(Response::json(
                200,
                &openapi::v3_index(|g, v| openapi_v3(g, v).1),
            )),
            p if p.starts_with("/openapi/v3/") => {
                let rest = &p["/openapi/v3/".len()..];
                let (g, v) = match rest.split('/').collect::<Vec<_>>().as_slice() {
                    ["api", v] => ("", *v),
                    ["apis", g, v] => (*g, *v),
                    _ => return Err(not_found()),
                };
                if resources::of(g, v).next().is_none() {
                    return Err(not_found());
                }
                let (doc, _) = openapi_v3(g, v);
                Ok(Response::bytes(200, "application/json", doc)
                    .with("cache-control", "public, immutable"))
            }
            p => {
                let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
                match segs.as_slice() {
                    ["api", v] => discovery::resource_list("", v)
                        .map(|d| Response::json(200, &d))
                        .ok_or_else(not_found),
                    ["apis", g] => discovery::group(g)
                        .map(|d| Response::json(200, &d))
                        .ok_or_else(not_found),
                    ["apis", g, v] => discovery::resource_list(g, v)
                        .map(|d| Response::json(200, &d))
                        .ok_or_else(not_found),
                    _ => Err(not_found()),
                }
            }
        }
    }
}

/// The kube verb and resource of a request, for metrics and authorization.
fn describe(req: &Request, target: &Result<Target<'_>, ApiError>) -> (&'static str, String) {
    match target {
        Ok(Target::Resource { res, name, sub, .. }) => {
            let watch = matches!(req.q("watch"), Some("true" | "1"));
            let verb = match (&req.method, name.is_some()) {
                (&Method::GET, false) if watch => "watch",
                (&Method::GET | &Method::HEAD, false) => "list",
                (&Method::GET | &Method::HEAD, true) => "get",
                (&Method::POST, _) => "create",
                (&Method::PUT, _) => "update",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, false) => "deletecollection",
                (&Method::DELETE, true) => "delete",
                _ => "other",
            };
            let r = match sub {
                Some(s) => format!("{}/{s}", res.plural),
                None => res.plural.to_string(),
            };
            (verb, r)
        }
        _ => ("get", String::new()),
    }
}

fn aggregated_response(req: &Request, doc: Value) -> Response {
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let tag = discovery::etag(&body);
    if req.header("if-none-match") == Some(tag.as_str()) {
        // No content type: caches merge a 304's headers into the stored response.
        return Response {
            status: 304,
            headers: vec![("etag".into(), tag)],
            body: Body::Full(Bytes::new()),
        };
    }
    Response::bytes(
        200,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        body,
    )
    .with("etag", tag)
    .with("vary", "Accept")
}

/// The media type of the OpenAPI v2 document's protobuf form.
const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2";

fn openapi_v2_protobuf() -> &'static Bytes {
    static DOC: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    DOC.get_or_init(|| Bytes::from(crate::openapi_pb::document(&openapi::v2_document())))
}

fn openapi_v2() -> &'static Bytes {
    static DOC: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    DOC.get_or_init(|| Bytes::from(serde_json::to_vec(&openapi::v2_document()).unwrap_or_default()))
}

fn openapi_v3(group: &str, version: &str) -> (Bytes, String) {
    static DOCS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, (Bytes, String)>>,
    > = std::sync::OnceLock::new();
    // A custom group-version's document changes with its definitions: made afresh.
    if resources::of(group, version).any(|r| r.custom.is_some()) {
        let doc = openapi::v3_document(group, version).unwrap_or(json!({}));
        let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        let hash = discovery::etag(&body).trim_matches('"').to_string();
        return (body, hash);
    }
    let key = format!("{group}/{version}");
    let docs = DOCS.get_or_init(Default::default);
    if let Some(d) = docs.lock().unwrap().get(&key) {
        return d.clone();
    }
    let doc = openapi::v3_document(group, version).unwrap_or(json!({}));
    let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let hash = discovery::etag(&body).trim_matches('"').to_string();
    docs.lock()
        .unwrap()
        .insert(key, (body.clone(), hash.clone()));
    (body, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        match parse_path("/api/v1/namespaces/default/pods/web/status").unwrap() {
            Target::Resource { res, ns, name, sub } => {
                assert_eq!(
                    (res.plural, ns, name, sub),
                    ("pods", Some("default"), Some("web"), Some("status"))
                );
            }
            t => panic!("{t:?}"),
        }
        match parse_path("/api/v1/namespaces/kube-system").unwrap() {
            Target::Resource { res, ns, name, .. } => {
                assert_eq!(
                    (res.plural, ns, name),
                    ("namespaces", None, Some("kube-system"))
                );
            }
            t => panic!("{t:?}"),
        }
        match parse_path("/apis/apps/v1/deployments").unwrap() {
            Target::Resource { res, ns, name, .. } => {
                assert_eq!((res.plural, ns, name), ("deployments", None, None))
            }
            t => panic!("{t:?}"),
        }
        assert!(parse_path("/api/v1/namespaces/x/nodes").is_err());
        assert!(parse_path("/apis/apps/v1/widgets").is_err());
        assert!(matches!(
            parse_path("/apis/apps/v1").unwrap(),
            Target::Other
        ));
    }
}
