//! Object operations with kube-apiserver's semantics, one module per step of the
//! request path, read top-down from [`handle`]:
//!
//! - [`body`]: what a write request carries (options, the object) and how answers
//!   are encoded;
//! - [`read`]: get and list;
//! - [`create`], [`write`] (update, the step every change goes through),
//!   [`patching`] (patch and apply), [`scale`];
//! - [`delete`]: deletion, with finalizers and graceful pod deletion;
//! - [`actions`]: subresources that act rather than store (binding, token, reviews),
//!   and [`eviction`] (the eviction subresource, spending disruption budgets);
//! - [`strategy`]: what each kind does beyond the generic rules, chosen by the
//!   resource table (`resources::Strategy`), with [`service_ips`] for Services;
//! - [`meta`]: metadata helpers every step shares.
//!
//! Work that follows a request (dependents collected, namespaces emptied, leaked
//! Service IPs freed) is done by level-triggered loops, not by tasks spawned here:
//! the garbage collector and namespace controller of `berth_controllers`, and
//! `crate::repair`.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use crate::request::{Request, Response};
use crate::resources::Resource;
use crate::state::Api;
use crate::status::ApiError;

mod actions;
mod body;
mod create;
mod delete;
mod delete_opts;
mod eviction;
pub(crate) mod meta;
mod patching;
mod read;
mod scale;
mod service_ips;
mod strategy;
mod write;

pub use create::{create_internal, populate_all};
pub use delete::delete;
pub use delete_opts::DeleteOpts;
pub use meta::now;
pub use read::read;
pub use write::replace_internal;

pub(crate) use body::parse_body;
pub(crate) use patching::retry_on_conflict;

/// Dispatches an operation on a resource kept in the store in its own version (or a
/// create-only review).
pub async fn handle(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    if !res.stored() {
        return match (&req.method, name) {
            (&Method::POST, None) if res.group == "authorization.k8s.io" => {
                let user = req.user.as_ref().ok_or_else(ApiError::unauthorized)?;
                let out = crate::authz::reviews::answer(
                    &api.authz,
                    user,
                    res,
                    ns,
                    actions::review_body(req, res),
                )?;
                Ok(Response::json(201, &out))
            }
            (&Method::POST, None) => actions::review(req, res),
            _ => Err(ApiError::method_not_allowed(format!(
                "{} only supports create",
                res.plural
            ))),
        };
    }
    let watch = matches!(req.q("watch"), Some("true" | "1"));
    match (&req.method, name, sub) {
        (&Method::GET, None, None) if watch => crate::watchapi::serve(api, req, res, ns).await,
        (&Method::GET, None, None) => read::list(api, req, res, ns).await,
        (&Method::GET, Some(n), None | Some("status") | Some("approval")) => {
            let (o, _) = read::read(api, res, ns, n).await?;
            Ok(body::answer(req, res, 200, &o))
        }
        (&Method::GET, Some(n), Some("scale")) => {
            let (o, _) = read::read(api, res, ns, n).await?;
            Ok(Response::json(200, &scale::to_scale(res, &o)))
        }
        (&Method::POST, None, None) => create::create(api, req, res, ns).await,
        (&Method::PUT, Some(n), None | Some("status") | Some("finalize") | Some("approval")) => {
            write::update(api, req, res, ns, n, sub).await
        }
        (&Method::PUT, Some(n), Some("scale")) => {
            scale::scale_update(api, req, res, ns, n, None).await
        }
        (&Method::PATCH, Some(n), None | Some("status") | Some("approval")) => {
            patching::patch(api, req, res, ns, n, sub).await
        }
        (&Method::PATCH, Some(n), Some("scale")) => {
            let p = body::parse_patch_body(req)?;
            scale::scale_update(api, req, res, ns, n, Some(p)).await
        }
        (&Method::DELETE, Some(n), None) => {
            let opts = delete_opts::delete_opts(req)?;
            let out = delete::delete(api, res, ns, n, &opts).await?;
            Ok(body::answer(req, res, 200, &out))
        }
        (&Method::DELETE, None, None) => delete::delete_collection(api, req, res, ns).await,
        (&Method::POST, Some(n), Some("binding")) => actions::bind(api, req, ns, n).await,
        (&Method::POST, Some(n), Some("eviction")) => eviction::evict(api, req, ns, n).await,
        (&Method::POST, Some(n), Some("token")) => actions::token(api, req, ns, n).await,
        (
            _,
            Some(n),
            Some(s @ ("log" | "exec" | "attach" | "portforward" | "proxy" | "ephemeralcontainers")),
        ) => {
            // log, exec, attach and portforward are proxied to the node agent before
            // dispatch (see nodeproxy); what reaches here is not served yet.
            read::read(api, res, ns, n).await?;
            Err(ApiError::method_not_allowed(format!(
                "{}/{s} of \"{n}\" is not supported by berth's API server yet",
                res.plural
            )))
        }
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m} {})",
            req.path
        ))),
    }
}

/// Body bytes of a JSON value (for tests and internal callers).
pub fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}
