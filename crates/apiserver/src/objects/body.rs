//! What a write request carries and how an answer is encoded: the write options of
//! the query (dryRun, fieldValidation, fieldManager), the object body (JSON, YAML,
//! protobuf) checked against its resource, warnings, and the answer as JSON, YAML,
//! a Table or metadata only.

use serde_json::{json, Value};

use super::meta::meta_str;
use crate::request::{Request, Response};
use crate::resources::Resource;
use crate::status::ApiError;
use crate::{schema, table};

/// What a write may be told by its query.
pub(super) struct WriteOpts {
    /// dryRun=All: everything but the store write.
    pub(super) dry_run: bool,
    /// fieldValidation: Strict, Warn or Ignore.
    pub(super) validation: &'static str,
    /// The field manager writes are recorded under.
    pub(super) manager: String,
    /// Who writes: RBAC's escalation check applies to them (None: the server itself).
    pub(super) user: Option<crate::request::User>,
    /// Warnings admission adds on the way (PodSecurity's), for the answer's headers.
    pub(super) warnings: std::sync::Mutex<Vec<String>>,
}

impl WriteOpts {
    /// A write on the server's own behalf, recorded under `manager`.
    pub(super) fn internal(manager: &str) -> WriteOpts {
        WriteOpts {
            dry_run: false,
            validation: "Ignore",
            manager: manager.into(),
            user: None,
            warnings: Default::default(),
        }
    }

    /// Adds admission warnings for the answer.
    pub(super) fn warn(&self, w: Vec<String>) {
        if !w.is_empty() {
            self.warnings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(w);
        }
    }

    /// The admission warnings so far, taken.
    pub(super) fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub(super) fn write_opts(req: &Request, default_manager: &str) -> Result<WriteOpts, ApiError> {
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
        user: req.user.clone(),
        warnings: Default::default(),
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

pub(super) fn parse_patch_body(req: &Request) -> Result<Value, ApiError> {
    let ct = req.header("content-type").unwrap_or("");
    if ct.starts_with("application/apply-patch") {
        return serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
}

/// Checks apiVersion and kind of a body against the resource (filling them in when
/// absent), prunes unknown fields per fieldValidation, and checks the types.
pub(super) fn check_body(
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
    let unknown = match res.custom {
        Some(c) => {
            // Metadata as ObjectMeta, the rest by the version's schema.
            let mut unknown = match o.get_mut("metadata") {
                Some(m) => schema::prune_object_meta(m)
                    .into_iter()
                    .map(|f| format!("metadata.{f}"))
                    .collect(),
                None => Vec::new(),
            };
            if let Some(s) = &c.schema {
                unknown.extend(crate::crd::values::prune(s, o));
            }
            unknown
        }
        None => schema::prune_unknown(res, o),
    };
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

pub(super) fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        r.headers.push((
            "warning".into(),
            format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\"")),
        ));
    }
    r
}

/// Encodes an object answer: a one-row Table when asked, else JSON (YAML on request).
pub(super) fn answer(req: &Request, res: &Resource, status: u16, o: &Value) -> Response {
    if req.wants_table() && o.get("kind").and_then(Value::as_str) == Some(res.kind) {
        let rv = meta_str(o, "resourceVersion").unwrap_or("");
        let t = table::table(
            res,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use http::Method;

    fn req(query: &[(&str, &str)], headers: &[(&'static str, &str)], body: &str) -> Request {
        Request::test(Method::POST, query, headers, body)
    }

    #[test]
    fn write_options_come_from_the_query_and_bad_ones_are_400s() {
        let o = write_opts(
            &req(&[], &[("user-agent", "kubectl/v1.32.4 (linux)")], ""),
            "unknown",
        )
        .unwrap();
        assert_eq!(
            (o.dry_run, o.validation, o.manager.as_str()),
            (false, "Warn", "kubectl")
        );
        let o = write_opts(
            &req(
                &[
                    ("dryRun", "All"),
                    ("fieldValidation", "Strict"),
                    ("fieldManager", "me"),
                ],
                &[],
                "",
            ),
            "unknown",
        )
        .unwrap();
        assert_eq!(
            (o.dry_run, o.validation, o.manager.as_str()),
            (true, "Strict", "me")
        );
        assert_eq!(
            write_opts(&req(&[], &[], ""), "unknown").unwrap().manager,
            "unknown"
        );
        for (k, v, why) in [
            ("dryRun", "Some", "supported values: \"All\""),
            (
                "fieldValidation",
                "Loud",
                "fieldValidation parameter unsupported",
            ),
        ] {
            let e = write_opts(&req(&[(k, v)], &[], ""), "unknown")
                .err()
                .unwrap();
            assert_eq!(e.code, 400);
            assert!(e.message.contains(why), "{}", e.message);
        }
        let long = "m".repeat(129);
        let e = write_opts(&req(&[("fieldManager", &long)], &[], ""), "x")
            .err()
            .unwrap();
        assert!(e.message.contains("Too long"), "{}", e.message);
    }

    #[test]
    fn bodies_are_objects_of_the_resources_version_and_kind() {
        let cms = find("", "v1", "configmaps").unwrap();
        let e = parse_body(&req(&[], &[], "[1]")).err().unwrap();
        assert!(e.message.contains("not an array"), "{}", e.message);
        let yaml = parse_body(&req(
            &[],
            &[("content-type", "application/yaml")],
            "metadata: {name: a}\n",
        ))
        .unwrap();
        assert_eq!(yaml["metadata"]["name"], "a");
        let opts = write_opts(&req(&[], &[], ""), "unknown").unwrap();
        let mut warnings = Vec::new();
        // apiVersion and kind are filled in when absent...
        let mut o = json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "extra": 1});
        check_body(cms, &mut o, &opts, &mut warnings).unwrap();
        assert_eq!(
            (o["apiVersion"].as_str(), o["kind"].as_str()),
            (Some("v1"), Some("ConfigMap"))
        );
        // ...unknown fields pruned with a warning (fieldValidation=Warn)...
        assert!(o.get("extra").is_none());
        assert_eq!(warnings, vec!["unknown field \"extra\"".to_string()]);
        // ...and the wrong ones refused, naming what was expected.
        let mut o = json!({"apiVersion": "v1", "kind": "Secret"});
        let e = check_body(cms, &mut o, &opts, &mut warnings).err().unwrap();
        assert!(
            e.message
                .contains("does not match the expected kind (ConfigMap)"),
            "{}",
            e.message
        );
        let mut o = json!({"apiVersion": "apps/v1", "kind": "ConfigMap"});
        let e = check_body(cms, &mut o, &opts, &mut warnings).err().unwrap();
        assert!(
            e.message
                .contains("(apps/v1) does not match the expected API version (v1)"),
            "{}",
            e.message
        );
        // A field of the wrong type says where.
        let mut o = json!({"data": {"k": 1}});
        let e = check_body(cms, &mut o, &opts, &mut warnings).err().unwrap();
        assert!(e.message.contains("data.k"), "{}", e.message);
    }
}
