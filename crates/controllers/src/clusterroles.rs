//! ClusterRole aggregation, as kube-controller-manager's clusterrole-aggregation
//! controller: a ClusterRole with an aggregationRule gets as its rules those of every
//! ClusterRole its selectors match (in name order, each rule once), so a CRD's author
//! can extend admin, edit and view by labelling a role `aggregate-to-view` and the
//! like.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::informer::Change;
use crate::{Error, Shared};

struct Ctx {
    client: kube::Client,
    roles: Store<ClusterRole>,
}

/// The rules `role` aggregates from `all` (None: it aggregates nothing).
pub fn aggregate(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = &role.aggregation_rule.as_ref()?.cluster_role_selectors;
    let selectors = selectors.as_deref().unwrap_or_default();
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            let labels = r.metadata.labels.clone().unwrap_or_default();
            selectors
                .iter()
                .any(|s| berth_pods::labels::matches(s, &labels))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in sources {
        for rule in r.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::CLUSTERROLE_AGGREGATION),
        roles: shared.cluster_roles.store(),
    });
    // Any change may change what an aggregating role selects: all of those look again
    // (there are a handful).
    let store = shared.cluster_roles.store();
    let trigger = shared
        .cluster_roles
        .trigger(move |_c: &Change<'_, ClusterRole>| {
            store
                .state()
                .iter()
                .filter(|r| r.aggregation_rule.is_some())
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect()
        });
    crate::drive(
        "clusterrole-aggregation",
        shared.cluster_roles.store(),
        trigger,
        reconcile,
        ctx,
    )
}

async fn reconcile(role: Arc<ClusterRole>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(rules) = aggregate(&role, &ctx.roles.state()) else {
        return Ok(Action::await_change());
    };
    if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
        return Ok(Action::await_change());
    }
    let name = role.metadata.name.clone().unwrap_or_default();
    let api: Api<ClusterRole> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({"rules": rules});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(role = %name, rules = rules.len(), "aggregated ClusterRole updated")
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(v: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn aggregation_collects_matching_roles_in_name_order() {
        let view = role(json!({"metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to-view": "true"}}]}}));
        let a = role(
            json!({"metadata": {"name": "b-widgets", "labels": {"aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
        );
        let b = role(
            json!({"metadata": {"name": "a-pods", "labels": {"aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                      {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
        );
        let other = role(json!({"metadata": {"name": "other"},
            "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}));
        let all = vec![view.clone(), a, b, other.clone()];
        let rules = aggregate(&view, &all).unwrap();
        let resources: Vec<_> = rules
            .iter()
            .map(|r| r.resources.clone().unwrap()[0].clone())
            .collect();
        assert_eq!(
            resources,
            ["pods", "widgets"],
            "each rule once, roles by name"
        );
        assert!(aggregate(&other, &all).is_none());
    }
}
