//! The scheduler's view of the cluster, as kube-scheduler's cache keeps it: each
//! node with the sums of what its pods request, kept up to date from the pod and node
//! watches (one update per event, never a rescan), and the pods this scheduler has
//! placed but not yet seen bound ("assumed"), so that two decisions in a row never
//! count on the same room.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use berth_pods::HostPort;

use crate::quantities::Quantities;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodAffinityTerm};

/// Every resource a pod asks for by name (requests, or limits standing for them).
pub fn requested_resources(pod: &Pod) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    }) {
        if let Some(r) = &c.resources {
            for m in [&r.requests, &r.limits].into_iter().flatten() {
                out.extend(m.keys().cloned());
            }
        }
    }
    out
}

/// What a pod needs of a node: its effective request of each resource it names (CPU
/// in millicores) and its host ports. Computed once per pod, not once per node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Needs {
    /// Resource name → effective request.
    pub requests: Quantities,
    /// Host ports it takes.
    pub ports: Vec<HostPort>,
}

impl Needs {
    /// What `pod` needs.
    pub fn of(pod: &Pod) -> Needs {
        Needs {
            requests: requested_resources(pod)
                .into_iter()
                .map(|r| {
                    let v = berth_pods::pod_request(pod, &r);
                    (r, v)
                })
                .collect(),
            ports: berth_pods::host_ports(pod),
        }
    }

    /// Its request of resource `name` (0 when it names none).
    pub fn request(&self, name: &str) -> i128 {
        self.requests.get(name)
    }
}

/// What the inter-pod filters and scores read of a placed pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFacts {
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its required anti-affinity terms (other pods must keep away from it).
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// The UID of its controller (default spreading groups pods by it).
    pub controller: Option<String>,
    /// Being deleted (topology spread does not count it).
    pub deleting: bool,
    /// Its name.
    pub name: String,
    /// Its priority (spec.priority, 0 without one).
    pub priority: i32,
}

impl PodFacts {
    /// What `pod` shows.
    pub fn of(pod: &Pod) -> PodFacts {
        PodFacts {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            anti_affinity: pod
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
            controller: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.clone()),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            priority: priority(pod),
        }
    }
}

/// A pod's priority (spec.priority, which the Priority admission sets; 0 without).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// What one pod takes on its node.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Taken {
    pub(crate) node: String,
    pub(crate) needs: Needs,
    pub(crate) facts: Arc<PodFacts>,
}

/// A node and what its pods take.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The Node.
    pub node: Arc<Node>,
    /// Pods on it (running or about to).
    pub pods: i128,
    /// Host ports its pods hold.
    pub ports: Vec<HostPort>,
    requested: Quantities,
    /// The node's allocatable quantities, parsed once per node change rather than on
    /// every look at the node (it was a tenth of the scheduler's time).
    allocatable: Quantities,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            allocatable: parse_allocatable(&node),
            node,
            pods: 0,
            ports: Vec::new(),
            requested: Quantities::default(),
        }
    }

    fn set(&mut self, node: Arc<Node>) {
        self.allocatable = parse_allocatable(&node);
        self.node = node;
    }

    /// What the node offers of resource `name` (CPU in millicores).
    pub fn allocatable(&self, name: &str) -> i128 {
        self.allocatable.get(name)
    }

    /// What its pods request of resource `name`.
    pub fn requested(&self, name: &str) -> i128 {
        self.requested.get(name)
    }

    /// What the node offers, by resource.
    pub fn allocatable_all(&self) -> &Quantities {
        &self.allocatable
    }

    /// What its pods request, by resource.
    pub fn requested_all(&self) -> &Quantities {
        &self.requested
    }

    pub(crate) fn add(&mut self, t: &Taken) {
        self.pods += 1;
        self.requested.add(&t.needs.requests, 1);
        self.ports.extend(t.needs.ports.iter().cloned());
    }

    pub(crate) fn remove(&mut self, t: &Taken) {
        self.pods -= 1;
        self.requested.add(&t.needs.requests, -1);
        for p in &t.needs.ports {
            if let Some(i) = self.ports.iter().position(|q| q == p) {
                self.ports.swap_remove(i);
            }
        }
    }
}

