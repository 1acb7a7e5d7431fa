//! Object operations with kube-apiserver's semantics: get, list (selectors, paging,
//! resourceVersion), create (generateName, uid, timestamps, defaulting, validation),
//! update with optimistic concurrency, the status and scale subresources, patch,
//! delete (finalizers, graceful pod deletion, propagation to dependents), and the
//! pod and ServiceAccount subresources that act rather than store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_store::{Error as StoreError, Store};
use bytes::Bytes;
use http::Method;
use serde_json::{json, Map, Value};

use crate::api::{Api, Request, Response};
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Cause};
use crate::{defaults, patch, schema, ssa, table, validate};

/// The time now in kube's format (RFC 3339, seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn encode(o: &Value) -> Vec<u8> {
    let mut o = o.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

fn set_rv(o: &mut Value, rv: i64) {
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

fn meta_str<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o.get("metadata")
        .and_then(|m| m.get(k))
        .and_then(Value::as_str)
}

/// Sets managedFields, leaving none rather than an empty list.
fn set_managed(o: &mut Value, mf: Value) {
    if mf.as_array().is_some_and(Vec::is_empty) {
        meta_mut(o).remove("managedFields");
    } else {
        meta_mut(o).insert("managedFields".into(), mf);
    }
}

fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.get("metadata").is_some_and(Value::is_object) {
        o["metadata"] = json!({});
    }
    o.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata is an object")
}

/// What a write may be told by its query.
struct WriteOpts {
    dry_run: bool,
    validation: &'static str,
    manager: String,
}

fn write_opts(req: &Request, default_manager: &str) -> Result<WriteOpts, ApiError> {
    let dry_run = match req.q("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: supported values: \"All\""
            )))
        }
    };
    let validation = match req.q("fieldValidation") {
        None | Some("") | Some("Warn") => "Warn",
        Some("Strict") => "Strict",
        Some("Ignore") => "Ignore",
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
            )))
        }
    };
    let manager = match req.q("fieldManager") {
        Some(m) if !m.is_empty() => {
            if m.len() > 128 {
                return Err(ApiError::bad_request(
                    "fieldManager: Too long: may not be more than 128 bytes",
                ));
            }
            m.to_string()
        }
        _ => req
            .header("user-agent")
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or(default_manager)
            .to_string(),
    };
    Ok(WriteOpts {
        dry_run,
        validation,
        manager,
    })
}

/// A request's object body: JSON, YAML or protobuf, by its content type.
pub(crate) fn parse_body(req: &Request) -> Result<Value, ApiError> {
    let ct = req.header("content-type").unwrap_or("application/json");
    let v: Value = if ct.starts_with("application/vnd.kubernetes.protobuf") {
        crate::protobuf::decode_object(&req.body)?
    } else if ct.contains("yaml") {
        serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object, not {}",
            match v {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Null => "null",
                _ => "a scalar",
            }
        )));
    }
    Ok(v)
}

/// Checks apiVersion and kind of a body against the resource (filling them in when
/// absent), prunes unknown fields per fieldValidation, and checks the types.
fn check_body(
    res: &Resource,
    o: &mut Value,
    opts: &WriteOpts,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let av = res.api_version();
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => o["apiVersion"] = json!(av),
        Some(v) if v != av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({av})"
            )))
        }
        _ => {}
    }
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => o["kind"] = json!(res.kind),
        Some(k) if k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) of {}",
                res.kind,
                res.qualified()
            )))
        }
        _ => {}
    }
    let unknown = schema::prune_unknown(res, o);
    if !unknown.is_empty() {
        match opts.validation {
            "Strict" => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            "Warn" => warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\""))),
            _ => {}
        }
    }
    if let Err((path, msg)) = (res.decode)(o) {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {msg} (at {path})",
            res.kind, res.version, res.kind
        )));
    }
    Ok(())
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        r.headers.push((
            "warning".into(),
            format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\"")),
        ));
    }
    r
}

/// Encodes an object answer: a one-row Table when asked, else JSON (YAML on request).
fn answer(req: &Request, res: &Resource, status: u16, o: &Value) -> Response {
    if req.wants_table() && o.get("kind").and_then(Value::as_str) == Some(res.kind) {
        let rv = meta_str(o, "resourceVersion").unwrap_or("");
        let t = table::table(
            res.kind,
            std::slice::from_ref(o),
            rv,
            None,
            table::Include::parse(req.q("includeObject")),
        );
        return Response::json(status, &t);
    }
    if req.wants_metadata() && o.get("kind").and_then(Value::as_str) == Some(res.kind) {
        return Response::json(status, &table::partial_metadata(o));
    }
    if req
        .header("accept")
        .is_some_and(|a| a.starts_with("application/yaml"))
    {
        return Response::bytes(
            status,
            "application/yaml",
            serde_yaml::to_string(o).unwrap_or_default(),
        );
    }
    Response::json(status, o)
}

