//! berth's Kubernetes API server. One resource table ([`resources`]) drives routing,
//! discovery, OpenAPI, field validation and tables; objects live in a revisioned
//! key-value store (SQLite by default, or etcd) as JSON; one store watch feeds every
//! API watch through the [`hub`]; TLS with client certificates and bearer tokens.

// Errors are kube Status answers carried to the client once per failed request; their
// size is nothing next to the round trip, and boxing them would blur every handler.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod api;
pub mod auth;
pub mod authz;
pub mod certificates;
pub mod converted;
pub mod crd;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod hpa_v1;
pub mod hub;
pub mod inprocess;
pub mod limitranger;
pub mod metrics;
pub mod names;
pub mod nodeproxy;
pub mod objects;
pub mod openapi;
pub mod openapi_pb;
pub mod patch;
pub mod pki;
pub mod podsecurity;
pub mod priority;
pub mod protobuf;
pub mod quota;
pub mod repair;
pub mod request;
pub mod resource_metrics;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod ssa;
pub mod state;
pub mod status;
pub mod storageclass;
pub mod table;
pub mod validate;
pub mod version;
pub mod watchapi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_join::secret::JoinRole;
use berth_store::{Backend, Store};
use serde_json::json;

pub use error::Error;
pub use version::{version_info, VERSION};

/// How to run the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the state (SQLite file, certificates, kubeconfig) lives.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// etcd endpoints (empty: the embedded SQLite store).
    pub etcd: Vec<String>,
    /// A static token file (kube's CSV format).
    pub token_file: Option<PathBuf>,
    /// Extra names and addresses for the serving certificate.
    pub tls_san: Vec<String>,
    /// How often the store's history is compacted, to where it was one interval
    /// before (kube-apiserver's --etcd-compaction-interval); zero: never.
    pub compaction_interval: Duration,
    /// Whether requests without credentials are served as system:anonymous
    /// (kube-apiserver's --anonymous-auth).
    pub anonymous_auth: bool,
    /// Pod Security admission's configuration file (an AdmissionConfiguration or a
    /// PodSecurityConfiguration: defaults for unlabelled namespaces, exemptions).
    pub pod_security_config: Option<PathBuf>,
    /// The address other machines reach this server at (kube-apiserver's
    /// --advertise-address), published in cluster-info; None: the listening one.
    pub advertise_address: Option<std::net::IpAddr>,
}

impl Config {
    /// The defaults: /var/lib/berth/server, port 6443 on all addresses.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            listen: "0.0.0.0:6443".parse().expect("a valid address"),
            etcd: Vec::new(),
            token_file: None,
            tls_san: Vec::new(),
            compaction_interval: Duration::from_secs(300),
            anonymous_auth: true,
            pod_security_config: None,
            advertise_address: None,
        }
    }
}

/// A running server.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The shared state.
    pub api: Arc<api::Api>,
    /// The certificates (node credentials are issued from its CA).
    pub pki: pki::Pki,
    /// The servers' join token (`DATA_DIR/token`); None: revoked.
    pub join_token: Option<berth_join::JoinToken>,
    /// The agents' join token (`DATA_DIR/agent-token`); None: revoked.
    pub agent_token: Option<berth_join::JoinToken>,
}

