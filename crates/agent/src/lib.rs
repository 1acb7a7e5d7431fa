//! berth's node agent — what the kubelet is. It registers its Node and renews its
//! Lease, watches the pods bound to it, and runs each through the engine's CRI-shaped
//! traits ([`berth_engine::cri`]) with one level-triggered worker per pod: volumes, the
//! sandbox, init containers in order, app containers with their restart policy and
//! probes; status is written back through the status subresource, only on change, and
//! events as `kubectl describe` shows them.
//!
//! The agent keeps nothing it could not read back: after a restart it lists the
//! engine's sandboxes and containers (labelled with the pod's UID) and adopts them.
#![forbid(unsafe_code)]

pub mod admit;
mod backoff;
pub mod clusterdns;
pub mod credentials;
pub mod devices;
pub mod dispatch;
pub mod envvars;
pub mod error;
pub mod eviction;
pub mod hostinfo;
pub mod images;
pub mod ingress;
pub mod labels;
mod localpath;
pub mod logrotate;
pub mod logs;
pub mod netpath;
pub mod netpol;
pub mod node;
pub mod objwatch;
pub mod podnet;
pub mod podspec;
pub mod portforward;
pub mod probes;
pub mod proxy;
pub mod qos;
pub mod server;
pub mod static_pods;
pub mod stats;
pub mod status;
pub mod streaming;
pub mod volumes;
pub mod worker;

pub use berth_events as recorder;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use berth_engine::Core;

pub use error::{Error, Result};

/// What an agent is told at start.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (the host name by default).
    pub node_name: String,
    /// The node's address: its InternalIP, and every pod's hostIP.
    pub node_ip: IpAddr,
    /// This node's pod CIDR (pods' addresses come from it); None: the one node IPAM
    /// writes into the Node.
    pub pod_cidr: Option<String>,
    /// How pods reach other nodes' pods (`--flannel-backend`); None: not at all (a
    /// CNI configuration, or a single node).
    pub overlay: Option<berth_net::overlay::Backend>,
    /// The engine's state root.
    pub engine_root: PathBuf,
    /// Where the node keeps its certificates (its serving certificate, signed by the
    /// cluster, is asked for and kept here); None: a self-signed one, never renewed.
    pub pki_dir: Option<PathBuf>,
    /// Where pods' volumes and files live (`DIR/UID/...`, kubelet's /var/lib/kubelet/pods).
    pub pods_dir: PathBuf,
    /// Where container logs go (`DIR/NS_NAME_UID/CONTAINER/N.log`, kubelet's /var/log/pods).
    pub log_dir: PathBuf,
    /// The most pods the node takes.
    pub max_pods: u32,
    /// The port of the agent's HTTPS endpoint (logs, exec, attach); 0: any free one.
    pub kubelet_port: u16,
    /// The cluster CA (PEM) whose client certificates the endpoint accepts (the API
    /// server's); None: no endpoint.
    pub client_ca_pem: Option<String>,
    /// The hard eviction thresholds (`--eviction-hard`).
    pub eviction_hard: eviction::Thresholds,
    /// The directory of static pod manifests (`--pod-manifest-path`); None: none.
    pub pod_manifest_path: Option<PathBuf>,
    /// The cluster's DNS domain (`--cluster-domain`): pods' subdomain names end in it.
    pub cluster_domain: String,
    /// Container log rotation (`--container-log-max-size`, `--container-log-max-files`).
    pub container_logs: logrotate::Policy,
    /// The cgroup pods' `/kubepods` tree goes under (`--cgroup-root`, "/" by default).
    pub cgroup_root: String,
    /// Whether the agent proxies Services (kube-proxy's job; `--disable-kube-proxy`).
    pub service_proxy: bool,
    /// Whether the agent enforces NetworkPolicies (`--disable-network-policy`).
    pub network_policy: bool,
    /// The Ingress proxy's ports; None: no proxy (`--disable-ingress`).
    pub ingress: Option<ingress::Ports>,
    /// The cluster's pod network: traffic from outside it to a ClusterIP is
    /// masqueraded (kube-proxy's --cluster-cidr).
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    /// The cluster DNS address pods get as their name server (`--cluster-dns`); the
    /// node serves it. None: pods get the node's resolvers.
    pub cluster_dns: Option<IpAddr>,
    /// The node's resolver configuration (`--resolv-conf`, the kubelet's flag):
    /// pods with dnsPolicy Default get its servers, ClusterFirst pods its search
    /// domains after the cluster's, and cluster DNS forwards other names to its
    /// servers.
    pub resolv_conf: PathBuf,
    /// Device plugins (`--device-plugin-dir`, the kubelet's device-plugins
    /// directory): None, no device manager.
    pub devices: Option<devices::Dirs>,
}

