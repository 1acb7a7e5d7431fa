//! `x-kubernetes-validations`: the CEL rules a custom resource's schema carries,
//! checked when a definition is written (each rule and messageExpression must
//! compile, reasons and field paths be known) and evaluated as kube-apiserver
//! evaluates them: at each schema node with rules, `self` is the value there (typed
//! by its schema: `date-time` strings as timestamps, `byte` strings as bytes,
//! `number`s as doubles), `oldSelf` the value at the same place in the object being
//! replaced (found through object fields and map-list keys), and a rule that reads
//! `oldSelf` (a transition rule) runs only on updates where there is an old value,
//! unless `optionalOldSelf` makes `oldSelf` an optional.
//!
//! CEL and Kubernetes' libraries for it (strings, lists, sets, regex, math, URLs,
//! IPs and CIDRs, quantities, semver, format) are kube-rs's `kube-cel`; what is
//! here is the apiserver's side: when rules run, with what `self` and `oldSelf`, and
//! how their failures read.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use kube_cel::cel::objects::{Key, OptionalValue};
use kube_cel::cel::{Context, Program, Value as Cel};
use kube_cel::KubeCelExt;
use serde_json::{Map, Value};

use super::values::join;
use crate::status::Cause;

/// Where rules sit in a schema node.
pub const RULES: &str = "x-kubernetes-validations";

/// The reasons a rule may give its failures (kube's FieldValueErrorReason).
const REASONS: &[&str] = &[
    "FieldValueInvalid",
    "FieldValueForbidden",
    "FieldValueRequired",
    "FieldValueDuplicate",
];

/// At most this many compiled expressions are kept; past it the cache starts over
/// (definitions are few; this bounds what a churn of definitions could pin).
const CACHE_LIMIT: usize = 4096;

/// One expression compiled, and whether it reads `oldSelf`.
struct Compiled {
    program: Program,
    transition: bool,
}

static COMPILED: LazyLock<Mutex<HashMap<String, Arc<Compiled>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// `source` compiled (once: later calls share the program), or why it does not.
fn compile(source: &str) -> Result<Arc<Compiled>, String> {
    if let Some(c) = COMPILED.lock().unwrap().get(source) {
        return Ok(c.clone());
    }
    let program = Program::compile(source).map_err(|e| e.to_string())?;
    let transition = program.references().has_variable("oldSelf");
    let c = Arc::new(Compiled {
        program,
        transition,
    });
    let mut cache = COMPILED.lock().unwrap();
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(source.to_string(), c.clone());
    Ok(c)
}

/// Everything wrong with the rules of one schema node at `path` (the definition's
/// field path to the node): what kube refuses when a definition is written.
pub fn check_rules(s: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(rules) = s.get(RULES) else {
        return;
    };
    let Some(rules) = rules.as_array() else {
        out.push(Cause::invalid(
            format!("{path}.{RULES}"),
            &rules.to_string(),
            "must be a list of rules",
        ));
        return;
    };
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{path}.{RULES}[{i}]");
        let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        let rule = text("rule");
        let mut transition = false;
        if rule.trim().is_empty() {
            out.push(Cause::required(format!("{at}.rule")));
        } else {
            match compile(rule) {
                Ok(c) => transition = c.transition,
                Err(e) => out.push(Cause::invalid(
                    format!("{at}.rule"),
                    rule,
                    format!("compilation failed: {e}"),
                )),
            }
        }
        let message = text("message");
        if r.get("message").is_some() && message.trim().is_empty() {
            out.push(Cause::required_because(
                format!("{at}.message"),
                "message must be non-empty if specified",
            ));
        }
        if message.contains('\n') {
            out.push(Cause::invalid(
                format!("{at}.message"),
                message,
                "message must not contain line breaks",
            ));
        }
        let expr = text("messageExpression");
        if r.get("messageExpression").is_some() && expr.trim().is_empty() {
            out.push(Cause::required_because(
                format!("{at}.messageExpression"),
                "messageExpression must be non-empty if specified",
            ));
        } else if !expr.is_empty() {
            if let Err(e) = compile(expr) {
                out.push(Cause::invalid(
                    format!("{at}.messageExpression"),
                    expr,
                    format!("messageExpression compilation failed: {e}"),
                ));
            }
        }
        if let Some(reason) = r.get("reason") {
            let reason = reason.as_str().unwrap_or("");
            if !REASONS.contains(&reason) {
                out.push(Cause::not_supported(
                    format!("{at}.reason"),
                    reason,
                    REASONS,
                ));
            }
        }
        let field_path = text("fieldPath");
        if !field_path.is_empty() && !field_path_resolves(s, field_path) {
            out.push(Cause::invalid(
                format!("{at}.fieldPath"),
                field_path,
                "fieldPath must be a valid path: it names no field of the schema",
            ));
        }
        if r.get("optionalOldSelf") == Some(&Value::Bool(true)) && !transition {
            out.push(Cause::forbidden(
                format!("{at}.optionalOldSelf"),
                "may not be set if oldSelf is not used in rule",
            ));
        }
    }
}

