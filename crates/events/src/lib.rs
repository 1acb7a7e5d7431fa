//! Events as Kubernetes components write them (core/v1 Events with the component as
//! source — "kubelet" with its node as host, "default-scheduler"...), so `kubectl
//! describe` and `kubectl get events` show what happened. One task posts them in
//! order, off the callers' path; a repeat of the same reason and message for the same
//! object bumps the first one's count, as client-go's event correlator does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Things going as they should.
    Normal,
    /// Something the user should look at.
    Warning,
}

struct Record {
    object: ObjectReference,
    kind: EventType,
    reason: String,
    message: String,
}

/// Sends events to the API server.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Record>,
}

impl Recorder {
    /// A recorder posting as the kubelet of `node`.
    pub fn kubelet(client: kube::Client, node: &str) -> Recorder {
        Recorder::new(client, "kubelet", node, Some(node))
    }

    /// A recorder posting as `component` (its instance `instance`, on `host` if the
    /// component belongs to a node).
    pub fn new(
        client: kube::Client,
        component: &str,
        instance: &str,
        host: Option<&str>,
    ) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        let source = Source {
            component: component.to_string(),
            instance: instance.to_string(),
            host: host.map(str::to_string),
        };
        tokio::spawn(post_events(client, source, rx));
        Recorder { tx }
    }

    /// Records an event about a pod; `field_path` names a container
    /// (`spec.containers{web}`) or is empty for the pod itself.
    pub fn pod(&self, pod: &Pod, field_path: &str, kind: EventType, reason: &str, message: &str) {
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: (!field_path.is_empty()).then(|| field_path.to_string()),
        };
        self.object(object, kind, reason, message);
    }

    /// Records an event about a typed object (a ReplicaSet, a Job...).
    pub fn about<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let m = obj.meta();
        let object = ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            field_path: None,
        };
        self.object(object, kind, reason, message);
    }

    /// Records an event about any object.
    pub fn object(&self, object: ObjectReference, kind: EventType, reason: &str, message: &str) {
        let _ = self.tx.send(Record {
            object,
            kind,
            reason: reason.into(),
            message: message.into(),
        });
    }
}

/// What makes two events the same: the object's UID, field path, reason, message.
type EventKey = (String, String, String, String);
/// The first event of a kind: its namespace, name and count so far.
type Posted = (String, String, i32);

/// Who posts the events.
struct Source {
    component: String,
    instance: String,
    host: Option<String>,
}

async fn post_events(client: kube::Client, src: Source, mut rx: mpsc::UnboundedReceiver<Record>) {
    // (uid, field path, reason, message) → (namespace, event name, count)
    let mut seen: HashMap<EventKey, Posted> = HashMap::new();
    let mut serial = 0u64;
    while let Some(r) = rx.recv().await {
        let ns = r
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = (
            r.object.uid.clone().unwrap_or_default(),
            r.object.field_path.clone().unwrap_or_default(),
            r.reason.clone(),
            r.message.clone(),
        );
        let now = Time(jiff::Timestamp::now());
        if let Some((ens, name, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = serde_json::json!({"count": *count, "lastTimestamp": now});
            let api: Api<Event> = Api::namespaced(client.clone(), ens);
            if api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                continue;
            }
        }
        serial += 1;
        let obj_name = r.object.name.clone().unwrap_or_default();
        let name = format!(
            "{obj_name}.{:x}{serial:x}",
            jiff::Timestamp::now().as_nanosecond() as u64
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: r.object,
            reason: Some(r.reason.clone()),
            message: Some(r.message.clone()),
            type_: Some(
                match r.kind {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some(src.component.clone()),
                host: src.host.clone(),
            }),
            reporting_component: Some(src.component.clone()),
            reporting_instance: Some(src.instance.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(key, (ns, name, 1));
            }
            Err(e) => tracing::debug!(reason = %r.reason, error = %e, "event not recorded"),
        }
    }
}