/// Dispatches an operation on a resource.
pub async fn handle(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    if res.namespaced && ns.is_none() && !(req.method == Method::GET && name.is_none()) {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "{} are namespaced: use /namespaces/NAMESPACE/{}",
                res.plural, res.plural
            ),
        ));
    }
    if res.backing == resources::Backing::NodeMetrics {
        return crate::resource_metrics::handle(api, req, res, ns, name).await;
    }
    if res.backing == resources::Backing::Converted {
        // Boxed: the conversion calls back into this function for the stored version.
        return Box::pin(crate::hpa_v1::handle(api, req, res, ns, name, sub)).await;
    }
    if !res.stored() {
        return match (&req.method, name) {
            (&Method::POST, None) => review(req, res),
            _ => Err(ApiError::method_not_allowed(format!(
                "{} only supports create",
                res.plural
            ))),
        };
    }
    let watch = matches!(req.q("watch"), Some("true" | "1"));
    match (&req.method, name, sub) {
        (&Method::GET, None, None) if watch => crate::watchapi::serve(api, req, res, ns).await,
        (&Method::GET, None, None) => list(api, req, res, ns).await,
        (&Method::GET, Some(n), None | Some("status")) => {
            let (o, _) = read(api, res, ns, n).await?;
            Ok(answer(req, res, 200, &o))
        }
        (&Method::GET, Some(n), Some("scale")) => {
            let (o, _) = read(api, res, ns, n).await?;
            Ok(Response::json(200, &to_scale(&o)))
        }
        (&Method::POST, None, None) => create(api, req, res, ns).await,
        (&Method::PUT, Some(n), None | Some("status") | Some("finalize")) => {
            update(api, req, res, ns, n, sub).await
        }
        (&Method::PUT, Some(n), Some("scale")) => scale_update(api, req, res, ns, n, None).await,
        (&Method::PATCH, Some(n), None | Some("status")) => patch(api, req, res, ns, n, sub).await,
        (&Method::PATCH, Some(n), Some("scale")) => {
            let p = parse_patch_body(req)?;
            scale_update(api, req, res, ns, n, Some(p)).await
        }
        (&Method::DELETE, Some(n), None) => {
            let opts = delete_opts(req)?;
            let out = delete(api, res, ns, n, &opts).await?;
            Ok(answer(req, res, 200, &out))
        }
        (&Method::DELETE, None, None) => delete_collection(api, req, res, ns).await,
        (&Method::POST, Some(n), Some("binding")) => bind(api, req, ns, n).await,
        (&Method::POST, Some(n), Some("eviction")) => crate::eviction::evict(api, req, ns, n).await,
        (&Method::POST, Some(n), Some("token")) => token(api, req, ns, n).await,
        (
            _,
            Some(n),
            Some(s @ ("log" | "exec" | "attach" | "portforward" | "proxy" | "ephemeralcontainers")),
        ) => {
            // log, exec, attach and portforward are proxied to the node agent before
            // dispatch (see nodeproxy); what reaches here is not served yet.
            read(api, res, ns, n).await?;
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

/// Reads one object with its resourceVersion set.
pub async fn read(
    api: &Api,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<(Value, i64), ApiError> {
    let key = res.key(ns, name);
    match api.store.get(&key).await? {
        Some(kv) => Ok((
            crate::hub::decode(&kv.value, kv.mod_revision),
            kv.mod_revision,
        )),
        None => Err(ApiError::not_found(res.group, res.plural, name)),
    }
}

/// A list continue token: the revision and the last key returned.
fn continue_token(rev: i64, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string())
}

fn parse_continue(tok: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(format!(
            "invalid continue token {tok:?}: start a new list without it"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?,
        v.get("start")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string(),
    ))
}

async fn list(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), res.kind)?;
    let limit: usize = match req.q("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| {
                ApiError::bad_request(format!("limit: invalid value {l:?}: expected an integer"))
            })?
            .clamp(0, 1_000_000) as usize,
    };
    let prefix = res.ns_prefix(ns);
    let (mut rev, mut after) = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let (rv, start) = parse_continue(c)?;
            (rv, Some(start))
        }
        None => (0, None),
    };
    if after.is_none() {
        let rv = req.q("resourceVersion").unwrap_or("");
        let exact = req.q("resourceVersionMatch") == Some("Exact");
        if !rv.is_empty() && rv != "0" {
            let n: i64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: invalid value {rv:?}: expected a number"
                ))
            })?;
            if exact {
                rev = n;
            } else {
                api.hub.wait_for(n).await?;
            }
        }
    }
    let filtered = !labels.is_empty() || !fields.is_empty();
    let mut items: Vec<Value> = Vec::new();
    let mut cont: Option<String> = None;
    let mut remaining: Option<i64> = None;
    loop {
        let want = if limit == 0 {
            0
        } else {
            (limit - items.len()).max(if filtered { 100 } else { 0 })
        };
        let page = match api.store.list(&prefix, rev, want, after.as_deref()).await {
            Ok(p) => p,
            Err(StoreError::Compacted { .. }) if req.q("continue").is_some() => {
                return Err(ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."));
            }
            Err(e) => return Err(e.into()),
        };
        rev = page.revision;
        let mut last_key = None;
        for kv in &page.items {
            last_key = Some(kv.key.clone());
            let o = crate::hub::decode(&kv.value, kv.mod_revision);
            if labels.matches(&o) && fields.matches(&o) {
                items.push(o);
                if limit > 0 && items.len() == limit {
                    break;
                }
            }
        }
        let stopped_early = limit > 0
            && items.len() == limit
            && last_key.as_ref() != page.items.last().map(|k| &k.key);
        if limit > 0 && items.len() >= limit && (page.more_after.is_some() || stopped_early) {
            if let Some(k) = last_key {
                cont = Some(continue_token(rev, &k));
                if !filtered {
                    // Only an estimate is cheap enough; kube's is exact without selectors.
                    let rest = api
                        .store
                        .list(&prefix, rev, 0, Some(&k))
                        .await
                        .map(|p| p.items.len() as i64)
                        .ok();
                    remaining = rest;
                }
            }
            break;
        }
        match page.more_after {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    if req.wants_table() {
        let t = table::table(
            res.kind,
            &items,
            &rev.to_string(),
            cont.as_deref(),
            table::Include::parse(req.q("includeObject")),
        );
        return Ok(Response::json(200, &t));
    }
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
        if let Some(r) = remaining.filter(|r| *r > 0) {
            meta["remainingItemCount"] = json!(r);
        }
    }
    let body = if req.wants_metadata() {
        json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(table::partial_metadata).collect::<Vec<_>>(),
        })
    } else {
        json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": meta,
            "items": items,
        })
    };
    if req
        .header("accept")
        .is_some_and(|a| a.starts_with("application/yaml"))
    {
        return Ok(Response::bytes(
            200,
            "application/yaml",
            serde_yaml::to_string(&body).unwrap_or_default(),
        ));
    }
    Ok(Response::json(200, &body))
}

