//! The registry of custom resources: follows the CustomResourceDefinitions in the
//! hub (an observer, so a definition is served as soon as the hub has it) and keeps
//! the resource table's custom part (`resources::set_custom`) to every served version
//! of every definition whose names are accepted.
//!
//! The table holds `&'static Resource`s, as the built-in part does; a custom
//! resource is leaked once per distinct definition of a version and reused while the
//! definition stays the same (interned), so memory grows only with real changes to
//! definitions, never with requests or restarts of the watch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::Notify;

use super::custom::{Column, Custom, ScalePaths};
use crate::hub::Observer;
use crate::resources::{self, Backing, Resource, Strategy};

/// Where definitions are stored.
pub const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Whether a definition's names are accepted, and why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Names {
    /// Served under them.
    Accepted,
    /// In use by another resource: (reason, message) of the NamesAccepted condition.
    Conflict(&'static str, String),
}

#[derive(Default)]
struct State {
    /// Definitions by name.
    defs: BTreeMap<String, Arc<Value>>,
    /// The outcome for each definition.
    names: HashMap<String, Names>,
    /// Every resource made so far, by what it was made of.
    interned: HashMap<String, &'static Resource>,
}

/// The registry (one per server; the table it keeps is the process's).
#[derive(Default)]
pub struct Registry {
    state: Mutex<State>,
    /// Woken after each change, for the definitions' controller.
    pub changed: Notify,
}

impl Registry {
    /// The definitions now, with whether their names are accepted.
    pub fn definitions(&self) -> Vec<(Arc<Value>, Names)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.defs
            .iter()
            .map(|(n, d)| {
                let names = st.names.get(n).cloned().unwrap_or(Names::Accepted);
                (d.clone(), names)
            })
            .collect()
    }

    fn rebuild(&self, st: &mut State) {
        let mut order: Vec<&Arc<Value>> = st.defs.values().collect();
        // The first definition to claim a name keeps it (as kube's naming
        // controller): those already serving under accepted names first, then by age.
        order.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    accepted_names(v).is_none(),
                    str_at(v, "/metadata/creationTimestamp"),
                    name_of(v),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut taken: Vec<(String, String)> = Vec::new(); // (group, name) pairs in use
        for r in resources::RESOURCES {
            taken.push((r.group.to_string(), r.plural.to_string()));
            taken.push((r.group.to_string(), r.kind.to_string()));
        }
        let conflict = |taken: &[(String, String)], group: &str, plural: &str, kind: &str| {
            if taken.iter().any(|(g, n)| g == group && n == plural) {
                Some(Names::Conflict(
                    "PluralConflict",
                    format!("\"{plural}\" is already in use"),
                ))
            } else if taken.iter().any(|(g, n)| g == group && n == kind) {
                Some(Names::Conflict(
                    "KindConflict",
                    format!("\"{kind}\" is already in use"),
                ))
            } else {
                None
            }
        };
        let mut names = HashMap::new();
        let mut list = Vec::new();
        for d in order {
            let name = name_of(d);
            let group = str_at(d, "/spec/group");
            let plural = str_at(d, "/spec/names/plural");
            let kind = str_at(d, "/spec/names/kind");
            let outcome = conflict(&taken, &group, &plural, &kind).unwrap_or(Names::Accepted);
            // Names changed into a conflict: still served under the names accepted
            // before, as kube keeps serving them.
            let served_as: Option<Arc<Value>> = match &outcome {
                Names::Accepted => Some(d.clone()),
                Names::Conflict(..) => accepted_names(d)
                    .filter(|(p, k)| conflict(&taken, &group, p, k).is_none())
                    .map(|_| {
                        let mut v = (**d).clone();
                        v["spec"]["names"] = v["status"]["acceptedNames"].clone();
                        Arc::new(v)
                    }),
            };
            if let Some(d) = served_as {
                taken.push((group.clone(), str_at(&d, "/spec/names/plural")));
                taken.push((group, str_at(&d, "/spec/names/kind")));
                // A definition's resources change only with its spec (its generation),
                // its accepted names or its deletion: made again only then.
                let base = format!(
                    "{}|{}|{}|{}|{}",
                    name,
                    str_at(&d, "/metadata/uid"),
                    d.pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    d.pointer("/metadata/deletionTimestamp").is_some(),
                    str_at(&d, "/spec/names/plural"),
                );
                let served = served_versions(&d);
                let known: Option<Vec<&'static Resource>> = served
                    .iter()
                    .map(|v| st.interned.get(&format!("{base}|{v}")).copied())
                    .collect();
                match known {
                    Some(rs) => list.extend(rs),
                    None => {
                        for v in versions_of(&d) {
                            let key = format!("{base}|{}", v.version);
                            let r = *st.interned.entry(key).or_insert_with(|| v.leak());
                            list.push(r);
                        }
                    }
                }
            }
            names.insert(name, outcome);
        }
        st.names = names;
        resources::set_custom(list);
    }
}

