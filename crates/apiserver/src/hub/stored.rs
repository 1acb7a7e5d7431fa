//! One object as the watch hub keeps it: its JSON (resourceVersion set), which is
//! what watchers are sent, and the few facts label and field selectors read. A
//! decoded serde_json tree costs several times its JSON's size (every non-empty map
//! is a B-tree node of hundreds of bytes), and the hub holds every object and the
//! versions its recent changes replaced: as bytes, that stays near the data's size.

use bytes::Bytes;
use serde_json::Value;

use crate::selector::{field_text, selectable_fields, FieldSelector, LabelSelector};

/// One object's JSON and what selectors read of it.
pub struct Stored {
    json: Bytes,
    /// Labels, sorted by key.
    labels: Box<[(Box<str>, Box<str>)]>,
    /// The selectable fields the object has (see [`selectable_fields`]).
    fields: Box<[(&'static str, Box<str>)]>,
    /// The uids its ownerReferences name.
    owners: Box<[Box<str>]>,
}

impl Stored {
    /// `v` encoded, its labels and selectable fields noted.
    pub fn new(v: &Value) -> Stored {
        let mut labels: Vec<(Box<str>, Box<str>)> = v
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str().into(), v.as_str()?.into())))
                    .collect()
            })
            .unwrap_or_default();
        labels.sort_unstable();
        let fields = selectable_fields()
            .iter()
            .filter_map(|p| Some((*p, field_text(v, p)?.into_boxed_str())))
            .collect();
        let owners = v
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r.get("uid").and_then(Value::as_str))
                    .map(Box::from)
                    .collect()
            })
            .unwrap_or_default();
        let mut json = serde_json::to_vec(v).unwrap_or_default();
        // Kept for long: without the slack the encoder's doubling left.
        json.shrink_to_fit();
        Stored {
            json: Bytes::from(json),
            labels: labels.into_boxed_slice(),
            fields,
            owners,
        }
    }

    /// The uids the object's ownerReferences name.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.owners.iter().map(|u| u.as_ref())
    }

    /// The object's JSON.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The object decoded.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_ref())
    }

    /// The text of a selectable field (see [`selectable_fields`]), None where the
    /// object lacks it.
    pub fn field(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether the object matches both selectors.
    pub fn matches(&self, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches_by(|k| self.label(k))
            && fields.matches_by(|p| self.field(p).map(std::borrow::Cow::Borrowed))
    }

    /// A JSON watch line (newline-terminated) of an event of type `kind` about the
    /// object: the same bytes [`super::event_line`] makes of it decoded.
    pub fn event_line(&self, kind: &str) -> Bytes {
        let mut v = Vec::with_capacity(self.json.len() + kind.len() + 24);
        v.extend_from_slice(b"{\"type\":\"");
        v.extend_from_slice(kind.as_bytes());
        v.extend_from_slice(b"\",\"object\":");
        v.extend_from_slice(&self.json);
        v.extend_from_slice(b"}\n");
        Bytes::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_the_facts_as_they_match_the_object() {
        let o = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns",
                         "labels": {"app": "web", "tier": "fe", "z": "1"}},
            "spec": {"nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running"}
        });
        let s = Stored::new(&o);
        for (l, f) in [
            ("app=web", ""),
            ("app=db", ""),
            ("tier in (fe,be),!missing", "spec.nodeName=n1"),
            ("z", "spec.nodeName!=n1"),
            ("", "spec.nodeName="),
            ("", "spec.hostNetwork=true"),
            ("", "spec.restartPolicy="),
            ("", "metadata.name=p,metadata.namespace=ns"),
            ("", "status.phase!=Running"),
            ("app notin (web)", ""),
        ] {
            let labels = LabelSelector::parse(l).unwrap();
            let fields = FieldSelector::parse(f, "Pod").unwrap();
            assert_eq!(
                s.matches(&labels, &fields),
                labels.matches(&o) && fields.matches(&o),
                "{l} / {f}"
            );
        }
        let fields = FieldSelector::parse("spec.unschedulable=false", "Node").unwrap();
        assert!(Stored::new(&json!({"spec": {}})).matches(&LabelSelector::default(), &fields));
    }

    #[test]
    fn event_lines_are_those_of_the_decoded_object() {
        let o = json!({"metadata": {"name": "a", "resourceVersion": "7"}, "data": {"k": "v"}});
        let s = Stored::new(&o);
        assert_eq!(
            s.event_line("MODIFIED"),
            super::super::event_line("MODIFIED", &o)
        );
        assert_eq!(s.value(), o);
    }
}
