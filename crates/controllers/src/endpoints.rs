//! The EndpointSlice and Endpoints controllers, as kube's: for every Service with a
//! selector, the pods it selects that have an IP, as EndpointSlices (at most 100
//! endpoints each, grouped by the ports their named target ports resolve to, with
//! ready, serving and terminating conditions) and as the older Endpoints object
//! (ready and not-ready addresses; terminating pods left out). Services without a
//! selector are left to their users.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_pods::readiness;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::index::Index;
use crate::informer::{controller_owner, itself, Change};
use crate::{owner, Error, Shared};

/// The label naming a slice's Service.
pub use berth_pods::services::SERVICE_NAME_LABEL;
/// The label saying which controller manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of it (kube's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// A resolved port set: (name, port, protocol) per Service port.
type PortSet = Vec<(String, i32, String)>;
/// Ready and not-ready addresses of one port set (an Endpoints subset).
type Addresses = (Vec<EndpointAddress>, Vec<EndpointAddress>);

/// The most endpoints in one slice (kube's --max-endpoints-per-slice default).
const PER_SLICE: usize = 100;

struct Ctx {
    client: kube::Client,
    pods: Arc<Index<Pod>>,
    slices: Arc<Index<EndpointSlice>>,
    endpoints: Store<Endpoints>,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let services = shared.services.store();
    // A pod wakes the Services of its namespace that select it (before or after).
    let by_pod = shared.pods.trigger(move |c: &Change<'_, Pod>| {
        let (old, new): (Option<&Pod>, &Pod) = match c {
            Change::Applied { old, new } => (old.as_deref(), *new),
            Change::Deleted(p) => (None, *p),
        };
        // Only what endpoints are made of matters.
        if let Some(o) = old {
            let facts = |p: &Pod| {
                (
                    p.metadata.labels.clone(),
                    p.metadata.deletion_timestamp.is_some(),
                    p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                    p.status.as_ref().and_then(|s| s.phase.clone()),
                    readiness::is_ready(p),
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                )
            };
            if facts(o) == facts(new) {
                return Vec::new();
            }
        }
        let ns = new.metadata.namespace.clone().unwrap_or_default();
        services
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|s| {
                [Some(new), old]
                    .into_iter()
                    .flatten()
                    .any(|p| selects(s, p))
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    });
    let by_endpoints = shared.endpoints.trigger(|c: &Change<'_, Endpoints>| {
        let e = match c {
            Change::Applied { new, .. } => *new,
            Change::Deleted(e) => *e,
        };
        let ns = e.metadata.namespace.clone().unwrap_or_default();
        e.metadata
            .name
            .iter()
            .map(|n| ObjectRef::new(n).within(&ns))
            .collect()
    });
    let queue = futures_util::stream::select(
        futures_util::stream::select(shared.services.trigger(itself), by_pod),
        futures_util::stream::select(
            shared
                .endpointslices
                .trigger(controller_owner::<EndpointSlice, Service>),
            by_endpoints,
        ),
    );
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::ENDPOINTSLICE),
        pods: shared.pods_by_namespace.clone(),
        slices: shared.endpointslices_by_owner.clone(),
        endpoints: shared.endpoints.store(),
    });
    crate::drive("endpoints", shared.services.store(), queue, reconcile, ctx)
}

/// The Service's selector, if it has one (an empty one selects nothing here).
fn selector(s: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = s.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|m| !m.is_empty())
}

fn selects(s: &Service, p: &Pod) -> bool {
    selector(s).is_some_and(|sel| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    })
}

/// The container port a target port means on this pod (a named one is looked up).
fn resolve(target: Option<&IntOrString>, port: i32, pod: &Pod) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(name)) => pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }),
    }
}