/// The names a definition's status says were accepted (plural and kind), if any.
fn accepted_names(d: &Value) -> Option<(String, String)> {
    let plural = str_at(d, "/status/acceptedNames/plural");
    let kind = str_at(d, "/status/acceptedNames/kind");
    (!plural.is_empty() && !kind.is_empty()).then_some((plural, kind))
}

impl Observer for Registry {
    fn reset(&self, objects: &mut dyn Iterator<Item = (&str, Value)>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.defs = objects.map(|(_, v)| (name_of(&v), Arc::new(v))).collect();
        self.rebuild(&mut st);
        drop(st);
        self.changed.notify_one();
    }

    fn changed(&self, key: &str, object: Option<&Value>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let name = key.strip_prefix(PREFIX).unwrap_or(key).to_string();
        match object {
            Some(v) => {
                st.defs.insert(name, Arc::new(v.clone()));
            }
            None => {
                st.defs.remove(&name);
            }
        }
        self.rebuild(&mut st);
        drop(st);
        self.changed.notify_one();
    }
}

fn name_of(v: &Value) -> String {
    str_at(v, "/metadata/name")
}

fn str_at(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// One served version of a definition: everything its resource is made of.
struct Version {
    group: String,
    version: String,
    kind: String,
    plural: String,
    short_names: Vec<String>,
    categories: Vec<String>,
    subresources: Vec<String>,
    namespaced: bool,
    custom: Custom,
}

fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn leak_strs(v: Vec<String>) -> &'static [&'static str] {
    Box::leak(
        v.into_iter()
            .map(leak_str)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn no_schema_name() -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Borrowed("")
}

fn no_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::Schema::default()
}

fn any_object(_: &Value) -> Result<(), (String, String)> {
    Ok(())
}

impl Version {
    /// The version as a resource of the table, for good (see the module's comment).
    fn leak(self) -> &'static Resource {
        Box::leak(Box::new(Resource {
            group: leak_str(self.group),
            version: leak_str(self.version),
            kind: leak_str(self.kind),
            plural: leak_str(self.plural),
            short_names: leak_strs(self.short_names),
            namespaced: self.namespaced,
            categories: leak_strs(self.categories),
            subresources: leak_strs(self.subresources),
            // Other served versions are served through the storage version.
            backing: if self.custom.storage {
                Backing::Store
            } else {
                Backing::Converted
            },
            strategy: Strategy::Plain,
            schema_name: no_schema_name,
            schema: no_schema,
            decode: any_object,
            custom: Some(Box::leak(Box::new(self.custom))),
        }))
    }
}

/// The names of a definition's served versions.
fn served_versions(d: &Value) -> Vec<String> {
    d.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served") == Some(&Value::Bool(true)))
        .map(|v| str_at(v, "/name"))
        .collect()
}