/// Answers a create-only review (SelfSubjectReview: `kubectl auth whoami`).
fn review(req: &Request, res: &Resource) -> Result<Response, ApiError> {
    let user = req.user.clone().ok_or_else(ApiError::unauthorized)?;
    let mut body = parse_body(req).unwrap_or_else(|_| json!({}));
    body["apiVersion"] = json!(res.api_version());
    body["kind"] = json!(res.kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
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

/// Checks the namespace exists and is not being deleted.
async fn check_namespace(api: &Api, ns: &str) -> Result<(), ApiError> {
    let nsr = resources::find("", "v1", "namespaces").expect("namespaces are served");
    let key = nsr.key(None, ns);
    // The hub's copy answers for namespaces it knows (as kube's admission reads its
    // informer cache); one it does not know yet may have just been created: ask the
    // store.
    let terminating = match api.hub.get(&key) {
        Some(o) => Some(o.pointer("/metadata/deletionTimestamp").is_some()),
        None => api.store.get(&key).await?.map(|kv| {
            serde_json::from_slice::<Value>(&kv.value)
                .unwrap_or(Value::Null)
                .pointer("/metadata/deletionTimestamp")
                .is_some()
        }),
    };
    match terminating {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(terminating) => {
            if terminating {
                let mut e = ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ));
                e.reason = "Forbidden";
                return Err(e);
            }
            Ok(())
        }
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let cs = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Reserves an address-like value under /registry/ranges/ (cluster IPs, node ports)
/// so two services never get the same one.
async fn reserve(api: &Api, range: &str, value: &str, owner: &str) -> Result<bool, ApiError> {
    match api
        .store
        .create(
            &format!("/registry/ranges/{range}/{value}"),
            owner.as_bytes(),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::Exists(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Releases a reservation if `owner` holds it.
async fn release(api: &Api, range: &str, value: &str, owner: &str) {
    let key = format!("/registry/ranges/{range}/{value}");
    if let Ok(Some(kv)) = api.store.get(&key).await {
        if kv.value == owner.as_bytes() {
            let _ = api.store.delete(&key, kv.mod_revision).await;
        }
    }
}

/// Gives a new service its cluster IP and node ports.
async fn allocate_service(api: &Api, o: &mut Value, dry_run: bool) -> Result<(), ApiError> {
    use rand::Rng;
    let owner = crate::repair::owner(o);
    let ty = o
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let want = o
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ip = if want == "None" {
        want
    } else if !want.is_empty() {
        let ok = want
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .filter(|a| a.octets()[0] == 10 && a.octets()[1] == 96);
        if ok.is_none() {
            return Err(ApiError::invalid("", "Service", &owner, vec![Cause::invalid(
                "spec.clusterIPs",
                &want,
                "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16",
            )]));
        }
        if !dry_run && !reserve(api, "serviceips", &want, &owner).await? {
            return Err(ApiError::invalid(
                "",
                "Service",
                &owner,
                vec![Cause::invalid(
                    "spec.clusterIPs",
                    &want,
                    "failed to allocate IP: provided IP is already allocated",
                )],
            ));
        }
        want
    } else {
        let mut got = None;
        for _ in 0..64 {
            let (a, b) = {
                let mut rng = rand::rng();
                (rng.random_range(0..=255u8), rng.random_range(0..=254u8))
            };
            if a == 0 && b < 10 {
                continue;
            }
            let cand = format!("10.96.{a}.{}", b.max(1));
            if dry_run || reserve(api, "serviceips", &cand, &owner).await? {
                got = Some(cand);
                break;
            }
        }
        got.ok_or_else(|| ApiError::internal("failed to allocate a service IP: range is full"))?
    };
    o["spec"]["clusterIP"] = json!(ip);
    o["spec"]["clusterIPs"] = json!([ip]);
    if ty == "NodePort" || ty == "LoadBalancer" {
        if let Some(ports) = o.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                    if !(30000..=32767).contains(&n) {
                        return Err(ApiError::invalid("", "Service", &owner, vec![Cause::invalid(
                            "spec.ports[].nodePort",
                            &n.to_string(),
                            "provided port is not in the valid range. The range of valid ports is 30000-32767",
                        )]));
                    }
                    if !dry_run && !reserve(api, "servicenodeports", &n.to_string(), &owner).await?
                    {
                        return Err(ApiError::invalid(
                            "",
                            "Service",
                            &owner,
                            vec![Cause::invalid(
                                "spec.ports[].nodePort",
                                &n.to_string(),
                                "provided port is already allocated",
                            )],
                        ));
                    }
                    continue;
                }
                for _ in 0..64 {
                    let cand = rand::rng().random_range(30000..=32767u32);
                    if dry_run
                        || reserve(api, "servicenodeports", &cand.to_string(), &owner).await?
                    {
                        p["nodePort"] = json!(cand);
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

async fn release_service(api: &Api, o: &Value) {
    let owner = crate::repair::owner(o);
    for (range, value) in crate::repair::reservations(o) {
        release(api, range, &value, &owner).await;
    }
}

/// Creates an object (the body already parsed): the shared path of POST and
/// create-by-apply.
async fn create_object(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    mut o: Value,
    opts: &WriteOpts,
    managed: Option<Value>,
) -> Result<Value, ApiError> {
    {
        let m = meta_mut(&mut o);
        if let Some(rv) = m.get("resourceVersion").and_then(Value::as_str) {
            if !rv.is_empty() {
                return Err(ApiError::bad_request(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
        }
        match (res.namespaced, ns, m.get("namespace").and_then(Value::as_str)) {
            (true, Some(u), Some(b)) if !b.is_empty() && b != u => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({b}) does not match the namespace sent on the request ({u})"
                )))
            }
            (true, Some(u), _) => {
                m.insert("namespace".into(), json!(u));
            }
            _ => {
                m.remove("namespace");
            }
        }
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "resourceVersion",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        if res.has_generation() {
            m.insert("generation".into(), json!(1));
        }
    }
    if let Some(ns) = ns.filter(|_| res.namespaced) {
        check_namespace(api, ns).await?;
    }
    let generate = meta_str(&o, "name").is_none_or(str::is_empty)
        && meta_str(&o, "generateName").is_some_and(|g| !g.is_empty());
    if generate {
        let g = meta_str(&o, "generateName").unwrap_or("").to_string();
        meta_mut(&mut o).insert("name".into(), json!(crate::names::generate(&g)));
    }
    defaults::apply(res.kind, &mut o);
    match res.kind {
        "Pod" => {
            crate::admission::service_account(&mut o);
            crate::admission::default_toleration_seconds(&mut o);
            crate::priority::admit(api, &mut o).await?;
            let qos = qos_class(o.get("spec").unwrap_or(&Value::Null));
            o["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        "Namespace" => o["status"] = json!({"phase": "Active"}),
        // Until a volume binds it, as kube-apiserver writes a new claim.
        "PersistentVolumeClaim" => {
            crate::storageclass::admit(api, &mut o).await?;
            o["status"] = json!({"phase": "Pending"});
        }
        "Service" => o["status"] = json!({"loadBalancer": {}}),
        "Job" => {
            defaults::job_selector(&mut o);
            o["status"] = json!({});
        }
        _ if res.subresources.contains(&"status") => {
            if let Some(m) = o.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
    let name = meta_str(&o, "name").unwrap_or("").to_string();
    let causes = validate::validate(res, &o, None);
    if !causes.is_empty() {
        return Err(ApiError::invalid(res.group, res.kind, &name, causes));
    }
    let before = Value::Null;
    let mf = managed.unwrap_or_else(|| ssa::record_update(res, &before, &o, &opts.manager, None));
    set_managed(&mut o, mf);
    if res.kind == "Service" {
        allocate_service(api, &mut o, opts.dry_run).await?;
    }
    if opts.dry_run {
        return Ok(o);
    }
    for attempt in 0..3 {
        let key = res.key(ns, meta_str(&o, "name").unwrap_or(""));
        match api.store.create(&key, &encode(&o)).await {
            Ok(kv) => {
                set_rv(&mut o, kv.mod_revision);
                if res.kind == "Namespace" {
                    let api = api.clone();
                    let n = name.clone();
                    tokio::spawn(async move { populate_namespace(&api, &n).await });
                }
                return Ok(o);
            }
            Err(StoreError::Exists(_)) if generate && attempt < 2 => {
                let g = meta_str(&o, "generateName").unwrap_or("").to_string();
                meta_mut(&mut o).insert("name".into(), json!(crate::names::generate(&g)));
            }
            Err(StoreError::Exists(_)) => {
                if res.kind == "Service" {
                    release_service(api, &o).await;
                }
                return Err(ApiError::already_exists(
                    res.group,
                    res.plural,
                    meta_str(&o, "name").unwrap_or(""),
                ));
            }
            Err(e) => {
                if res.kind == "Service" {
                    release_service(api, &o).await;
                }
                return Err(e.into());
            }
        }
    }
    unreachable!("the loop returns")
}

/// What every namespace has: the `default` ServiceAccount and the cluster CA bundle.
pub fn populate_namespace<'a>(
    api: &'a Arc<Api>,
    ns: &'a str,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(populate(api, ns))
}

async fn populate(api: &Arc<Api>, ns: &str) {
    let opts = WriteOpts {
        dry_run: false,
        validation: "Ignore",
        manager: "berth-controller-manager".into(),
    };
    let sa = resources::find("", "v1", "serviceaccounts").expect("served");
    let _ = create_object(
        api,
        sa,
        Some(ns),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        &opts,
        None,
    )
    .await;
    let cm = resources::find("", "v1", "configmaps").expect("served");
    let ca = api.ca_bundle.clone();
    {
        let _ = create_object(
            api,
            cm,
            Some(ns),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                   "data": {"ca.crt": ca}}),
            &opts,
            None,
        )
        .await;
    }
}

async fn create(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let opts = write_opts(req, "unknown")?;
    let mut o = parse_body(req)?;
    let mut warnings = Vec::new();
    check_body(res, &mut o, &opts, &mut warnings)?;
    let out = create_object(api, res, ns, o, &opts, None).await?;
    Ok(with_warnings(answer(req, res, 201, &out), &warnings))
}

/// The parts of an object that count as its spec, for metadata.generation.
fn spec_of(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

/// Replaces `cur` (at `rev`) with `new`: the shared path of PUT, PATCH and apply.
/// `sub` says which part the request may change (status: only status).
#[allow(clippy::too_many_arguments)]
async fn replace(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    cur: &Value,
    rev: i64,
    mut new: Value,
    sub: Option<&str>,
    opts: &WriteOpts,
    managed: Option<Value>,
) -> Result<Value, ApiError> {
    match meta_str(&new, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        None => {
            meta_mut(&mut new).insert("name".into(), json!(name));
        }
        _ => {}
    }
    if let Some(want) = meta_str(&new, "resourceVersion").filter(|r| !r.is_empty()) {
        if want != rev.to_string() {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
    }
    if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty()) {
        if Some(uid) != meta_str(cur, "uid") {
            let mut e = ApiError::conflict(res.group, res.plural, name);
            e.message = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(cur, "uid").unwrap_or("")
            );
            return Err(e);
        }
    }
    let mut o = match sub {
        // Status writes change only status.
        Some("status") => {
            let mut o = cur.clone();
            o["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            o
        }
        Some("finalize") => {
            let mut o = cur.clone();
            o["spec"]["finalizers"] = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            o
        }
        _ => {
            let mut o = new;
            if res.subresources.contains(&"status") {
                match cur.get("status") {
                    Some(s) => o["status"] = s.clone(),
                    None => {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            o
        }
    };
    // What the system owns stays as it was.
    {
        let cm = cur.get("metadata").cloned().unwrap_or(json!({}));
        let m = meta_mut(&mut o);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
        ] {
            match cm.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.remove("resourceVersion");
    }
    if sub.is_none() {
        defaults::apply(res.kind, &mut o);
    }
    if res.has_generation() && spec_of(&o) != spec_of(cur) {
        let g = cur
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut o).insert("generation".into(), json!(g + 1));
    }
    let causes = validate::validate(res, &o, Some(cur));
    if !causes.is_empty() {
        return Err(ApiError::invalid(res.group, res.kind, name, causes));
    }
    let mf = match managed {
        Some(mf) => mf,
        None => ssa::record_update(res, cur, &o, &opts.manager, sub),
    };
    set_managed(&mut o, mf);
    // Timestamps of field managers do not make a change on their own.
    let comparable = |v: &Value| {
        let mut c = v.clone();
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                for e in mf.iter_mut().filter_map(Value::as_object_mut) {
                    e.remove("time");
                }
            }
        }
        c
    };
    let (cur_cmp, new_cmp) = (comparable(cur), comparable(&o));
    if cur_cmp == new_cmp {
        // No change: kube answers with the object as stored, without a write.
        return Ok(cur.clone());
    }
    if opts.dry_run {
        set_rv(&mut o, rev);
        return Ok(o);
    }
    // Finalizers all gone from an object being deleted: it goes now.
    // (A namespace is finished by its own task, once it is empty.)
    let finalizers_gone = res.kind != "Namespace"
        && o.pointer("/metadata/deletionTimestamp").is_some()
        && o.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    let key = res.key(ns, name);
    // A pod on a node given a grace period waits for the node's zero-grace delete.
    let awaits_node = res.kind == "Pod"
        && o.pointer("/spec/nodeName").is_some()
        && o.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            != Some(0);
    if finalizers_gone && !awaits_node {
        return match api.store.delete(&key, rev).await {
            Ok((_, del_rev)) => {
                set_rv(&mut o, del_rev);
                after_delete(api, res, &o).await;
                Ok(o)
            }
            Err(StoreError::Conflict { .. }) => {
                Err(ApiError::conflict(res.group, res.plural, name))
            }
            Err(StoreError::NotFound(_)) => Err(ApiError::not_found(res.group, res.plural, name)),
            Err(e) => Err(e.into()),
        };
    }
    match api.store.update(&key, &encode(&o), rev).await {
        Ok(kv) => {
            set_rv(&mut o, kv.mod_revision);
            Ok(o)
        }
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(res.group, res.plural, name)),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(res.group, res.plural, name)),
        Err(e) => Err(e.into()),
    }
}

async fn update(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let opts = write_opts(req, "unknown")?;
    let mut o = parse_body(req)?;
    let mut warnings = Vec::new();
    check_body(res, &mut o, &opts, &mut warnings)?;
    let (cur, rev) = read(api, res, ns, name).await?;
    let out = replace(api, res, ns, name, &cur, rev, o, sub, &opts, None).await?;
    Ok(with_warnings(answer(req, res, 200, &out), &warnings))
}

fn parse_patch_body(req: &Request) -> Result<Value, ApiError> {
    let ct = req.header("content-type").unwrap_or("");
    if ct.starts_with("application/apply-patch") {
        return serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
}

async fn patch(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let ct = req.media_type().to_string();
    let default_manager = if ct == "application/apply-patch+yaml" {
        ""
    } else {
        "unknown"
    };
    let opts = write_opts(req, default_manager)?;
    let body = parse_patch_body(req)?;
    if ct == "application/apply-patch+yaml" {
        if req.q("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requests require fieldManager to be set",
            ));
        }
        let force = req.q("force") == Some("true");
        return apply(api, req, res, ns, name, sub, body, &opts, force).await;
    }
    let format = patch::Format::of(&ct)?;
    let mut warnings = Vec::new();
    // Retried on conflict unless the patch itself names a resourceVersion.
    let pinned = body.pointer("/metadata/resourceVersion").is_some();
    for attempt in 0.. {
        let (cur, rev) = read(api, res, ns, name).await?;
        let mut doc = cur.clone();
        format.apply(&mut doc, &body, res.kind)?;
        if !doc.is_object() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "the patched object is not a JSON object",
            ));
        }
        if !pinned {
            meta_mut(&mut doc).remove("resourceVersion");
        }
        warnings.clear();
        check_body(res, &mut doc, &opts, &mut warnings)?;
        match replace(api, res, ns, name, &cur, rev, doc, sub, &opts, None).await {
            Err(e) if e.reason == "Conflict" && !pinned && attempt < 5 => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok(with_warnings(answer(req, res, 200, &out), &warnings)),
        }
    }
    unreachable!()
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    body: Value,
    opts: &WriteOpts,
    force: bool,
) -> Result<Response, ApiError> {
    let mut applied = body;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    let mut warnings = Vec::new();
    check_body(res, &mut applied, opts, &mut warnings)?;
    if let Some(n) = meta_str(&applied, "name") {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    meta_mut(&mut applied).insert("name".into(), json!(name));
    for attempt in 0.. {
        let cur = match read(api, res, ns, name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        let result = match cur {
            None => {
                let (obj, mf) = ssa::apply(res, &Value::Null, &applied, &opts.manager, force, sub)?;
                create_object(api, res, ns, obj, opts, Some(mf))
                    .await
                    .map(|o| (201, o))
            }
            Some((cur, rev)) => {
                let (obj, mf) = ssa::apply(res, &cur, &applied, &opts.manager, force, sub)?;
                replace(api, res, ns, name, &cur, rev, obj, sub, opts, Some(mf))
                    .await
                    .map(|o| (200, o))
            }
        };
        match result {
            Err(e) if (e.reason == "Conflict" || e.reason == "AlreadyExists") && attempt < 5 => {
                continue
            }
            Err(e) => return Err(e),
            Ok((code, o)) => return Ok(with_warnings(answer(req, res, code, &o), &warnings)),
        }
    }
    unreachable!()
}

fn to_scale(o: &Value) -> Value {
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

async fn scale_update(
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

/// Options of a delete.
pub struct DeleteOpts {
    /// Seconds of grace (pods).
    pub grace: Option<i64>,
    /// Orphan, Background or Foreground.
    pub propagation: String,
    /// Required uid.
    pub uid: Option<String>,
    /// Required resourceVersion.
    pub rv: Option<String>,
    /// Dry run.
    pub dry_run: bool,
}

impl DeleteOpts {
    /// The server's own deletions: no grace, dependents collected in the background.
    fn immediate() -> DeleteOpts {
        DeleteOpts {
            grace: Some(0),
            propagation: "Background".into(),
            uid: None,
            rv: None,
            dry_run: false,
        }
    }
}

fn delete_opts(req: &Request) -> Result<DeleteOpts, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else if req.body.starts_with(crate::protobuf::MAGIC) {
        crate::protobuf::decode_object(&req.body)?
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let grace = match req.q("gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}"))
        })?),
        None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    let mut propagation = req
        .q("propagationPolicy")
        .map(str::to_string)
        .or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    if propagation.is_empty() {
        propagation = match body
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or(req.q("orphanDependents").map(|o| o == "true"))
        {
            Some(true) => "Orphan".into(),
            _ => "Background".into(),
        };
    }
    if !["Orphan", "Background", "Foreground"].contains(&propagation.as_str()) {
        return Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![Cause::not_supported(
                "propagationPolicy",
                &propagation,
                &["Foreground", "Background", "Orphan"],
            )],
        ));
    }
    let dry_run = req.q("dryRun") == Some("All")
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOpts {
        grace,
        propagation,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

fn success_status(res: &Resource, o: &Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": meta_str(o, "name"), "group": res.group, "kind": res.plural, "uid": meta_str(o, "uid")},
    })
}

/// Deletes an object as kube does; returns what the client is answered.
pub fn delete<'a>(
    api: &'a Arc<Api>,
    res: &'static Resource,
    ns: Option<&'a str>,
    name: &'a str,
    opts: &'a DeleteOpts,
) -> Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>> {
    Box::pin(async move {
        for attempt in 0.. {
            let (cur, rev) = read(api, res, ns, name).await?;
            if let Some(uid) = &opts.uid {
                if Some(uid.as_str()) != meta_str(&cur, "uid") {
                    let mut e = ApiError::conflict(res.group, res.plural, name);
                    e.message = format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&cur, "uid").unwrap_or("")
                    );
                    return Err(e);
                }
            }
            if let Some(rv) = &opts.rv {
                if *rv != rev.to_string() {
                    return Err(ApiError::conflict(res.group, res.plural, name));
                }
            }
            let mut finalizers: Vec<Value> = cur
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has_dependents = !api
                .hub
                .dependents(meta_str(&cur, "uid").unwrap_or(""))
                .is_empty();
            match opts.propagation.as_str() {
                "Orphan" if has_dependents => finalizers.push(json!("orphan")),
                "Foreground" if has_dependents => finalizers.push(json!("foregroundDeletion")),
                _ => {}
            }
            finalizers.dedup();
            // As kube's pod strategy: a pod on a node gets its grace period for the
            // node to stop it — unless it has finished (Succeeded, Failed): nothing
            // runs to stop.
            let finished = matches!(
                cur.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            let graceful_pod = res.kind == "Pod"
                && cur
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
                && !finished
                && opts.grace != Some(0);
            let terminating_ns = res.kind == "Namespace";
            if opts.dry_run {
                return Ok(cur);
            }
            if !finalizers.is_empty() || graceful_pod || terminating_ns {
                // A node's confirmation (grace 0) of a pod held by finalizers is
                // recorded, so that the pod goes once they are gone.
                let confirmed_now = res.kind == "Pod"
                    && opts.grace == Some(0)
                    && cur
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .is_some_and(|g| g != 0);
                if cur.pointer("/metadata/deletionTimestamp").is_some()
                    && !graceful_pod
                    && !confirmed_now
                {
                    // Already being deleted: nothing more to record.
                    return Ok(cur);
                }
                let mut o = cur.clone();
                let grace = if graceful_pod {
                    opts.grace.unwrap_or_else(|| {
                        cur.pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                            .unwrap_or(30)
                    })
                } else {
                    0
                };
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                {
                    let m = meta_mut(&mut o);
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    if !finalizers.is_empty() {
                        m.insert("finalizers".into(), Value::Array(finalizers.clone()));
                    }
                    m.remove("resourceVersion");
                }
                if terminating_ns {
                    o["status"]["phase"] = json!("Terminating");
                }
                let key = res.key(ns, name);
                match api.store.update(&key, &encode(&o), rev).await {
                    Ok(kv) => set_rv(&mut o, kv.mod_revision),
                    Err(StoreError::Conflict { .. }) if attempt < 5 => continue,
                    Err(StoreError::Conflict { .. }) => {
                        return Err(ApiError::conflict(res.group, res.plural, name))
                    }
                    Err(e) => return Err(e.into()),
                }
                let api2 = api.clone();
                let uid = meta_str(&o, "uid").unwrap_or("").to_string();
                let (ns2, name2) = (ns.map(str::to_string), name.to_string());
                if terminating_ns {
                    tokio::spawn(async move { finish_namespace(&api2, &name2, &uid).await });
                } else if finalizers
                    .iter()
                    .any(|f| f == "orphan" || f == "foregroundDeletion")
                {
                    let orphan = opts.propagation == "Orphan";
                    tokio::spawn(async move {
                        finish_propagation(&api2, res, ns2.as_deref(), &name2, &uid, orphan).await
                    });
                }
                return Ok(o);
            }
            let key = res.key(ns, name);
            match api.store.delete(&key, rev).await {
                Ok((_, del_rev)) => {
                    let mut o = cur.clone();
                    set_rv(&mut o, del_rev);
                    after_delete(api, res, &o).await;
                    return Ok(if res.kind == "Pod" {
                        o
                    } else {
                        success_status(res, &o)
                    });
                }
                Err(StoreError::Conflict { .. }) if attempt < 5 => continue,
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(res.group, res.plural, name))
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!()
    })
}