/// Whether a rule's `fieldPath` (`.spec.replicas`, `.items['a.b']`) names a field
/// under `s`.
fn field_path_resolves(s: &Value, path: &str) -> bool {
    let mut node = s;
    let mut rest = path;
    while !rest.is_empty() {
        let (name, tail) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            (&r[..end], &r[end..])
        } else if let Some(r) = rest.strip_prefix("['") {
            match r.find("']") {
                Some(end) => (&r[..end], &r[end + 2..]),
                None => return false,
            }
        } else {
            return false;
        };
        let next = node
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()));
        match next {
            Some(n) if !name.is_empty() => node = n,
            _ => return false,
        }
        rest = tail;
    }
    true
}

/// Every rule of `schema` (one with rules) that `o` breaks; `old` is the object it replaces (None on
/// a create). `schema_errors`: what the schema's other checks found; as kube, rules
/// are not run on values of the wrong type (CEL reads values as the schema types
/// them), and the client is told some were left out.
pub fn validate(
    schema: &Value,
    o: &Value,
    old: Option<&Value>,
    schema_errors: &[Cause],
    out: &mut Vec<Cause>,
) {
    // As kube: rules read values as the schema types them and may index what
    // should be there, so errors of these kinds keep them from running.
    const BLOCKING: &[&str] = &[
        "FieldValueTypeInvalid",
        "FieldValueNotSupported",
        "FieldValueRequired",
        "FieldValueTooLong",
        "FieldValueTooMany",
    ];
    if schema_errors.iter().any(|c| BLOCKING.contains(&c.reason)) {
        out.push(Cause {
            reason: "FieldValueInvalid",
            field: String::new(),
            message: "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
        });
        return;
    }
    walk(schema, o, old, "", true, out);
}

/// Whether any node of `s` has rules (found once per definition: see
/// `Custom::rules`).
pub fn has_rules(s: &Value) -> bool {
    match s {
        Value::Object(m) => m.contains_key(RULES) || m.values().any(has_rules),
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

fn walk(s: &Value, v: &Value, old: Option<&Value>, path: &str, root: bool, out: &mut Vec<Cause>) {
    if v.is_null() {
        return;
    }
    if let Some(Value::Array(rules)) = s.get(RULES) {
        // Ratcheting, as kube (1.30 on): a value the update leaves as it was is not
        // refused by rules that do not read oldSelf, so an object made before a
        // stricter rule can still have its finalizers, labels or other fields changed.
        let unchanged = old == Some(v);
        run(s, rules, v, old, unchanged, path, root, out);
    }
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if root && k == "metadata" {
                    continue;
                }
                if let Some(cs) = props.and_then(|p| p.get(k)).or(extra) {
                    let was = old.and_then(|o| o.get(k));
                    walk(cs, child, was, &join(path, k), false, out);
                }
            }
        }
        Value::Array(items) => {
            let Some(is) = s.get("items").filter(|i| i.is_object()) else {
                return;
            };
            // Only a map-list's items have an identity across versions (their keys):
            // other lists' items are new values, without an old one.
            let keys = super::values::map_keys(s);
            let olds = old.and_then(Value::as_array);
            for (i, it) in items.iter().enumerate() {
                let was = match olds {
                    Some(olds) if !keys.is_empty() => olds
                        .iter()
                        .find(|o| keys.iter().all(|k| o.get(*k) == it.get(*k))),
                    _ => None,
                };
                walk(is, it, was, &format!("{path}[{i}]"), false, out);
            }
        }
        _ => {}
    }
}