/// A node's allocatable quantities (CPU in millicores); unreadable ones count as 0.
fn parse_allocatable(node: &Node) -> Quantities {
    let quantities = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    quantities
        .into_iter()
        .flatten()
        .filter_map(|(name, q)| {
            let v = if name == "cpu" {
                berth_pods::milli_value(q).ok()
            } else {
                berth_pods::value(q).ok().map(i128::from)
            };
            v.map(|v| (name.clone(), v))
        })
        .collect()
}

/// Nodes, and what every bound (or assumed) pod takes where.
#[derive(Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    /// Pod UID → what it takes.
    pods: HashMap<String, Taken>,
    /// Pods placed here and not yet seen bound (UIDs).
    assumed: BTreeSet<String>,
    /// Pods on nodes not (yet) known, by node.
    orphans: HashMap<String, Vec<String>>,
    /// Pods with required anti-affinity terms (every placement must respect them).
    with_anti_affinity: BTreeSet<String>,
    /// Controller UID → node → how many of its pods are there (default spreading).
    by_controller: HashMap<String, HashMap<String, u32>>,
    /// Namespace → its labels (affinity terms' namespaceSelector).
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Pods not yet bound that preemption made room for: UID → where and what they
    /// take. Pods of no higher priority count them as taken there.
    nominated: HashMap<String, Taken>,
    /// The node the last search for feasible nodes stopped at; the next starts after
    /// it (kube's nextStartNodeIndex): searches that stop early still visit every
    /// node in turn.
    next_start: std::sync::Mutex<Option<String>>,
}

/// Whether a pod takes room on its node: bound and not finished.
fn holds_room(pod: &Pod) -> Option<&str> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (!node.is_empty() && !matches!(phase, Some("Succeeded" | "Failed"))).then_some(node)
}