/// After an object is gone: release what it held, and collect its dependents
/// (background propagation).
async fn after_delete(api: &Arc<Api>, res: &Resource, o: &Value) {
    if res.kind == "Service" {
        release_service(api, o).await;
    }
    let uid = meta_str(o, "uid").unwrap_or("").to_string();
    if uid.is_empty() {
        return;
    }
    let api = api.clone();
    tokio::spawn(async move { collect_dependents(&api, &uid, false).await });
}

/// Deletes (or, orphaning, frees) the objects owned by `uid`.
async fn collect_dependents(api: &Arc<Api>, uid: &str, orphan: bool) {
    // The hub sees a just-written ownerReference a moment after the write.
    if let Ok(rev) = api.store.revision().await {
        let _ = api.hub.wait_for(rev).await;
    }
    for (key, dep) in api.hub.dependents(uid) {
        let Some((res, ns, name)) = resources::from_key(&key) else {
            continue;
        };
        let refs: Vec<Value> = dep
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let others: Vec<Value> = refs
            .iter()
            .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
            .cloned()
            .collect();
        if orphan || !others.is_empty() {
            // Only this owner's reference goes; re-read and retried when someone else
            // wrote the dependent in between (the hub's copy may be behind).
            for _ in 0..10 {
                let Ok((cur, rev)) = read(api, res, ns, name).await else {
                    break;
                };
                let mut o = cur.clone();
                let keep: Vec<Value> = cur
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                if keep.is_empty() {
                    meta_mut(&mut o).remove("ownerReferences");
                } else {
                    meta_mut(&mut o).insert("ownerReferences".into(), Value::Array(keep));
                }
                meta_mut(&mut o).remove("resourceVersion");
                match api.store.update(&key, &encode(&o), rev).await {
                    Err(StoreError::Conflict { .. }) => continue,
                    _ => break,
                }
            }
            continue;
        }
        let opts = DeleteOpts::immediate();
        let _ = delete(api, res, ns, name, &opts).await;
    }
}