/// The rules of one node, against its value.
#[allow(clippy::too_many_arguments)]
fn run(
    s: &Value,
    rules: &[Value],
    v: &Value,
    old: Option<&Value>,
    unchanged: bool,
    path: &str,
    root: bool,
    out: &mut Vec<Cause>,
) {
    let type_name = if root {
        "object"
    } else {
        s.get("type").and_then(Value::as_str).unwrap_or("")
    };
    let mut this = None;
    let mut was = None;
    for r in rules {
        let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        let rule = text("rule");
        let optional_old = r.get("optionalOldSelf") == Some(&Value::Bool(true));
        let fail = |detail: String, out: &mut Vec<Cause>| {
            let fp = text("fieldPath");
            let field = match fp.strip_prefix('.') {
                Some(rest) => join(path, rest),
                None => format!("{path}{fp}"),
            };
            out.push(failure(field, type_name, detail, text("reason")));
        };
        let c = match compile(rule) {
            Ok(c) => c,
            Err(e) => {
                fail(format!("compilation failed: {e}"), out);
                continue;
            }
        };
        if (c.transition && old.is_none() && !optional_old) || (unchanged && !c.transition) {
            continue;
        }
        let this = this.get_or_insert_with(|| typed(s, v, root)).clone();
        let was =
            c.transition.then(
                || match was.get_or_insert_with(|| old.map(|o| typed(s, o, root))) {
                    Some(o) if optional_old => Cel::Opaque(Arc::new(OptionalValue::of(o.clone()))),
                    Some(o) => o.clone(),
                    None => Cel::Opaque(Arc::new(OptionalValue::none())),
                },
            );
        let failed = FUNCTIONS.with(|functions| {
            let mut ctx = functions.new_inner_scope();
            ctx.add_variable_from_value("self", this);
            if let Some(was) = was {
                ctx.add_variable_from_value("oldSelf", was);
            }
            match c.program.execute(&ctx) {
                Ok(Cel::Bool(true)) => None,
                Ok(Cel::Bool(false)) => Some(
                    message(r, &ctx).unwrap_or_else(|| format!("failed rule: {}", rule.trim())),
                ),
                Ok(other) => Some(format!(
                    "rule evaluated to {}, not a bool, evaluating rule: {}",
                    other.type_of(),
                    rule.trim()
                )),
                Err(e) => Some(format!("{e} evaluating rule: {}", rule.trim())),
            }
        });
        if let Some(detail) = failed {
            fail(detail, out);
        }
    }
}

