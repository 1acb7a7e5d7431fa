//! Load balancer status, as k3s's servicelb writes it: a LoadBalancer Service (of no
//! `loadBalancerClass`) is reached on every Ready node's address at its port (each
//! node's Service proxy takes that address as the Service's), so its
//! `status.loadBalancer.ingress` lists those addresses; an Ingress of berth's class
//! (or of none) gets the addresses of the Ready nodes running the Ingress proxy. Both
//! follow the nodes as they come, go and change readiness.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{json, Value};

use berth_pods::services::{INGRESS_CLASS, INGRESS_CONTROLLER, INGRESS_PROXY_NODE_LABEL};

use crate::informer::{itself, Change};
use crate::{Error, Shared};

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
}

/// The InternalIPs of the Ready nodes (`proxy_only`: those running the Ingress
/// proxy), sorted.
fn node_addresses(nodes: &Store<Node>, proxy_only: bool) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .state()
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            !proxy_only
                || n.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(INGRESS_PROXY_NODE_LABEL))
                    .is_some_and(|v| v == "true")
        })
        .filter(|n| berth_pods::readiness::node_is_ready(n))
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn ingress_list(ips: &[String]) -> Value {
    Value::Array(
        ips.iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect(),
    )
}

/// Makes `obj`'s `status.loadBalancer.ingress` the `wanted` list.
async fn write_status<K>(obj: &K, wanted: Value, client: &kube::Client) -> Result<Action, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let now = serde_json::to_value(obj)
        .ok()
        .and_then(|o| o.pointer("/status/loadBalancer/ingress").cloned())
        .unwrap_or_else(|| json!([]));
    if now == wanted {
        return Ok(Action::await_change());
    }
    let meta = obj.meta();
    let (ns, name) = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"status": {"loadBalancer": {"ingress": wanted}}});
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    Ok(Action::await_change())
}

async fn reconcile_service(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let spec = svc.spec.as_ref();
    // Another implementation's (a loadBalancerClass) is left alone.
    if spec.and_then(|s| s.load_balancer_class.as_ref()).is_some() {
        return Ok(Action::await_change());
    }
    // Ours is cleared when the Service stops being a LoadBalancer.
    let wanted = if spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        ingress_list(&node_addresses(&ctx.nodes, false))
    } else {
        json!([])
    };
    write_status(svc.as_ref(), wanted, &ctx.client).await
}

async fn reconcile_ingress(ing: Arc<Ingress>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !berth_pods::services::ingress_is_berths(&ing) {
        return Ok(Action::await_change());
    }
    let ips = node_addresses(&ctx.nodes, true);
    let wanted = Value::Array(ips.iter().map(|ip| json!({"ip": ip})).collect());
    write_status(ing.as_ref(), wanted, &ctx.client).await
}

/// berth's IngressClass, the cluster's default (as k3s installs Traefik's).
pub fn default_class() -> IngressClass {
    serde_json::from_value(json!({
        "metadata": {"name": INGRESS_CLASS,
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": INGRESS_CONTROLLER},
    }))
    .expect("a valid IngressClass")
}

/// The two controllers, ready to run once the shared informers run.
pub fn controllers(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::SERVICE),
        nodes: shared.nodes.store(),
    });
    // Any node change may change every address list.
    let services = shared.services.store();
    let all_services = shared.nodes.trigger(move |_: &Change<'_, Node>| {
        services
            .state()
            .iter()
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    });
    let ingresses = shared.ingresses.store();
    let all_ingresses = shared.nodes.trigger(move |_: &Change<'_, Node>| {
        ingresses
            .state()
            .iter()
            .map(|i| ObjectRef::from_obj(i.as_ref()))
            .collect()
    });
    let svc = crate::drive(
        "servicelb",
        shared.services.store(),
        futures_util::stream::select(shared.services.trigger(itself), all_services),
        reconcile_service,
        ctx.clone(),
    );
    let ing = crate::drive(
        "ingress-status",
        shared.ingresses.store(),
        futures_util::stream::select(shared.ingresses.trigger(itself), all_ingresses),
        reconcile_ingress,
        ctx,
    );
    async move {
        tokio::join!(svc, ing);
    }
}