/// Completes an orphan or foreground deletion: frees or deletes the dependents, then
/// drops the finalizer (and with it, the object when no other finalizer remains).
async fn finish_propagation(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    uid: &str,
    orphan: bool,
) {
    collect_dependents(api, uid, orphan).await;
    if !orphan {
        // Foreground: wait until the dependents are gone.
        for _ in 0..600 {
            if api.hub.dependents(uid).is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let finalizer = if orphan {
        "orphan"
    } else {
        "foregroundDeletion"
    };
    for _ in 0..10 {
        let Ok((cur, rev)) = read(api, res, ns, name).await else {
            return;
        };
        let mut o = cur.clone();
        if let Some(f) = o
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != finalizer);
        }
        let opts = WriteOpts {
            dry_run: false,
            validation: "Ignore",
            manager: "berth-garbage-collector".into(),
        };
        match replace(api, res, ns, name, &cur, rev, o, None, &opts, None).await {
            Err(e) if e.reason == "Conflict" => continue,
            _ => return,
        }
    }
}

/// Deletes everything in a terminating namespace, then the namespace.
/// Deletes everything in a terminating namespace — again and again while anything is
/// left (an object whose finalizer nobody removes keeps the namespace Terminating, as
/// with kube) — then the namespace itself, if it is still the one (`uid`) that was
/// being deleted.
pub async fn finish_namespace(api: &Arc<Api>, ns: &str, uid: &str) {
    let nsr = resources::find("", "v1", "namespaces").expect("served");
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let mut left = false;
        for res in resources::RESOURCES
            .iter()
            .filter(|r| r.namespaced && r.stored())
        {
            let prefix = res.ns_prefix(Some(ns));
            let Ok(page) = api.store.list(&prefix, 0, 0, None).await else {
                left = true;
                continue;
            };
            for kv in page.items {
                left = true;
                let Some((_, _, name)) = resources::from_key(&kv.key) else {
                    continue;
                };
                // Without a node agent, nothing else will finish a pod's deletion.
                let opts = DeleteOpts::immediate();
                let _ = delete(api, res, Some(ns), name, &opts).await;
            }
        }
        if !left {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
        match read(api, nsr, None, ns).await {
            Ok((cur, _)) if meta_str(&cur, "uid") == Some(uid) => {}
            _ => return, // gone, or a new namespace of that name
        }
    }
    if let Ok((cur, rev)) = read(api, nsr, None, ns).await {
        if meta_str(&cur, "uid") == Some(uid) {
            let _ = api.store.delete(&nsr.key(None, ns), rev).await;
        }
    }
}