impl Cache {
    /// A node added or changed.
    pub fn set_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let node = Arc::new(node);
        match self.nodes.get_mut(&name) {
            Some(info) => info.set(node),
            None => {
                let mut info = NodeInfo::new(node);
                for uid in self.orphans.remove(&name).unwrap_or_default() {
                    if let Some(t) = self.pods.get(&uid) {
                        info.add(t);
                    }
                }
                self.nodes.insert(name, info);
            }
        }
    }

    /// A node gone.
    pub fn remove_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            let uids: Vec<String> = self
                .pods
                .iter()
                .filter(|(_, t)| t.node == name)
                .map(|(u, _)| u.clone())
                .collect();
            self.orphans.insert(name.to_string(), uids);
        }
    }

    fn take(&mut self, uid: &str, t: Taken) {
        self.forget(uid);
        if !t.facts.anti_affinity.is_empty() {
            self.with_anti_affinity.insert(uid.to_string());
        }
        if let Some(c) = &t.facts.controller {
            *self
                .by_controller
                .entry(c.clone())
                .or_default()
                .entry(t.node.clone())
                .or_default() += 1;
        }
        match self.nodes.get_mut(&t.node) {
            Some(info) => info.add(&t),
            None => self
                .orphans
                .entry(t.node.clone())
                .or_default()
                .push(uid.to_string()),
        }
        self.pods.insert(uid.to_string(), t);
    }

    fn forget(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            self.with_anti_affinity.remove(uid);
            if let Some(c) = &old.facts.controller {
                if let Some(nodes) = self.by_controller.get_mut(c) {
                    if let Some(n) = nodes.get_mut(&old.node) {
                        *n -= 1;
                        if *n == 0 {
                            nodes.remove(&old.node);
                        }
                    }
                    if nodes.is_empty() {
                        self.by_controller.remove(c);
                    }
                }
            }
            match self.nodes.get_mut(&old.node) {
                Some(info) => info.remove(&old),
                None => {
                    if let Some(o) = self.orphans.get_mut(&old.node) {
                        o.retain(|u| u != uid);
                    }
                }
            }
        }
    }

    /// A pod added or changed, as the watch saw it.
    pub fn set_pod(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref());
        self.nominate(pod, nominated);
        match holds_room(pod) {
            Some(node) => {
                self.assumed.remove(&uid);
                let t = Taken {
                    node: node.to_string(),
                    needs: Needs::of(pod),
                    facts: Arc::new(PodFacts::of(pod)),
                };
                if self.pods.get(&uid) != Some(&t) {
                    self.take(&uid, t);
                }
            }
            // Not bound yet: an assumption made meanwhile stands.
            None if self.assumed.contains(&uid) && !is_finished(pod) => {}
            None => {
                self.assumed.remove(&uid);
                self.forget(&uid);
            }
        }
    }

    /// Notes (or clears) the node preemption nominated for a pod not yet bound.
    pub fn nominate(&mut self, pod: &Pod, node: Option<&str>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match node.filter(|n| !n.is_empty()) {
            Some(n) if holds_room(pod).is_none() && !is_finished(pod) => {
                let t = Taken {
                    node: n.to_string(),
                    needs: Needs::of(pod),
                    facts: Arc::new(PodFacts::of(pod)),
                };
                self.nominated.insert(uid, t);
            }
            _ => {
                self.nominated.remove(&uid);
            }
        }
    }

    /// The node as a pod of `priority` (UID `uid`) sees it: with the room nominated
    /// to pods of at least its priority taken.
    pub fn as_seen_by<'a>(
        &self,
        info: &'a NodeInfo,
        uid: &str,
        priority: i32,
    ) -> std::borrow::Cow<'a, NodeInfo> {
        if self.nominated.is_empty() {
            return std::borrow::Cow::Borrowed(info);
        }
        let name = info.node.metadata.name.as_deref().unwrap_or_default();
        let mut out = std::borrow::Cow::Borrowed(info);
        for (u, t) in &self.nominated {
            if t.node == name && u != uid && t.facts.priority >= priority {
                out.to_mut().add(t);
            }
        }
        out
    }

    /// The placed pods of each node, for preemption.
    pub(crate) fn placed_by_node(&self) -> HashMap<&str, Vec<(&str, &Taken)>> {
        let mut out: HashMap<&str, Vec<(&str, &Taken)>> = HashMap::new();
        for (uid, t) in &self.pods {
            out.entry(t.node.as_str())
                .or_default()
                .push((uid.as_str(), t));
        }
        out
    }

    /// A pod gone.
    pub fn remove_pod(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.nominated.remove(&uid);
        self.assumed.remove(&uid);
        self.forget(&uid);
    }

    /// After a relist: forgets the nodes not in it (`names`).
    pub fn retain_nodes(&mut self, names: &std::collections::HashSet<String>) {
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            self.remove_node(&n);
        }
    }

    /// After a relist: forgets the pods not in it (`uids`), but for those assumed
    /// here (their binding may not be listed yet).
    pub fn retain_pods(&mut self, uids: &std::collections::HashSet<String>) {
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|u| !uids.contains(*u) && !self.assumed.contains(*u))
            .cloned()
            .collect();
        for u in gone {
            self.forget(&u);
        }
    }

    /// Counts `pod`, needing `needs`, on `node` before its binding is seen.
    pub fn assume(&mut self, pod: &Pod, needs: Needs, node: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.nominated.remove(&uid);
        self.assumed.insert(uid.clone());
        let node = node.to_string();
        let facts = Arc::new(PodFacts::of(pod));
        self.take(&uid, Taken { node, needs, facts });
    }

    /// Takes back an assumption whose binding failed.
    pub fn forget_assumed(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.assumed.remove(&uid) {
            self.forget(&uid);
        }
    }

    /// Whether the pod is already placed: seen bound, or assumed by this scheduler.
    pub fn is_placed(&self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        self.pods.contains_key(uid)
    }

    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// Every node once, starting at the search's next start.
    pub fn nodes_in_turn(&self) -> impl Iterator<Item = &NodeInfo> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let after = self
            .next_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // From the node after the one the last search stopped at, round to it: a
        // range by name, since stepping an index into a map of thousands of nodes
        // walks them all.
        let (tail, head) = match &after {
            Some(name) => (
                self.nodes
                    .range::<str, _>((Excluded(name.as_str()), Unbounded)),
                self.nodes
                    .range::<str, _>((Unbounded, Included(name.as_str()))),
            ),
            None => (
                self.nodes.range::<str, _>((Unbounded, Unbounded)),
                self.nodes.range::<str, _>((Unbounded, Excluded(""))),
            ),
        };
        tail.chain(head).map(|(_, info)| info)
    }

    /// A search stopped after the node named `last` (None: it looked at none): the
    /// next one starts after it.
    pub fn searched(&self, last: Option<&str>) {
        if let Some(last) = last {
            *self.next_start.lock().unwrap_or_else(|e| e.into_inner()) = Some(last.to_string());
        }
    }

    /// How many nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Every placed pod (bound or assumed): its node and facts.
    pub fn placed(&self) -> impl Iterator<Item = (&str, &PodFacts)> {
        self.pods
            .values()
            .map(|t| (t.node.as_str(), t.facts.as_ref()))
    }

    /// The placed pods with required anti-affinity terms: their node and facts.
    pub fn placed_with_anti_affinity(&self) -> impl Iterator<Item = (&str, &PodFacts)> {
        self.with_anti_affinity
            .iter()
            .filter_map(|u| self.pods.get(u))
            .map(|t| (t.node.as_str(), t.facts.as_ref()))
    }

    /// How many pods of the controller with this UID each node has.
    pub fn controller_pods(&self, uid: &str) -> Option<&HashMap<String, u32>> {
        self.by_controller.get(uid)
    }

    /// A namespace added or changed.
    pub fn set_namespace(&mut self, ns: &Namespace) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        self.namespaces.insert(name, labels);
    }

    /// A namespace gone.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Every namespace with its labels.
    pub fn namespaces(&self) -> &HashMap<String, BTreeMap<String, String>> {
        &self.namespaces
    }
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "10"}}
        }))
        .unwrap()
    }

    fn pod(uid: &str, node: &str, cpu: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                     "resources": {"requests": {"cpu": cpu}},
                     "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
        }))
        .unwrap()
    }

    fn used(c: &Cache, n: &str) -> (i128, i128, usize) {
        let info = c
            .nodes()
            .find(|i| i.node.metadata.name.as_deref() == Some(n))
            .unwrap();
        (info.pods, info.requested("cpu"), info.ports.len())
    }

    #[test]
    fn pods_are_counted_once_on_their_node_assumed_or_seen() {
        let mut c = Cache::default();
        c.set_node(node("a"));
        // Seen bound before its node is known: counted once the node comes.
        c.set_pod(&pod("p1", "b", "500m"));
        c.set_node(node("b"));
        assert_eq!(used(&c, "b"), (1, 500, 1));
        // Assumed, then seen bound: still one.
        let p2 = pod("p2", "", "250m");
        c.assume(&p2, Needs::of(&p2), "a");
        assert_eq!(used(&c, "a"), (1, 250, 1));
        c.set_pod(&p2); // the watch still shows it unbound: the assumption stands
        assert_eq!(used(&c, "a"), (1, 250, 1));
        c.set_pod(&pod("p2", "a", "250m"));
        assert_eq!(used(&c, "a"), (1, 250, 1));
        // A failed binding is taken back; a finished or deleted pod frees its room.
        let p3 = pod("p3", "", "1");
        c.assume(&p3, Needs::of(&p3), "a");
        c.forget_assumed(&p3);
        assert_eq!(used(&c, "a"), (1, 250, 1));
        let mut done = pod("p1", "b", "500m");
        done.status = Some(serde_json::from_str(r#"{"phase":"Succeeded"}"#).unwrap());
        c.set_pod(&done);
        assert_eq!(used(&c, "b"), (0, 0, 0));
        c.remove_pod(&pod("p2", "a", "250m"));
        assert_eq!(used(&c, "a"), (0, 0, 0));
        // A relist that no longer shows a pod (deleted while the watch was away).
        c.set_pod(&pod("p4", "a", "100m"));
        let p5 = pod("p5", "", "100m");
        c.assume(&p5, Needs::of(&p5), "a");
        c.retain_pods(&Default::default());
        assert_eq!(used(&c, "a"), (1, 100, 1), "the assumed one stays");
        c.retain_nodes(&["a".to_string()].into());
        assert_eq!(c.node_count(), 1);
    }
}