impl AgentConfig {
    /// Defaults under a berth state root: the engine at ROOT, pods at ROOT/agent/pods,
    /// logs at ROOT/agent/logs, static pods from ROOT/agent/pod-manifests; the node
    /// named after the host, on 127.0.0.1.
    pub fn under(root: &std::path::Path) -> AgentConfig {
        AgentConfig {
            node_name: hostinfo::hostname(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            pod_cidr: None,
            overlay: Some(berth_net::overlay::Backend::Vxlan),
            engine_root: root.to_path_buf(),
            pki_dir: Some(root.join("agent/pki")),
            pods_dir: root.join("agent/pods"),
            log_dir: root.join("agent/logs"),
            max_pods: 110,
            kubelet_port: 10250,
            client_ca_pem: None,
            eviction_hard: eviction::Thresholds::default(),
            pod_manifest_path: Some(root.join("agent/pod-manifests")),
            cluster_domain: "cluster.local".into(),
            container_logs: logrotate::Policy::default(),
            cgroup_root: "/".into(),
            service_proxy: true,
            network_policy: true,
            ingress: Some(ingress::Ports {
                http: 80,
                https: 443,
            }),
            cluster_cidr: "10.42.0.0/16".parse().ok(),
            cluster_dns: berth_pods::services::CLUSTER_DNS_IP.parse().ok(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            devices: Some(devices::Dirs {
                plugins: root.join("agent/device-plugins"),
                pod_resources: Some(root.join("agent/pod-resources")),
                cdi_specs: berth_engine::cdi::DEFAULT_SPEC_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .collect(),
            }),
        }
    }
}

/// What every part of the agent shares.
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub core: Core,
    pub cfg: AgentConfig,
    pub recorder: recorder::Recorder,
    pub hub: dispatch::Hub,
    /// The port the HTTPS endpoint listens on (0: none).
    pub kubelet_port: u16,
    /// ConfigMaps and Secrets, cached.
    pub caches: envvars::Caches,
    /// Usage samples for the Summary API.
    pub stats: stats::Sampler,
    /// When the agent started.
    pub started: std::time::SystemTime,
    /// The node's pod CIDR, once known.
    pub pod_cidr: podnet::PodCidr,
    /// The MTU of pods' interfaces (the uplink's, less the overlay's headers); None:
    /// the engine's default.
    pub pod_mtu: Option<u32>,
    /// Device plugins and the devices pods hold.
    pub devices: Arc<devices::Manager>,
}

impl Ctx {
    /// Runs an engine call (a few system calls and short-lived helpers) off the async
    /// threads.
    pub async fn engine<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> berth_engine::Result<T> + Send + 'static,
    ) -> Result<T> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || f(&core))
            .await
            .map_err(|e| Error::Internal(format!("engine call panicked: {e}")))?
            .map_err(Error::Engine)
    }
}

