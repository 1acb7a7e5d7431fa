//! RBAC's escalation check: a user may write a Role or ClusterRole only with rules it
//! already holds (or the `escalate` verb on it), and a binding only to a role whose
//! rules it holds where the binding applies (or the `bind` verb on that role) — so
//! the right to manage roles in a namespace never becomes more rights.

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

use super::{rules, Attributes, Authorizer, Decision, MASTERS};
use crate::request::User;
use crate::resources::Resource;
use crate::status::ApiError;

const GROUP: &str = "rbac.authorization.k8s.io";

/// Refuses `obj` (a Role, ClusterRole, RoleBinding or ClusterRoleBinding written by
/// `user` in `ns`) when it grants what `user` does not hold; other kinds pass.
pub fn check(
    authz: &Authorizer,
    user: &User,
    res: &Resource,
    ns: Option<&str>,
    obj: &Value,
) -> Result<(), ApiError> {
    if res.group != GROUP || user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let may = |verb: &str, resource: &str, name: &str| {
        matches!(
            authz.authorize(&Attributes::resource(
                user,
                verb,
                ns,
                GROUP,
                resource,
                None,
                Some(name)
            )),
            Decision::Allow(_)
        )
    };
    let wanted: Vec<PolicyRule> = match res.plural {
        "roles" | "clusterroles" => {
            if may("escalate", res.plural, name) {
                return Ok(());
            }
            if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                // Its rules will be whatever the selected roles grant: only a holder
                // of every right may make one.
                vec![PolicyRule {
                    verbs: vec!["*".into()],
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    ..Default::default()
                }]
            } else {
                serde_json::from_value(obj.get("rules").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default()
            }
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref: RoleRef = match obj.get("roleRef").cloned().map(serde_json::from_value) {
                Some(Ok(r)) => r,
                // Validation names what is wrong with it.
                _ => return Ok(()),
            };
            let role_resource = if role_ref.kind == "ClusterRole" {
                "clusterroles"
            } else {
                "roles"
            };
            if may("bind", role_resource, &role_ref.name) {
                return Ok(());
            }
            let ix = authz.index();
            let rules = if role_ref.kind == "ClusterRole" {
                ix.cluster_role(&role_ref.name)
            } else {
                ns.and_then(|ns| ix.role(ns, &role_ref.name))
            };
            match rules {
                Some(r) => r.as_ref().clone(),
                None => {
                    let mut e = ApiError::new(
                        404,
                        "NotFound",
                        format!("{role_resource}.{GROUP} {:?} not found", role_ref.name),
                    );
                    e.group = Some(GROUP.into());
                    e.kind = Some(role_resource.into());
                    e.name = Some(role_ref.name);
                    return Err(e);
                }
            }
        }
        _ => return Ok(()),
    };
    let owned = authz.index().rules_for(user, ns);
    let owned: Vec<&PolicyRule> = owned.iter().collect();
    let missing = rules::uncovered(&owned, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(rules::describe).collect();
    let mut e = ApiError::forbidden(format!(
        "{}.{GROUP} {name:?} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
        res.plural,
        user.name,
        user.groups,
        list.join("\n")
    ));
    e.group = Some(GROUP.into());
    e.kind = Some(res.plural.into());
    e.name = Some(name.into());
    Err(e)
}