/// The failure message a rule gives: its messageExpression's string when that
/// evaluates to a non-empty one, else its message.
fn message(r: &Value, ctx: &Context) -> Option<String> {
    let expr = r
        .get("messageExpression")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !expr.is_empty() {
        if let Ok(Cel::String(s)) =
            compile(expr).and_then(|c| c.program.execute(ctx).map_err(|e| e.to_string()))
        {
            if !s.trim().is_empty() && !s.contains('\n') {
                return Some(s.to_string());
            }
        }
    }
    r.get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// A failed rule as kube reports it, by the rule's reason.
fn failure(field: String, type_name: &str, detail: String, reason: &str) -> Cause {
    let (reason, message) = match reason {
        "FieldValueForbidden" => ("FieldValueForbidden", format!("Forbidden: {detail}")),
        "FieldValueRequired" => ("FieldValueRequired", format!("Required value: {detail}")),
        "FieldValueDuplicate" => (
            "FieldValueDuplicate",
            format!("Duplicate value: \"{type_name}\""),
        ),
        _ => (
            "FieldValueInvalid",
            format!("Invalid value: \"{type_name}\": {detail}"),
        ),
    };
    Cause {
        reason,
        field,
        message,
    }
}

thread_local! {
    /// Kubernetes' functions, registered once per thread (a context is not Sync);
    /// each evaluation binds its variables in a scope of its own over it.
    static FUNCTIONS: Context<'static> = Context::default().with_all();
}

/// `v` as CEL sees it under schema `s`; at the root, of `metadata` only the name
/// and generateName (as kube exposes them).
fn typed(s: &Value, v: &Value, root: bool) -> Cel {
    if root {
        if let Value::Object(m) = v {
            let mut m = m.clone();
            if let Some(Value::Object(meta)) = m.get("metadata") {
                let kept: Map<String, Value> = meta
                    .iter()
                    .filter(|(k, _)| *k == "name" || *k == "generateName")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                m.insert("metadata".into(), Value::Object(kept));
            }
            return to_cel(Some(s), &Value::Object(m));
        }
    }
    to_cel(Some(s), v)
}

fn to_cel(s: Option<&Value>, v: &Value) -> Cel {
    let ty = s.and_then(|s| s.get("type")).and_then(Value::as_str);
    let format = s.and_then(|s| s.get("format")).and_then(Value::as_str);
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (ty, n.as_i64()) {
            (Some("number"), _) | (_, None) => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
            (_, Some(i)) => Cel::Int(i),
        },
        Value::String(t) => match format {
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(t)
                .map(Cel::Timestamp)
                .unwrap_or_else(|_| Cel::String(Arc::new(t.clone()))),
            Some("date") => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| Cel::Timestamp(d.and_utc().fixed_offset()))
                .unwrap_or_else(|| Cel::String(Arc::new(t.clone()))),
            Some("byte") => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map(|b| Cel::Bytes(Arc::new(b)))
                    .unwrap_or_else(|_| Cel::String(Arc::new(t.clone())))
            }
            _ => Cel::String(Arc::new(t.clone())),
        },
        Value::Array(items) => {
            let is = s.and_then(|s| s.get("items"));
            Cel::List(Arc::new(items.iter().map(|i| to_cel(is, i)).collect()))
        }
        Value::Object(m) => {
            let props = s.and_then(|s| s.get("properties"));
            let extra = s.and_then(|s| s.get("additionalProperties"));
            let map: HashMap<Key, Cel> = m
                .iter()
                .map(|(k, x)| {
                    let cs = props.and_then(|p| p.get(k)).or(extra);
                    (Key::from(k.clone()), to_cel(cs, x))
                })
                .collect();
            Cel::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.minReplicas <= self.replicas", "message": "minReplicas must be <= replicas"},
                    {"rule": "self.replicas < 100"},
                    {"rule": "self.replicas != 13", "messageExpression": "'replicas ' + string(self.replicas) + ' is unlucky'"},
                    {"rule": "!has(self.mode) || self.mode == oldSelf.mode", "reason": "FieldValueForbidden", "fieldPath": ".mode", "message": "mode is immutable"}],
                "properties": {
                    "replicas": {"type": "integer"},
                    "minReplicas": {"type": "integer"},
                    "mode": {"type": "string"},
                    "ratio": {"type": "number", "x-kubernetes-validations": [{"rule": "self <= 1.0"}]},
                    "start": {"type": "string", "format": "date-time",
                        "x-kubernetes-validations": [{"rule": "self < timestamp('2030-01-01T00:00:00Z')", "message": "too late"}]},
                    "weights": {"type": "array", "items": {"type": "integer"},
                        "x-kubernetes-validations": [{"rule": "self.isSorted() && self.sum() <= 10 && self.max() == self[size(self) - 1] && self.min() == self[0]", "message": "bad weights"}]},
                    "code": {"type": "string", "x-kubernetes-validations": [{"rule": "self.find('[0-9]+') == '42' && self.findAll('[a-z]').size() == 2 && self.lowerAscii() == self", "message": "bad code"}]},
                    "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                            "x-kubernetes-validations": [{"rule": "self.port >= oldSelf.port", "message": "ports only grow"}]}}}}},
            "x-kubernetes-validations": [
                {"rule": "self.metadata.name.startsWith('w') && !has(self.metadata.labels)", "message": "names start with w"}]})
    }

    fn obj(spec: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "labels": {"a": "b"}}, "spec": spec})
    }

    fn errors(o: &Value, old: Option<&Value>) -> Vec<String> {
        let mut out = Vec::new();
        validate(&schema(), o, old, &[], &mut out);
        out.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn rules_pass_and_fail_with_kubes_messages() {
        let good = obj(
            json!({"replicas": 3, "minReplicas": 1, "mode": "a", "ratio": 1,
            "start": "2026-12-06T10:00:00Z", "weights": [1, 2, 3], "code": "ab42",
            "ports": [{"name": "http", "port": 80}]}),
        );
        assert_eq!(errors(&good, None), Vec::<String>::new());
        let bad = obj(json!({"replicas": 13, "minReplicas": 20, "ratio": 1.5,
            "start": "2031-01-01T00:00:00Z", "weights": [3, 2, 9], "code": "AB42"}));
        assert_eq!(
            errors(&bad, None),
            [
                "spec: Invalid value: \"object\": minReplicas must be <= replicas",
                "spec: Invalid value: \"object\": replicas 13 is unlucky",
                "spec.code: Invalid value: \"string\": bad code",
                "spec.ratio: Invalid value: \"number\": failed rule: self <= 1.0",
                "spec.start: Invalid value: \"string\": too late",
                "spec.weights: Invalid value: \"array\": bad weights",
            ]
        );
        let mut named = obj(json!({"replicas": 100, "minReplicas": 1}));
        named["metadata"]["name"] = json!("x1");
        assert_eq!(
            errors(&named, None),
            [
                ": Invalid value: \"object\": names start with w",
                "spec: Invalid value: \"object\": failed rule: self.replicas < 100",
            ]
        );
    }

    #[test]
    fn transition_rules_run_on_updates_against_the_old_value() {
        let old = obj(json!({"replicas": 3, "minReplicas": 1, "mode": "a",
            "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}));
        // Unchanged, and a map-list item found by its key wherever it moved.
        let same = obj(json!({"replicas": 4, "minReplicas": 1, "mode": "a",
            "ports": [{"name": "https", "port": 443}, {"name": "http", "port": 81}, {"name": "new", "port": 1}]}));
        assert_eq!(errors(&same, Some(&old)), Vec::<String>::new());
        let changed = obj(json!({"replicas": 3, "minReplicas": 1, "mode": "b",
            "ports": [{"name": "http", "port": 79}]}));
        assert_eq!(
            errors(&changed, Some(&old)),
            [
                "spec.mode: Forbidden: mode is immutable",
                "spec.ports[0]: Invalid value: \"object\": ports only grow",
            ]
        );
    }

    #[test]
    fn values_an_update_leaves_alone_are_not_refused_again() {
        // Stored before the rules held it to them: replicas 100.
        let old = obj(json!({"replicas": 100, "minReplicas": 1}));
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"] = json!({"a": "c"});
        assert_eq!(errors(&relabelled, Some(&old)), Vec::<String>::new());
        let changed = obj(json!({"replicas": 100, "minReplicas": 2}));
        assert_eq!(
            errors(&changed, Some(&old)),
            ["spec: Invalid value: \"object\": failed rule: self.replicas < 100"]
        );
    }

    #[test]
    fn a_missing_field_is_an_evaluation_error_and_type_errors_stop_the_rules() {
        let o = obj(json!({"replicas": 3}));
        let got = errors(&o, None);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("spec: Invalid value: \"object\": ")
                && got[0].ends_with("evaluating rule: self.minReplicas <= self.replicas"),
            "{got:?}"
        );
        let mut out = Vec::new();
        let type_error = Cause {
            reason: "FieldValueTypeInvalid",
            field: "spec.replicas".into(),
            message: String::new(),
        };
        validate(&schema(), &o, None, &[type_error], &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0]
            .message
            .contains("some validation rules were not checked"));
    }

    #[test]
    fn definitions_with_bad_rules_are_refused() {
        let s = json!({"type": "object", "properties": {"a": {"type": "string"}},
            "x-kubernetes-validations": [
                {"rule": "self.a ==", "message": "x"},
                {"rule": "self.a == 'x'", "reason": "Nope", "fieldPath": ".b"},
                {"rule": "self.a == 'x'", "optionalOldSelf": true, "message": "two\nlines"},
                {"rule": "self.a == oldSelf.a", "optionalOldSelf": true, "fieldPath": ".a", "messageExpression": "'a' +"},
                {"rule": ""}]});
        let mut out = Vec::new();
        check_rules(&s, "s", &mut out);
        let got: Vec<String> = out
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        for want in [
            "s.x-kubernetes-validations[0].rule: Invalid value: \"self.a ==\": compilation failed",
            "s.x-kubernetes-validations[1].reason: Unsupported value: \"Nope\"",
            "s.x-kubernetes-validations[1].fieldPath: Invalid value: \".b\"",
            "s.x-kubernetes-validations[2].message: Invalid value",
            "s.x-kubernetes-validations[2].optionalOldSelf: Forbidden",
            "s.x-kubernetes-validations[3].messageExpression: Invalid value",
            "s.x-kubernetes-validations[4].rule: Required value",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{want}\nin {got:#?}"
            );
        }
        assert_eq!(got.len(), 7, "{got:#?}");
    }
}