/// Each served version of a definition.
fn versions_of(d: &Value) -> Vec<Version> {
    let group = str_at(d, "/spec/group");
    let names = d.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let plural = str_at(&names, "/plural");
    let kind = str_at(&names, "/kind");
    let singular = match str_at(&names, "/singular") {
        s if s.is_empty() => kind.to_ascii_lowercase(),
        s => s,
    };
    let list_kind = match str_at(&names, "/listKind") {
        s if s.is_empty() => format!("{kind}List"),
        s => s,
    };
    let short_names = strings(names.get("shortNames"));
    let categories = strings(names.get("categories"));
    let namespaced = str_at(d, "/spec/scope") != "Cluster";
    let terminating = d.pointer("/metadata/deletionTimestamp").is_some();
    let mut out = Vec::new();
    for v in d
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served") != Some(&Value::Bool(true)) {
            continue;
        }
        let version = str_at(v, "/name");
        let subs = v.get("subresources");
        let mut subresources = Vec::new();
        if subs.and_then(|s| s.get("status")).is_some() {
            subresources.push("status".to_string());
        }
        let scale = subs.and_then(|s| s.get("scale")).map(|s| ScalePaths {
            spec_replicas: str_at(s, "/specReplicasPath"),
            status_replicas: str_at(s, "/statusReplicasPath"),
            label_selector: s
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
        if scale.is_some() {
            subresources.push("scale".to_string());
        }
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| Column {
                        name: str_at(c, "/name"),
                        kind: str_at(c, "/type"),
                        format: str_at(c, "/format"),
                        description: str_at(c, "/description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: str_at(c, "/jsonPath"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let custom = Custom {
            definition: name_of(d),
            definition_uid: str_at(d, "/metadata/uid"),
            singular: singular.clone(),
            list_kind: list_kind.clone(),
            defaults: schema.as_ref().is_some_and(super::values::has_defaults),
            rules: schema.as_ref().is_some_and(super::cel::has_rules),
            schema,
            columns,
            scale,
            storage: v.get("storage") == Some(&Value::Bool(true)),
            terminating,
        };
        out.push(Version {
            group: group.clone(),
            version,
            kind: kind.clone(),
            plural: plural.clone(),
            short_names: short_names.clone(),
            categories: categories.clone(),
            subresources,
            namespaced,
            custom,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(plural: &str, kind: &str, created: &str) -> Value {
        json!({"metadata": {"name": format!("{plural}.x.example.com"), "creationTimestamp": created},
               "spec": {"group": "x.example.com", "scope": "Namespaced",
                        "names": {"plural": plural, "kind": kind, "shortNames": ["s"]},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                                      "subresources": {"status": {}}},
                                     {"name": "v2", "served": false, "storage": false}]}})
    }

    #[test]
    fn accepted_definitions_are_served_and_the_first_keeps_a_name() {
        let r = Registry::default();
        let mut a = def("widgets", "Widget", "2026-01-01T00:00:00Z");
        a["status"]["acceptedNames"] = json!({"plural": "widgets", "kind": "Widget"});
        let b = def("gadgets", "Widget", "2026-01-02T00:00:00Z");
        r.reset(&mut [("k1", a.clone()), ("k2", b.clone())].into_iter());
        let widgets = resources::find("x.example.com", "v1", "widgets").expect("served");
        assert_eq!(widgets.kind, "Widget");
        assert_eq!(widgets.subresources, ["status"]);
        assert_eq!(widgets.short_names, ["s"]);
        assert!(widgets
            .custom
            .is_some_and(|c| c.storage && c.list_kind == "WidgetList"));
        assert!(
            resources::find("x.example.com", "v2", "widgets").is_none(),
            "v2 is not served"
        );
        assert!(resources::find("x.example.com", "v1", "gadgets").is_none());
        let names: Vec<Names> = r.definitions().into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            [
                Names::Conflict("KindConflict", "\"Widget\" is already in use".into()),
                Names::Accepted
            ]
        );
        // An unchanged definition is the same resource (interned, not leaked again).
        r.changed(&format!("{PREFIX}widgets.x.example.com"), Some(&a));
        let again = resources::find("x.example.com", "v1", "widgets").unwrap();
        assert!(std::ptr::eq(widgets, again));
        // Built-in names are taken.
        let pods = json!({"metadata": {"name": "pods.x.example.com"},
                          "spec": {"group": "", "names": {"plural": "pods", "kind": "Pod"},
                                   "versions": [{"name": "v1", "served": true, "storage": true}]}});
        r.changed(&format!("{PREFIX}pods.x.example.com"), Some(&pods));
        assert!(r
            .definitions()
            .iter()
            .any(|(d, n)| d["metadata"]["name"] == "pods.x.example.com"
                && matches!(n, Names::Conflict("PluralConflict", _))));
        // Names changed into a conflict: served under the names accepted before.
        let mut renamed = def("gadgets", "Gadget", "2026-01-02T00:00:00Z");
        renamed["status"]["acceptedNames"] = json!({"plural": "gadgets", "kind": "Gadget"});
        r.changed(&format!("{PREFIX}gadgets.x.example.com"), Some(&renamed));
        assert_eq!(
            resources::find("x.example.com", "v1", "gadgets")
                .unwrap()
                .kind,
            "Gadget"
        );
        renamed["spec"]["names"]["kind"] = json!("Widget");
        r.changed(&format!("{PREFIX}gadgets.x.example.com"), Some(&renamed));
        assert_eq!(
            resources::find("x.example.com", "v1", "gadgets").map(|r| r.kind),
            Some("Gadget"),
            "still served as it was accepted"
        );
        assert!(r
            .definitions()
            .iter()
            .any(|(d, n)| d["metadata"]["name"] == "gadgets.x.example.com"
                && matches!(n, Names::Conflict("KindConflict", _))));
        // A definition deleted is no longer served.
        r.changed(&format!("{PREFIX}widgets.x.example.com"), None);
        assert!(resources::find("x.example.com", "v1", "widgets").is_none());
    }
}
