//! rbac.authorization.k8s.io objects as kube-apiserver checks them: every rule has
//! verbs and either resources (with API groups) or non-resource URLs (cluster roles
//! only); a binding's roleRef names a Role or ClusterRole and never changes; its
//! subjects are users, groups or ServiceAccounts (with a namespace where needed).

use serde_json::Value;

use super::{arr, s};
use crate::status::Cause;

const GROUP: &str = "rbac.authorization.k8s.io";

/// A Role's or ClusterRole's rules.
pub(super) fn role(o: &Value, cluster: bool, out: &mut Vec<Cause>) {
    for (i, r) in arr(o, "/rules").iter().enumerate() {
        let p = format!("rules[{i}]");
        if arr(r, "/verbs").is_empty() {
            out.push(Cause::required(format!("{p}.verbs")));
        }
        let urls = arr(r, "/nonResourceURLs");
        let resources = arr(r, "/resources");
        if !urls.is_empty() {
            if !cluster {
                out.push(Cause::invalid(
                    format!("{p}.nonResourceURLs"),
                    &urls
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !resources.is_empty() || !arr(r, "/apiGroups").is_empty() {
                out.push(Cause::invalid(
                    format!("{p}.nonResourceURLs"),
                    "",
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else {
            if arr(r, "/apiGroups").is_empty() {
                out.push(Cause::required_because(
                    format!("{p}.apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if resources.is_empty() {
                out.push(Cause::required_because(
                    format!("{p}.resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        }
    }
}

/// A RoleBinding's or ClusterRoleBinding's roleRef and subjects.
pub(super) fn binding(o: &Value, old: Option<&Value>, cluster: bool, out: &mut Vec<Cause>) {
    let kinds: &[&str] = if cluster {
        &["ClusterRole"]
    } else {
        &["Role", "ClusterRole"]
    };
    match o.get("roleRef").filter(|r| r.is_object()) {
        None => out.push(Cause::required("roleRef")),
        Some(r) => {
            if s(r, "/apiGroup") != Some(GROUP) {
                out.push(Cause::not_supported(
                    "roleRef.apiGroup",
                    s(r, "/apiGroup").unwrap_or(""),
                    &[GROUP],
                ));
            }
            let kind = s(r, "/kind").unwrap_or("");
            if !kinds.contains(&kind) {
                out.push(Cause::not_supported("roleRef.kind", kind, kinds));
            }
            if s(r, "/name").is_none_or(str::is_empty) {
                out.push(Cause::required("roleRef.name"));
            }
        }
    }
    if let Some(old) = old {
        if old.get("roleRef") != o.get("roleRef") {
            out.push(Cause::invalid("roleRef", "", "cannot change roleRef"));
        }
    }
    for (i, sub) in arr(o, "/subjects").iter().enumerate() {
        let p = format!("subjects[{i}]");
        let kind = s(sub, "/kind").unwrap_or("");
        if s(sub, "/name").is_none_or(str::is_empty) {
            out.push(Cause::required(format!("{p}.name")));
        }
        match kind {
            "User" | "Group" => {
                if s(sub, "/apiGroup") != Some(GROUP) {
                    out.push(Cause::not_supported(
                        format!("{p}.apiGroup"),
                        s(sub, "/apiGroup").unwrap_or(""),
                        &[GROUP],
                    ));
                }
            }
            "ServiceAccount" => {
                if s(sub, "/apiGroup").is_some_and(|g| !g.is_empty()) {
                    out.push(Cause::not_supported(
                        format!("{p}.apiGroup"),
                        s(sub, "/apiGroup").unwrap_or(""),
                        &[""],
                    ));
                }
                if cluster && s(sub, "/namespace").is_none_or(str::is_empty) {
                    out.push(Cause::required(format!("{p}.namespace")));
                }
            }
            other => out.push(Cause::not_supported(
                format!("{p}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}