/// Runs the agent until the future is dropped: registers the Node, keeps its Lease
/// and status fresh, and runs the pods bound to it.
pub async fn run(client: kube::Client, cfg: AgentConfig) -> Result<()> {
    // httpGet probes and hooks use rustls through reqwest, with the process's provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for d in [&cfg.pods_dir, &cfg.log_dir]
        .into_iter()
        .chain(cfg.pod_manifest_path.as_ref())
    {
        std::fs::create_dir_all(d).map_err(|e| Error::Io(format!("create {}", d.display()), e))?;
    }
    let root = cfg.engine_root.clone();
    let cidr = cfg.pod_cidr.clone();
    let pod_mtu = podnet::pod_mtu(&cfg).await;
    let core = tokio::task::spawn_blocking(move || -> berth_engine::Result<Core> {
        let core = Core::open(&root)?;
        if let Some(cidr) = &cidr {
            core.set_pod_network(cidr, pod_mtu)?;
        }
        Ok(core)
    })
    .await
    .map_err(|e| Error::Internal(format!("engine open panicked: {e}")))?
    .map_err(Error::Engine)?;
    // Made now so that a pod CIDR this host cannot use stops the start with the reason,
    // rather than failing every pod's sandbox later.
    let c = core.clone();
    let given = cfg.pod_cidr.is_some();
    match tokio::task::spawn_blocking(move || {
        if given {
            c.ensure_pod_network()
        } else {
            Ok(())
        }
    })
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(berth_engine::Error::Invalid(why))) => {
            return Err(Error::Config(format!("{why} (--pod-cidr)")))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the pod network is not ready; pods will wait for it")
        }
        Err(e) => return Err(Error::Internal(format!("pod network setup panicked: {e}"))),
    }
    let endpoint = match &cfg.client_ca_pem {
        Some(ca) => {
            let files = cfg.pki_dir.as_deref().map(credentials::Files::new);
            let serving = credentials::rotate::ServingCert::new(
                vec![cfg.node_name.clone(), cfg.node_ip.to_string()],
                files.as_ref(),
            )?;
            let tls = server::tls_config(serving.clone(), ca)?;
            let l =
                server::bind(std::net::SocketAddr::from(([0, 0, 0, 0], cfg.kubelet_port))).await?;
            let port = l
                .local_addr()
                .map_err(|e| Error::Io("the endpoint's address".into(), e))?
                .port();
            Some((l, (tls, serving), port))
        }
        None => {
            tracing::warn!("no cluster CA given: the agent serves no logs, exec or attach");
            None
        }
    };
    let devices = Arc::new(devices::Manager::new(cfg.devices.clone())?);
    let (changed_tx, changed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let on_change: objwatch::OnChange = Arc::new(move |ns: &str| {
        let _ = changed_tx.send(ns.to_string());
    });
    let (services_reader, services_writer) = kube::runtime::reflector::store();
    let ctx = Arc::new(Ctx {
        caches: envvars::Caches {
            config_maps: objwatch::Watched::new(client.clone(), on_change.clone()),
            secrets: objwatch::Watched::new(client.clone(), on_change),
            services: services_reader,
        },
        recorder: recorder::Recorder::kubelet(client.clone(), &cfg.node_name),
        client,
        core,
        hub: dispatch::Hub::default(),
        kubelet_port: endpoint.as_ref().map_or(0, |e| e.2),
        stats: stats::Sampler::default(),
        started: std::time::SystemTime::now(),
        pod_cidr: podnet::PodCidr::new(cfg.pod_cidr.clone()),
        pod_mtu,
        devices: devices.clone(),
        cfg,
    });
    // Dropped when the agent stops: the sockets go with it.
    let _device_manager = devices.start().await?;
    let serving_renewal = match (&endpoint, &ctx.cfg.pki_dir) {
        (Some((_, (_, serving), _)), Some(dir)) => {
            Some(tokio::spawn(credentials::rotate::serving(
                ctx.client.clone(),
                serving.clone(),
                credentials::Files::new(dir),
                ctx.cfg.node_name.clone(),
                ctx.cfg.node_ip,
            )))
        }
        _ => None,
    };
    let endpoint =
        endpoint.map(|(l, (tls, _), _)| tokio::spawn(server::serve(ctx.clone(), l, tls)));
    // Registration is retried in the heartbeat until the API server answers; static
    // pods and pods already running carry on meanwhile.
    let heartbeat = tokio::spawn(node::heartbeat(ctx.clone()));
    let evictions = tokio::spawn(eviction::run(ctx.clone()));
    let rotation = tokio::spawn(logrotate::run(ctx.clone()));
    let local_volumes = tokio::spawn(localpath::run(ctx.clone()));
    let pod_network = tokio::spawn(podnet::run(ctx.clone()));
    let services = ctx
        .cfg
        .service_proxy
        .then(|| tokio::spawn(proxy::run(ctx.clone())));
    let policies = if ctx.cfg.network_policy {
        Some(tokio::spawn(netpol::run(ctx.clone())))
    } else {
        // A table left by an earlier run with policies on would keep dropping traffic
        // by pod addresses that now belong to other pods.
        berth_net::netpol::remove();
        None
    };
    let ingress = ctx
        .cfg
        .ingress
        .map(|ports| tokio::spawn(ingress::run(ctx.clone(), ports)));
    let events = dispatch::forward_engine_events(ctx.clone());
    let sweeper = tokio::spawn(objwatch::sweep_every_minute(vec![
        ctx.caches.config_maps.clone(),
        ctx.caches.secrets.clone(),
    ]));
    let r = dispatch::run(ctx.clone(), changed_rx, services_writer).await;
    sweeper.abort();
    heartbeat.abort();
    evictions.abort();
    rotation.abort();
    local_volumes.abort();
    pod_network.abort();
    if let Some(s) = services {
        s.abort();
    }
    if let Some(p) = policies {
        p.abort();
    }
    if let Some(i) = ingress {
        i.abort();
    }
    events.abort();
    if let Some(s) = serving_renewal {
        s.abort();
    }
    if let Some(e) = endpoint {
        e.abort();
    }
    r
}

#[cfg(test)]
mod fresh_check_names {
    /// scripts/fresh-check.sh removes, by name, the node network an agent in its clean
    /// root made in the host's network namespace (the VXLAN device, the Service and
    /// NetworkPolicy tables, the cluster DNS address on lo): a rename of one of them
    /// must reach it.
    #[test]
    fn fresh_check_knows_the_node_networks_names() {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fresh-check.sh");
        let text = std::fs::read_to_string(&script).expect("scripts/fresh-check.sh");
        for wanted in [
            format!("ip link show {}", berth_net::overlay::VXLAN_DEVICE),
            format!("\"ip {}\"", berth_net::svcproxy::TABLE),
            format!("\"ip {}\"", berth_net::netpol::TABLE),
            format!("{}/32", berth_pods::services::CLUSTER_DNS_IP),
        ] {
            assert!(
                text.contains(&wanted),
                "{} does not name {wanted}: update its node_net_objects",
                script.display()
            );
        }
    }
}