/// Starts the server; returns once it listens (readiness follows when the default
/// namespaces exist).
pub async fn start(cfg: Config) -> Result<Server, Error> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| Error::Setup(format!("creating {}: {e}", cfg.data_dir.display())))?;
    let store = if cfg.etcd.is_empty() {
        let s = berth_store::sqlite::SqliteStore::open(&cfg.data_dir.join("state.db"))?;
        Backend::Sqlite(s)
    } else {
        let s = berth_store::etcd::EtcdStore::connect(&cfg.etcd).await?;
        Backend::Etcd(Box::new(s))
    };
    if !cfg.compaction_interval.is_zero() {
        tokio::spawn(store.clone().compact_periodically(cfg.compaction_interval));
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Setup(format!("listening on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Setup(format!("listener: {e}")))?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!("https://{host}:{}", addr.port());
    // What cluster-info tells joining nodes.
    let public_url = match cfg.advertise_address {
        Some(ip) => format!("https://{}", SocketAddr::new(ip, addr.port())),
        None => url.clone(),
    };
    let mut sans = cfg.tls_san.clone();
    if !addr.ip().is_unspecified() {
        sans.push(addr.ip().to_string());
    }
    let pki_dir = pki::pki_dir(&cfg.data_dir);
    let pki = pki::Pki::ensure(&pki_dir, &sans, &url)?;
    let tls = server::tls_config(&pki)?;
    let join_paths = [
        (
            certificates::bootstrap::token_path(&cfg.data_dir),
            JoinRole::Servers,
        ),
        (
            certificates::bootstrap::agent_token_path(&cfg.data_dir),
            JoinRole::Agents,
        ),
    ];
    let mut join_files = Vec::new();
    for (path, role) in join_paths {
        let token = certificates::bootstrap::ensure_join_token(&path, &pki.ca_cert)?;
        join_files.push((path, token, role));
    }
    let authn = auth::Authenticator::load(cfg.token_file.as_deref(), &pki_dir, cfg.anonymous_auth)?;
    let hub = hub::Hub::start(store.clone())
        .await
        .map_err(|e| Error::Setup(format!("loading the store: {}", e.message)))?;
    // The identity the server proxies pod logs, exec and attach to node agents with.
    let (kc_cert, kc_key) =
        pki.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
    let kubelet_client = Some(nodeproxy::kubelet_client_config(&kc_cert, &kc_key)?);
    let pod_security = match &cfg.pod_security_config {
        Some(p) => podsecurity::Config::load(p)
            .map_err(|e| Error::Setup(format!("--pod-security-admission-config-file: {e}")))?,
        None => podsecurity::Config::default(),
    };
    let api = Arc::new(api::Api {
        pod_security,
        kubelet_client,
        store,
        hub: hub.clone(),
        metrics: metrics::Metrics::default(),
        authn,
        authz: authz::Authorizer::start(&hub),
        address: format!("{host}:{}", addr.port()),
        ca_bundle: pki.ca_cert.clone(),
        ready: std::sync::atomic::AtomicBool::new(false),
        cpu_readings: Default::default(),
        quota_gate: Default::default(),
        server_bootstrap: if cfg.etcd.is_empty() {
            None
        } else {
            Some(pki.server_bootstrap()?)
        },
    });
    // The default roles before the first request: components asking at once find
    // their rights.
    authz::reconcile::cluster_defaults(&api)
        .await
        .map_err(|e| Error::Setup(format!("writing the default RBAC roles: {}", e.message)))?;
    // The join tokens work from the first request: a node started with the server
    // joins at once.
    let mut settled = Vec::new();
    for (path, token, role) in &join_files {
        let token = certificates::bootstrap::settle_join_token(&api, path, token, *role)
            .await
            .map_err(|e| Error::Setup(format!("writing a join token's Secret: {}", e.message)))?;
        settled.push(token);
    }
    let agent_token = settled.pop().flatten();
    let join_token = settled.pop().flatten();
    // Custom resources are served from the first request on.
    crd::controller::start(&api);
    let rev = api.store.revision().await?;
    api.hub
        .wait_for(rev)
        .await
        .map_err(|e| Error::Setup(format!("loading the default RBAC roles: {}", e.message)))?;
    tokio::spawn(server::serve(api.clone(), listener, tls));
    tokio::spawn(warn_of_expiring_certificates(pki_dir.clone()));
    let a = api.clone();
    tokio::spawn(async move {
        loop {
            match bootstrap(&a, &public_url).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("bootstrap: {}; retrying", e.message);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        objects::populate_all(&a).await;
        tokio::spawn(repair::run(a.clone()));
        tokio::spawn(quota::run(a.clone()));
        a.ready.store(true, std::sync::atomic::Ordering::Release);
    });
    Ok(Server {
        addr,
        kubeconfig: pki_dir.join("admin.kubeconfig"),
        api,
        pki,
        join_token,
        agent_token,
    })
}

/// What every cluster has: the system namespaces, the `kubernetes` service, the
/// public cluster-info (naming the server at `public_url`) and the `kube-dns` Service.
async fn bootstrap(api: &Arc<api::Api>, public_url: &str) -> Result<(), status::ApiError> {
    let nsr = resources::find("", "v1", "namespaces").expect("served");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if api.store.get(&nsr.key(None, ns)).await?.is_some() {
            continue;
        }
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        objects::create_internal(api, nsr, None, body).await?;
    }
    authz::reconcile::namespaced_defaults(api).await?;
    let pcs = resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("served");
    for pc in priority::system_classes() {
        objects::create_internal(api, pcs, None, pc).await?;
    }
    let svc = resources::find("", "v1", "services").expect("served");
    if api
        .store
        .get(&svc.key(Some("default"), "kubernetes"))
        .await?
        .is_none()
    {
        let port = api
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(6443);
        let body = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
        objects::create_internal(api, svc, Some("default"), body).await?;
    }
    // kubeadm's cluster-info: the public kubeconfig a node given bare token
    // credentials trusts once the bootstrap signer has signed it with its token.
    use berth_join::discovery;
    let cms = resources::find("", "v1", "configmaps").expect("served");
    if api
        .store
        .get(&cms.key(Some(discovery::NAMESPACE), discovery::CLUSTER_INFO))
        .await?
        .is_none()
    {
        let kubeconfig = discovery::kubeconfig(public_url, &api.ca_bundle);
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": discovery::CLUSTER_INFO},
            "data": {discovery::KUBECONFIG_KEY: kubeconfig}});
        objects::create_internal(api, cms, Some(discovery::NAMESPACE), body).await?;
    }
    // The cluster DNS address, served by every node's agent (not proxied: the label
    // tells Service proxies to leave it), at the address kubeadm gives kube-dns.
    if api
        .store
        .get(&svc.key(Some("kube-system"), "kube-dns"))
        .await?
        .is_none()
    {
        let body = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "labels": {
                "k8s-app": "kube-dns", "kubernetes.io/name": "berth-dns",
                "service.kubernetes.io/service-proxy-name": "berth-dns"}},
            "spec": {"type": "ClusterIP", "clusterIP": berth_pods::services::CLUSTER_DNS_IP,
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}});
        objects::create_internal(api, svc, Some("kube-system"), body).await?;
    }
    Ok(())
}

/// Once a day, warns of the server's own certificates that end within
/// [`pki::RENEW_BEFORE`]: it issues them again only when it starts (as k3s does), so
/// one that runs that long has to be restarted before they end.
async fn warn_of_expiring_certificates(dir: std::path::PathBuf) {
    let mut day = tokio::time::interval(std::time::Duration::from_secs(86_400));
    loop {
        day.tick().await;
        for (path, end) in pki::expiring(&dir) {
            let end = jiff::Timestamp::from_second(end).map_or(end.to_string(), |t| t.to_string());
            tracing::warn!(
                "the certificate in {} ends at {end}: restart the server before then to issue it again",
                path.display()
            );
        }
    }
}
