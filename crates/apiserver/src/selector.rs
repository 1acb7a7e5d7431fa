//! Label and field selectors, as kube parses them: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a`, `!a` for labels; `path=value`, `path!=value` for the fields a
//! resource supports.

use serde_json::Value;

use crate::status::ApiError;

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (empty: everything).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl LabelSelector {
    /// Parses `s`; a bad selector is a 400 naming it.
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {why} (labelSelector {s:?})"
            ))
        };
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let set_op = |op: &str| -> Option<(String, Vec<String>)> {
                let i = p.find(op)?;
                let key = p[..i].trim();
                let rest = p[i + op.len()..].trim();
                let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
                Some((
                    key.to_string(),
                    inner
                        .split(',')
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty())
                        .collect(),
                ))
            };
            let req = if let Some((k, vs)) = set_op(" notin ") {
                Req::NotIn(k, vs)
            } else if let Some((k, vs)) = set_op(" in ") {
                Req::In(k, vs)
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else {
                Req::Exists(p.into())
            };
            let key = match &req {
                Req::Eq(k, _)
                | Req::Ne(k, _)
                | Req::In(k, _)
                | Req::NotIn(k, _)
                | Req::Exists(k)
                | Req::NotExists(k) => k,
            };
            if !valid_key(key) {
                return Err(bad(&format!("invalid label key {key:?}")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's labels match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.matches_by(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Whether labels read through `get` (a label's value by key) match.
    pub fn matches_by<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields each kind can be selected on, beyond metadata.name and
/// metadata.namespace: one table, which both parsing and the watch hub's kept fields
/// read.
const SELECTABLE: &[(&str, &[&str])] = &[
    (
        "Pod",
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    ),
    (
        "Event",
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
        ],
    ),
    ("Secret", &["type"]),
    ("Namespace", &["status.phase"]),
    ("Node", &["spec.unschedulable"]),
    ("Job", &["status.successful"]),
    ("ReplicaSet", &["status.replicas"]),
];

/// The fields `kind` can be selected on, beyond metadata.name and metadata.namespace.
fn supported(kind: &str) -> &'static [&'static str] {
    SELECTABLE
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, fields)| fields)
}

/// Every field some kind can be selected on, metadata.name and metadata.namespace
/// first (each once): what the watch hub keeps of an object for field selectors.
pub fn selectable_fields() -> &'static [&'static str] {
    static ALL: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = vec!["metadata.name", "metadata.namespace"];
        for f in SELECTABLE.iter().flat_map(|(_, fields)| fields.iter()) {
            if !all.contains(f) {
                all.push(f);
            }
        }
        all
    })
}

/// The text a field selector compares for the field at `path` (dotted) of `obj`;
/// None where it is absent or null (the selector then compares a default).
pub fn field_text(obj: &Value, path: &str) -> Option<String> {
    let mut cur = Some(obj);
    for seg in path.split('.') {
        cur = cur.and_then(|c| c.get(seg));
    }
    match cur? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

impl FieldSelector {
    /// Parses `s` for `kind`; unsupported fields are a 400 as with kube.
    pub fn parse(s: &str, kind: &str) -> Result<FieldSelector, ApiError> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let (k, neg, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{p}'; can't understand '{p}'"
                )));
            };
            let k = k.trim();
            if k != "metadata.name" && k != "metadata.namespace" && !supported(kind).contains(&k) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            out.push((k.to_string(), neg, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether an object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_by(|path| field_text(obj, path).map(std::borrow::Cow::Owned))
    }

    /// Whether fields read through `get` (a field's text by dotted path, as
    /// [`field_text`] gives it) match.
    pub fn matches_by<'a>(&self, get: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>) -> bool {
        self.0.iter().all(|(path, neg, want)| {
            let have = get(path.as_str()).unwrap_or_else(|| {
                if path == "spec.unschedulable" || path == "spec.hostNetwork" {
                    "false".into()
                } else {
                    "".into()
                }
            });
            (have == want.as_str()) != *neg
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_like_kube() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        for (s, want) in [
            ("app=web", true),
            ("app==web,tier=fe", true),
            ("app!=web", false),
            ("app in (db, web)", true),
            ("app notin (web)", false),
            ("env notin (prod)", true),
            ("tier", true),
            ("!tier", false),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(s).unwrap().matches(&o), want, "{s}");
        }
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors_check_supported_fields() {
        let p = json!({"metadata": {"name": "x"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("status.phase=Running", "Pod")
            .unwrap()
            .matches(&p));
        assert!(!FieldSelector::parse("metadata.name!=x", "Pod")
            .unwrap()
            .matches(&p));
        let e = FieldSelector::parse("spec.foo=1", "Pod").unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.foo");
    }
}
