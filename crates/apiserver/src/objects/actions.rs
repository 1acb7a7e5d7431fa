//! Subresources and resources that act rather than store: pods/binding,
//! serviceaccounts/token, and create-only reviews (SelfSubjectReview).

use std::sync::Arc;

use berth_store::{Error as StoreError, Store};
use serde_json::{json, Map, Value};

use super::body::{parse_body, write_opts};
use super::meta::{encode, meta_mut, meta_str, now};
use super::read::{read, read_for_write, Source};
use crate::request::{Request, Response};
use crate::resources::{self, Resource};
use crate::state::Api;
use crate::status::{ApiError, Cause};

/// A review's body as answered: what was posted, with its kind and no timestamp.
pub(super) fn review_body(req: &Request, res: &Resource) -> Value {
    let mut body = parse_body(req).unwrap_or_else(|_| json!({}));
    body["apiVersion"] = json!(res.api_version());
    body["kind"] = json!(res.kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    body
}

/// Answers a create-only review (SelfSubjectReview: `kubectl auth whoami`).
pub(super) fn review(req: &Request, res: &Resource) -> Result<Response, ApiError> {
    let user = req.user.clone().ok_or_else(ApiError::unauthorized)?;
    let mut body = review_body(req, res);
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        let mut extra = Map::new();
        for (k, v) in &user.extra {
            extra.insert(k.clone(), json!([v]));
        }
        info["extra"] = Value::Object(extra);
    }
    body["status"] = json!({"userInfo": info});
    Ok(Response::json(201, &body))
}

pub(super) async fn bind(
    api: &Arc<Api>,
    req: &Request,
    ns: Option<&str>,
    name: &str,
) -> Result<Response, ApiError> {
    let b = parse_body(req)?;
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            vec![Cause::required("target.name")],
        ));
    }
    let pods = resources::find("", "v1", "pods").expect("served");
    let opts = write_opts(req, "berth-scheduler")?;
    let mut bound = false;
    for attempt in 0..5 {
        // The first try from the hub's copy; what it refuses is checked in the store.
        let cached = attempt == 0 && !opts.dry_run;
        let (cur, rev, source) = read_for_write(api, pods, ns, name, cached).await?;
        let assigned = cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let deleting = cur.pointer("/metadata/deletionTimestamp").is_some();
        if (assigned.is_some() || deleting) && source == Source::Hub {
            continue;
        }
        if let Some(have) = assigned {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{have}\"")));
        }
        if deleting {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host")));
        }
        let mut o = cur.clone();
        o["spec"]["nodeName"] = json!(node);
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()});
        let conds = o["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.push(cond);
        o["status"]["conditions"] = Value::Array(conds);
        if opts.dry_run {
            break;
        }
        meta_mut(&mut o).remove("resourceVersion");
        // No managedFields entry: as kube's binding storage, the pod is written
        // directly (field managers track the Binding, which is never stored).
        match api
            .store
            .update(&pods.key(ns, name), &encode(&o), rev)
            .await
        {
            Ok(_) => {
                bound = true;
                break;
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) if source == Source::Store => {
                return Err(ApiError::not_found("", "pods", name))
            }
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !bound && !opts.dry_run {
        return Err(ApiError::conflict("", "pods", name));
    }
    Ok(created_status())
}

/// The 201 Status of a subresource that acts (binding, eviction) rather than stores.
pub(crate) fn created_status() -> Response {
    Response::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

pub(super) async fn token(
    api: &Arc<Api>,
    req: &Request,
    ns: Option<&str>,
    name: &str,
) -> Result<Response, ApiError> {
    let sas = resources::find("", "v1", "serviceaccounts").expect("served");
    let (sa, _) = read(api, sas, ns, name).await?;
    let mut tr = parse_body(req).unwrap_or_else(|_| json!({}));
    if tr.get("spec").is_some_and(|s| !s.is_object()) {
        return Err(ApiError::bad_request("TokenRequest spec must be an object"));
    }
    let ns = ns.unwrap_or("default");
    let expiry = tr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiry > 1 << 32 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![Cause::invalid(
                "spec.expirationSeconds",
                &expiry.to_string(),
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    if expiry < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![Cause::invalid(
                "spec.expirationSeconds",
                &expiry.to_string(),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences: Vec<String> = tr
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![api.authn.issuer.clone()]);
    let pod = tr
        .pointer("/spec/boundObjectRef")
        .filter(|b| b.get("kind").and_then(Value::as_str) == Some("Pod"))
        .map(|b| crate::auth::NameUid {
            name: b.get("name").and_then(Value::as_str).unwrap_or("").into(),
            uid: b.get("uid").and_then(Value::as_str).unwrap_or("").into(),
        });
    let now_s = jiff::Timestamp::now().as_second();
    let claims = crate::auth::Claims {
        iss: api.authn.issuer.clone(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: audiences.clone(),
        exp: now_s + expiry,
        iat: now_s,
        nbf: now_s,
        jti: uuid::Uuid::new_v4().to_string(),
        kube: crate::auth::KubeClaims {
            namespace: ns.into(),
            serviceaccount: crate::auth::NameUid {
                name: name.into(),
                uid: meta_str(&sa, "uid").unwrap_or("").into(),
            },
            pod,
        },
    };
    let jwt = api.authn.issue(&claims).map_err(ApiError::internal)?;
    let exp =
        jiff::Timestamp::from_second(now_s + expiry).unwrap_or_else(|_| jiff::Timestamp::now());
    tr["apiVersion"] = json!("authentication.k8s.io/v1");
    tr["kind"] = json!("TokenRequest");
    tr["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": null});
    tr["spec"]["audiences"] = json!(audiences);
    tr["spec"]["expirationSeconds"] = json!(expiry);
    tr["status"] = json!({"token": jwt, "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()});
    Ok(Response::json(201, &tr))
}
