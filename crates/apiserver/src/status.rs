//! kube's `Status` errors: every failure the API answers is one of these, with the
//! HTTP code, kube's reason and, for invalid objects, the causes with field paths.

use serde_json::{json, Value};

use crate::request::Response;

/// One reason an object is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// kube's cause type (FieldValueRequired, FieldValueInvalid, ...).
    pub reason: &'static str,
    /// The field path (`spec.containers[0].name`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Cause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// A required field is missing, with why it is needed.
    pub fn required_because(field: impl Into<String>, why: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {why}"),
        }
    }

    /// A field that may not be set (here, or together with another).
    pub fn forbidden(field: impl Into<String>, why: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {why}"),
        }
    }

    /// A field has a bad value.
    pub fn invalid(field: impl Into<String>, value: &str, why: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {}", json!(value), why.into()),
        }
    }

    /// A field that may not change was changed.
    pub fn immutable(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: "field is immutable".into(),
        }
    }

    /// A value outside the allowed set.
    pub fn not_supported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Cause {
        let list: Vec<String> = allowed.iter().map(|a| json!(a).to_string()).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                json!(value),
                list.join(", ")
            ),
        }
    }

    /// Two entries of a list have the same key.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {}", json!(value)),
        }
    }

    /// A field that is not in the schema (fieldValidation=Strict).
    pub fn unknown(field: impl Into<String>) -> Cause {
        let f = field.into();
        Cause {
            reason: "FieldValueInvalid",
            message: format!("unknown field \"{f}\""),
            field: f,
        }
    }
}

/// An error answer of the API.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// kube's machine-readable reason (NotFound, AlreadyExists, Conflict, Invalid...).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// The object's name, when the error is about one.
    pub name: Option<String>,
    /// The object's group.
    pub group: Option<String>,
    /// The resource or kind.
    pub kind: Option<String>,
    /// Field causes (422 Invalid).
    pub causes: Vec<Cause>,
    /// Seconds after which a client may retry (429/503/504).
    pub retry_after: Option<u32>,
}

/// How kube's messages for preconditions that do not hold begin.
const PRECONDITION_FAILED: &str = "Precondition failed";

impl ApiError {
    /// An error with a code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: None,
            group: None,
            kind: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 404 NotFound for `resource` (plural, with group suffix) `name`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        let what = qualified(group, resource);
        let mut e = ApiError::new(404, "NotFound", format!("{what} \"{name}\" not found"));
        e.name = Some(name.into());
        e.group = Some(group.into()).filter(|g: &String| !g.is_empty());
        e.kind = Some(resource.into());
        e
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        let what = qualified(group, resource);
        let mut e = ApiError::new(
            409,
            "AlreadyExists",
            format!("{what} \"{name}\" already exists"),
        );
        e.name = Some(name.into());
        e.group = Some(group.into()).filter(|g: &String| !g.is_empty());
        e.kind = Some(resource.into());
        e
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> ApiError {
        let what = qualified(group, resource);
        let mut e = ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
        e.name = Some(name.into());
        e.group = Some(group.into()).filter(|g: &String| !g.is_empty());
        e.kind = Some(resource.into());
        e
    }

    /// kube's 409 for a uid precondition that does not hold (`want` asked for, `have`
    /// found): unlike a lost race, trying again changes nothing.
    pub fn uid_precondition(
        group: &str,
        resource: &str,
        name: &str,
        want: &str,
        have: &str,
    ) -> ApiError {
        let mut e = ApiError::conflict(group, resource, name);
        e.message = format!(
            "{PRECONDITION_FAILED}: UID in precondition: {want}, UID in object meta: {have}"
        );
        e
    }

    /// Whether this is a conflict that a new try from the store's latest copy may
    /// not meet: another write won the race, not a precondition that does not hold.
    pub fn is_lost_race(&self) -> bool {
        self.reason == "Conflict" && !self.message.starts_with(PRECONDITION_FAILED)
    }

    /// 422 Invalid with causes.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let body = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {body}"),
        );
        e.name = Some(name.into());
        e.group = Some(group.into()).filter(|g: &String| !g.is_empty());
        e.kind = Some(kind.into());
        e.causes = causes;
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// 500 InternalError (storage failures and the like).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// 410 Gone / Expired: a resourceVersion too old to serve.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// The `Status` object of this error.
    pub fn to_status(&self) -> Value {
        let mut details = serde_json::Map::new();
        if let Some(n) = &self.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = &self.group {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &self.kind {
            details.insert("kind".into(), json!(k));
        }
        if !self.causes.is_empty() {
            details.insert(
                "causes".into(),
                Value::Array(
                    self.causes
                        .iter()
                        .map(
                            |c| json!({"reason": c.reason, "message": c.message, "field": c.field}),
                        )
                        .collect(),
                ),
            );
        }
        if let Some(s) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(s));
        }
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty() {
            v["details"] = Value::Object(details);
        }
        v
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl From<berth_store::Error> for ApiError {
    fn from(e: berth_store::Error) -> ApiError {
        match e {
            berth_store::Error::Compacted { requested, compacted } => ApiError::gone(format!(
                "The resourceVersion for the provided list is too old: {requested} (oldest available {compacted})"
            )),
            berth_store::Error::Future { requested, current } => {
                let mut e = ApiError::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {requested}, current: {current}"),
                );
                e.retry_after = Some(1);
                e
            }
            berth_store::Error::Backend(m) => {
                let mut e = ApiError::new(503, "ServiceUnavailable", format!("storage unavailable: {m}"));
                e.retry_after = Some(1);
                e
            }
            berth_store::Error::Conflict { key, .. } => ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {key}: the object has been modified; please apply your changes to the latest version and try again"),
            ),
            berth_store::Error::NotFound(key) => ApiError::new(404, "NotFound", format!("{key} not found")),
            berth_store::Error::Exists(key) => ApiError::new(409, "AlreadyExists", format!("{key} already exists")),
        }
    }
}

impl Response {
    /// The Status response of an error.
    pub fn error(e: &ApiError) -> Response {
        let mut r = Response::json(e.code, &e.to_status());
        if let Some(s) = e.retry_after {
            r.headers.push(("retry-after".into(), s.to_string()));
        }
        r
    }
}