/// Restarts the deletion work that lived in tasks of the previous process: namespaces
/// being deleted, and owners waiting for orphan or foreground propagation.
pub async fn resume_deletions(api: &Arc<Api>) {
    for (key, o) in api.hub.under("/registry/") {
        if o.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let Some((res, ns, name)) = resources::from_key(&key) else {
            continue;
        };
        let uid = meta_str(&o, "uid").unwrap_or("").to_string();
        let (api, ns, name) = (api.clone(), ns.map(str::to_string), name.to_string());
        if res.kind == "Namespace" {
            tokio::spawn(async move { finish_namespace(&api, &name, &uid).await });
            continue;
        }
        let fins: Vec<String> = o
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (f, orphan) in [("orphan", true), ("foregroundDeletion", false)] {
            if fins.iter().any(|x| x == f) {
                let (api, ns, name, uid) = (api.clone(), ns.clone(), name.clone(), uid.clone());
                tokio::spawn(async move {
                    finish_propagation(&api, res, ns.as_deref(), &name, &uid, orphan).await
                });
            }
        }
    }
}

async fn delete_collection(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), res.kind)?;
    let opts = delete_opts(req)?;
    let page = api.store.list(&res.ns_prefix(ns), 0, 0, None).await?;
    let mut items = Vec::new();
    for kv in page.items {
        let o = crate::hub::decode(&kv.value, kv.mod_revision);
        if !(labels.matches(&o) && fields.matches(&o)) {
            continue;
        }
        let Some((_, ons, name)) = resources::from_key(&kv.key) else {
            continue;
        };
        match delete(api, res, ons, name, &opts).await {
            Ok(_) => items.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Response::json(
        200,
        &json!({
            "kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": page.revision.to_string()}, "items": items,
        }),
    ))
}

async fn bind(
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
    for _ in 0..5 {
        let (cur, rev) = read(api, pods, ns, name).await?;
        if let Some(have) = cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{have}\"")));
        }
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
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
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found("", "pods", name)),
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

async fn token(
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

/// Body bytes of a JSON value (for tests and internal callers).
pub fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Creates an object on the server's own behalf (bootstrap); an existing one is fine.
pub async fn create_internal(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    body: Value,
) -> Result<(), ApiError> {
    let opts = WriteOpts {
        dry_run: false,
        validation: "Ignore",
        manager: "berth-apiserver".into(),
    };
    match create_object(api, res, ns, body, &opts, None).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}