fn target_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace.clone(),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if svc.metadata.deletion_timestamp.is_some() || selector(&svc).is_none() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .get(&ns)
        .into_iter()
        .filter(|p| selects(&svc, p))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some_and(|ip| !ip.is_empty())
        })
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let svc_ports = spec.ports.clone().unwrap_or_default();

    // Endpoints grouped by the ports they resolve to.
    let mut groups: BTreeMap<PortSet, Vec<Endpoint>> = BTreeMap::new();
    let mut subsets: BTreeMap<PortSet, Addresses> = BTreeMap::new();
    for p in &pods {
        let ports: Option<PortSet> = svc_ports
            .iter()
            .map(|sp| {
                let port = resolve(sp.target_port.as_ref(), sp.port, p)?;
                Some((
                    sp.name.clone().unwrap_or_default(),
                    port,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        let Some(ports) = ports else { continue };
        let terminating = p.metadata.deletion_timestamp.is_some();
        let serving = readiness::is_ready(p) || publish_not_ready;
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let hostname = p
            .spec
            .as_ref()
            .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
            .and_then(|s| s.hostname.clone());
        groups.entry(ports.clone()).or_default().push(Endpoint {
            addresses: vec![ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(serving && !terminating),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname.clone(),
            node_name: node.clone(),
            target_ref: Some(target_ref(p)),
            ..Default::default()
        });
        if !terminating {
            let addr = EndpointAddress {
                ip,
                hostname,
                node_name: node,
                target_ref: Some(target_ref(p)),
            };
            let e = subsets.entry(ports).or_default();
            if serving {
                e.0.push(addr)
            } else {
                e.1.push(addr)
            }
        }
    }

    // The slices wanted: each port group in chunks of 100 (one empty slice if none).
    let mut wanted: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for (ports, eps) in groups {
        let ports: Vec<EndpointPort> = ports
            .into_iter()
            .map(|(n, port, proto)| EndpointPort {
                name: Some(n),
                port: Some(port),
                protocol: Some(proto),
                app_protocol: None,
            })
            .collect();
        for chunk in eps.chunks(PER_SLICE) {
            wanted.push((ports.clone(), chunk.to_vec()));
        }
    }
    if wanted.is_empty() {
        wanted.push((Vec::new(), Vec::new()));
    }
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let mut have = ctx.slices.owned(&uid);
    have.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    for (i, (ports, endpoints)) in wanted.iter().enumerate() {
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let ports = (!ports.is_empty()).then(|| ports.clone());
        match have.get(i) {
            Some(cur)
                if cur.endpoints == *endpoints
                    && cur.ports == ports
                    && cur.metadata.labels.as_ref() == Some(&labels) => {}
            Some(cur) => {
                let mut s = (**cur).clone();
                s.endpoints = endpoints.clone();
                s.ports = ports;
                s.metadata.labels = Some(labels);
                api.replace(
                    s.metadata.name.as_deref().unwrap_or_default(),
                    &PostParams::default(),
                    &s,
                )
                .await?;
            }
            None => {
                let s = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(crate::generate_prefix(&name)),
                        namespace: Some(ns.clone()),
                        labels: Some(labels),
                        owner_references: Some(vec![owner::reference_to(svc.as_ref())]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints: endpoints.clone(),
                    ports,
                };
                api.create(&PostParams::default(), &s).await?;
            }
        }
    }
    for extra in have.iter().skip(wanted.len()) {
        let dp = berth_watch::delete_exactly(extra.metadata.uid.clone(), None, false);
        match api
            .delete(extra.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The Endpoints object.
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(n, port, proto)| CorePort {
                        name: (!n.is_empty()).then_some(n),
                        port,
                        protocol: Some(proto),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        })
        .collect();
    let mut subsets = subsets;
    let over = truncate(&mut subsets).then(|| TRUNCATED.to_string());
    // A subset left with no address at all is not valid.
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let eapi: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    match ctx.endpoints.get(&ObjectRef::new(&name).within(&ns)) {
        Some(cur) if cur.subsets == subsets && over_capacity(&cur.metadata) == over => {}
        Some(cur) => {
            let mut e = (*cur).clone();
            e.subsets = subsets;
            mark_over_capacity(&mut e.metadata, over);
            eapi.replace(&name, &PostParams::default(), &e).await?;
        }
        None => {
            let mut metadata = ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: svc.metadata.labels.clone(),
                ..Default::default()
            };
            mark_over_capacity(&mut metadata, over);
            let e = Endpoints { metadata, subsets };
            match eapi.create(&PostParams::default(), &e).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}

/// The most addresses one Endpoints object holds, as kube caps it (the rest are only in
/// the EndpointSlices).
const MAX_ENDPOINTS: usize = 1000;

/// The annotation kube puts on an Endpoints object it cut to [`MAX_ENDPOINTS`].
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// Its value.
const TRUNCATED: &str = "truncated";

fn over_capacity(m: &ObjectMeta) -> Option<String> {
    m.annotations.as_ref()?.get(OVER_CAPACITY).cloned()
}

fn mark_over_capacity(m: &mut ObjectMeta, over: Option<String>) {
    match over {
        Some(v) => {
            m.annotations
                .get_or_insert_with(Default::default)
                .insert(OVER_CAPACITY.to_string(), v);
        }
        None => {
            if let Some(a) = m.annotations.as_mut() {
                a.remove(OVER_CAPACITY);
            }
        }
    }
}

/// Cuts `subsets` to [`MAX_ENDPOINTS`] addresses as kube does: ready addresses first
/// (not-ready ones only fill what is left), each subset keeping its share. Returns
/// whether anything was cut.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let len = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| len(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| len(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_ENDPOINTS {
        return false;
    }
    let ready_budget = ready.min(MAX_ENDPOINTS);
    share(subsets, |s| &mut s.addresses, ready, ready_budget);
    share(
        subsets,
        |s| &mut s.not_ready_addresses,
        not_ready,
        MAX_ENDPOINTS - ready_budget,
    );
    true
}

/// Keeps `budget` of the `total` addresses in `field` of the subsets, each subset its
/// proportional share rounded up, while the budget lasts.
fn share(
    subsets: &mut [EndpointSubset],
    field: impl Fn(&mut EndpointSubset) -> &mut Option<Vec<EndpointAddress>>,
    total: usize,
    budget: usize,
) {
    if total <= budget {
        return;
    }
    let mut left = budget;
    let last = subsets.len().saturating_sub(1);
    for (i, s) in subsets.iter_mut().enumerate() {
        let v = field(s);
        let have = v.as_ref().map_or(0, Vec::len);
        let share = if i == last {
            left
        } else {
            (have * budget).div_ceil(total)
        };
        let keep = share.min(have).min(left);
        if let Some(list) = v.as_mut() {
            list.truncate(keep);
        }
        if keep == 0 {
            *v = None;
        }
        left -= keep;
    }
}

#[cfg(test)]
mod truncation_tests {
    use super::*;

    fn subset(ready: usize, not_ready: usize) -> EndpointSubset {
        let addrs = |n: usize, base: usize| {
            (n > 0).then(|| {
                (0..n)
                    .map(|i| EndpointAddress {
                        ip: format!("10.{}.{}.{}", base, i / 256, i % 256),
                        ..Default::default()
                    })
                    .collect()
            })
        };
        EndpointSubset {
            addresses: addrs(ready, 1),
            not_ready_addresses: addrs(not_ready, 2),
            ports: None,
        }
    }

    fn counts(s: &[EndpointSubset]) -> Vec<(usize, usize)> {
        s.iter()
            .map(|x| {
                (
                    x.addresses.as_ref().map_or(0, Vec::len),
                    x.not_ready_addresses.as_ref().map_or(0, Vec::len),
                )
            })
            .collect()
    }

    #[test]
    fn an_endpoints_object_holds_at_most_a_thousand_addresses_ready_first() {
        let mut s = vec![subset(600, 0), subset(300, 300)];
        assert!(truncate(&mut s));
        assert_eq!(counts(&s), vec![(600, 0), (300, 100)]);
        let mut s = vec![subset(1500, 10), subset(500, 0)];
        assert!(truncate(&mut s));
        assert_eq!(counts(&s), vec![(750, 0), (250, 0)]);
        let mut s = vec![subset(999, 1)];
        assert!(!truncate(&mut s));
        assert_eq!(counts(&s), vec![(999, 1)]);
        // Rounded up while the budget lasts: the whole thousand is kept.
        let mut s = vec![subset(500, 0), subset(500, 0), subset(1, 0)];
        assert!(truncate(&mut s));
        let kept: usize = counts(&s).iter().map(|c| c.0 + c.1).sum();
        assert_eq!(kept, 1000);
    }
}
