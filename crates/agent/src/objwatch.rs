//! The Secrets and ConfigMaps this node's pods use, each watched alone (a watch with
//! `fieldSelector=metadata.name=NAME` in its namespace), as the kubelet's watch-based
//! manager does: the Node authorizer lets a node read only what its pods use, one
//! object at a time, never every Secret of the cluster. A watch starts the first time
//! an object is asked for and stops once nobody has asked for it for a while (pods
//! ask at every sync, every 10 s; the Ingress proxy at every change and every 30 s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;

/// How long a watch lives without being asked for.
const IDLE: Duration = Duration::from_secs(120);

/// What a watch knows of its object.
#[derive(Clone)]
enum Known<K> {
    /// Not listed yet.
    Pending,
    /// Listed: the object, or None when it does not exist.
    Listed(Option<Arc<K>>),
}

struct Entry<K> {
    known: Arc<RwLock<Known<K>>>,
    asked: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Drop for Entry<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Called with an object's namespace when it changes (to wake that namespace's pods).
pub type OnChange = Arc<dyn Fn(&str) + Send + Sync>;

/// Single-object watches of kind `K`.
pub struct Watched<K> {
    client: kube::Client,
    entries: Mutex<HashMap<(String, String), Entry<K>>>,
    on_change: OnChange,
}

impl<K> Watched<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Watches through `client`, calling `on_change` on every change after the first
    /// list.
    pub fn new(client: kube::Client, on_change: OnChange) -> Arc<Watched<K>> {
        Arc::new(Watched {
            client,
            entries: Mutex::new(HashMap::new()),
            on_change,
        })
    }

    /// The object once its watch has listed (`Some(None)`: it does not exist); None
    /// while it has not (the caller asks the API server itself). Starts the watch.
    pub fn get(&self, ns: &str, name: &str) -> Option<Option<Arc<K>>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ns.to_string(), name.to_string());
        let entry = entries.entry(key).or_insert_with(|| self.start(ns, name));
        entry.asked = Instant::now();
        let known = entry.known.read().unwrap_or_else(|e| e.into_inner());
        match &*known {
            Known::Pending => None,
            Known::Listed(o) => Some(o.clone()),
        }
    }

    /// How many objects are watched.
    pub fn watch_count(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Stops the watches nobody asked for within [`IDLE`].
    pub fn sweep(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.asked.elapsed() < IDLE);
    }

    fn start(&self, ns: &str, name: &str) -> Entry<K> {
        let known = Arc::new(RwLock::new(Known::Pending));
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (k, ns, on_change) = (known.clone(), ns.to_string(), self.on_change.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher(api, cfg).backoff(berth_watch::backoff()).boxed();
            // Objects seen in a (re)list, kept until it ends.
            let mut listing: Option<Option<Arc<K>>> = None;
            while let Some(ev) = events.next().await {
                let now = match ev {
                    Ok(watcher::Event::Init) => {
                        listing = Some(None);
                        continue;
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        listing = Some(Some(Arc::new(o)));
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => listing.take().unwrap_or(None),
                    Ok(watcher::Event::Apply(o)) => Some(Arc::new(o)),
                    Ok(watcher::Event::Delete(_)) => None,
                    // The backoff retries; what was known stays until then.
                    Err(_) => continue,
                };
                *k.write().unwrap_or_else(|e| e.into_inner()) = Known::Listed(now);
                on_change(&ns);
            }
        });
        Entry {
            known,
            asked: Instant::now(),
            task,
        }
    }
}

/// Sweeps `watched` every minute, for as long as the agent runs.
pub async fn sweep_every_minute(watched: Vec<Arc<dyn Sweep>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        for w in &watched {
            w.sweep_idle();
        }
    }
}

/// Something with idle watches to stop.
pub trait Sweep: Send + Sync {
    /// Stops what nobody asked for lately.
    fn sweep_idle(&self);
}

impl<K: Send + Sync + 'static> Sweep for Watched<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    fn sweep_idle(&self) {
        self.sweep();
    }
}
