//! `berth agent`: the node agent alone, against an API server given by a kubeconfig
//! (and `--server` to point it elsewhere); `berth server` runs the same agent in
//! process unless `--disable-agent`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::Ctx;

/// The node's settings, shared by `berth agent` and `berth server`.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// The Node's name [default: the host name].
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address (its InternalIP, the pods' hostIP) [default: the address
    /// of the default route's interface, else 127.0.0.1].
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// This node's pod CIDR [default: the one the controller manager's node IPAM
    /// assigns the Node; pods wait for it].
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// How pods reach other nodes' pods (k3s's flag): vxlan (an overlay over the node
    /// network), host-gw (routes through the other nodes' IPs; one L2 network), or
    /// none (a CNI configuration in STATE_ROOT/cni/net.d wires pods, or one node).
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw", "none"])]
    flannel_backend: String,
    /// The cgroup the pods' /kubepods tree goes under (the kubelet's flag): nodes that
    /// share a machine each get their own.
    #[arg(long, default_value = "/", value_parser = parse_cgroup_root)]
    cgroup_root: String,
    /// Do not proxy Services on this node, nor serve cluster DNS (k3s's flag: another
    /// proxy does).
    #[arg(long)]
    disable_kube_proxy: bool,
    /// Do not enforce NetworkPolicies on this node (k3s's flag: another network
    /// policy enforcer does, or none).
    #[arg(long)]
    disable_network_policy: bool,
    /// Do not run the built-in Ingress proxy on this node (as k3s's --disable traefik).
    #[arg(long)]
    disable_ingress: bool,
    /// The port the Ingress proxy serves HTTP on.
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// The port the Ingress proxy serves HTTPS on.
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
    /// The cluster DNS address, served by this node and given to pods as their name
    /// server (the kubelet's flag).
    #[arg(long, default_value = berth_pods::services::CLUSTER_DNS_IP)]
    cluster_dns: IpAddr,
    /// The resolver configuration pods with dnsPolicy Default get, whose search
    /// domains ClusterFirst pods get after the cluster's, and whose name servers
    /// cluster DNS forwards other names to (the kubelet's flag).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// The most pods this node runs.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The port of the agent's HTTPS endpoint (pod logs, exec, attach), the kubelet's.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Hard eviction thresholds, as the kubelet's flag: pods are evicted when one is
    /// crossed (signals memory.available, nodefs.available, imagefs.available,
    /// nodefs.inodesFree; quantities or percentages). Disk defaults are k3s's.
    #[arg(
        long,
        value_parser = parse_thresholds,
        default_value = "memory.available<100Mi,nodefs.available<5%,imagefs.available<5%,nodefs.inodesFree<5%"
    )]
    eviction_hard: berth_agent::eviction::Thresholds,
    /// The directory of static pod manifests [default: STATE_ROOT/agent/pod-manifests].
    #[arg(long)]
    pod_manifest_path: Option<PathBuf>,
    /// The cluster's DNS domain, the kubelet's --cluster-domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// A container log past this size is rotated (a quantity: 10Mi).
    #[arg(long, default_value = "10Mi", value_parser = parse_size)]
    container_log_max_size: u64,
    /// Log files kept per container, the live one included.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..))]
    container_log_max_files: u16,
    /// Also serve the engine's CRI endpoint on this unix socket, so crictl
    /// (--runtime-endpoint unix://PATH) sees and drives this node's pods, as on a
    /// containerd node.
    #[arg(long)]
    pub cri_socket: Option<PathBuf>,
    /// Where device plugins register (kubelet.sock) and keep their sockets, as the
    /// kubelet's [default: /var/lib/kubelet/device-plugins with the default state
    /// root, else STATE_ROOT/agent/device-plugins].
    #[arg(long)]
    pub device_plugin_dir: Option<PathBuf>,
    /// Where the Pod Resources API (podresources/v1) is served, on kubelet.sock
    /// [default: /var/lib/kubelet/pod-resources with the default state root, else
    /// STATE_ROOT/agent/pod-resources].
    #[arg(long)]
    pub pod_resources_dir: Option<PathBuf>,
    /// Serve no device plugins (pods asking for their resources stay Pending).
    #[arg(long)]
    pub disable_device_plugins: bool,
    /// A directory of CDI specs that device plugins' CDI devices are resolved from
    /// (repeatable) [default: /etc/cdi, /var/run/cdi].
    #[arg(long = "cdi-spec-dir")]
    pub cdi_spec_dirs: Vec<PathBuf>,
}

fn parse_cgroup_root(s: &str) -> Result<String, String> {
    if s == "/" {
        return Ok(s.into());
    }
    berth_cgroups::naming::check_parent(s).map_err(|e| e.to_string())?;
    Ok(s.into())
}

fn parse_size(s: &str) -> Result<u64, String> {
    berth_agent::logrotate::parse_size(s)
}

fn parse_thresholds(s: &str) -> Result<berth_agent::eviction::Thresholds, String> {
    s.parse()
}

/// `berth agent` options.
#[derive(Args)]
pub struct AgentArgs {
    /// The kubeconfig to reach the API server with (instead of joining with a token).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The API server's URL (https://HOST:6443): the one to join, or over the
    /// kubeconfig's.
    #[arg(long)]
    server: Option<String>,
    /// The join token (K10<CA hash>::<id>.<secret>, from the server's DATA_DIR/token
    /// or `berth token create`): the server is verified against its CA hash, and the
    /// node's certificate is asked for with it. The bare `<id>.<secret>` works too, as
    /// kubeadm's token does: the CA is then trusted on the server's cluster-info
    /// signed with the token's secret. Needed on the first start only.
    #[arg(
        long,
        env = "BERTH_TOKEN",
        conflicts_with = "token_file",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A file holding the join token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The cluster's pod network (the controller manager's --cluster-cidr): traffic
    /// from outside it to a ClusterIP is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    #[command(flatten)]
    node: NodeArgs,
}

/// The address of the interface the default route leaves by, if any.
fn default_route_ip() -> Option<IpAddr> {
    // A connected UDP socket sends nothing, and tells which source address the
    // kernel would use.
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

impl NodeArgs {
    /// The agent's configuration under berth's state root.
    pub fn config(&self, root: &Path) -> berth_agent::AgentConfig {
        let mut cfg = berth_agent::AgentConfig::under(root);
        if let Some(n) = &self.node_name {
            cfg.node_name = n.clone();
        }
        cfg.node_ip = self
            .node_ip
            .or_else(default_route_ip)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        cfg.pod_cidr = self.pod_cidr.clone();
        cfg.cgroup_root = self.cgroup_root.clone();
        cfg.service_proxy = !self.disable_kube_proxy;
        cfg.network_policy = !self.disable_network_policy;
        cfg.ingress = (!self.disable_ingress).then_some(berth_agent::ingress::Ports {
            http: self.ingress_http_port,
            https: self.ingress_https_port,
        });
        cfg.cluster_dns = cfg.service_proxy.then_some(self.cluster_dns);
        cfg.resolv_conf = self.resolv_conf.clone();
        cfg.overlay = match self.flannel_backend.as_str() {
            "none" => None,
            // Checked by clap.
            b => b.parse().ok(),
        };
        cfg.max_pods = self.max_pods;
        cfg.kubelet_port = self.kubelet_port;
        cfg.eviction_hard = self.eviction_hard.clone();
        cfg.cluster_domain = self.cluster_domain.clone();
        cfg.container_logs = berth_agent::logrotate::Policy {
            max_size: self.container_log_max_size,
            max_files: usize::from(self.container_log_max_files),
        };
        if let Some(p) = &self.pod_manifest_path {
            cfg.pod_manifest_path = Some(p.clone());
        }
        cfg.devices = if self.disable_device_plugins {
            None
        } else {
            cfg.devices.take().map(|mut d| {
                // The host's own agent is where device plugins (NVIDIA's, anyone's)
                // look for the kubelet; a node with a root of its own keeps them apart.
                let host_agent = root == Path::new(berth_hostdirs::DEFAULT_STATE_ROOT);
                if let Some(dir) = &self.device_plugin_dir {
                    d.plugins = dir.clone();
                } else if host_agent {
                    d.plugins = berth_deviceplugin::DEVICE_PLUGIN_DIR.into();
                }
                if let Some(dir) = &self.pod_resources_dir {
                    d.pod_resources = Some(dir.clone());
                } else if host_agent {
                    d.pod_resources = Some(berth_deviceplugin::POD_RESOURCES_DIR.into());
                }
                if !self.cdi_spec_dirs.is_empty() {
                    d.cdi_specs = self.cdi_spec_dirs.clone();
                }
                d
            })
        };
        cfg
    }
}

/// A kube client from a kubeconfig file, its server replaced when given.
pub async fn client(kubeconfig: &Path, server: Option<&str>) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(config(kubeconfig, server).await?).context("making the API client")
}

/// The client configuration of a kubeconfig's current context, with `server`'s URL
/// over its own.
pub async fn config(kubeconfig: &Path, server: Option<&str>) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("using kubeconfig {}", kubeconfig.display()))?;
    if let Some(s) = server {
        cfg.cluster_url = s
            .parse()
            .with_context(|| format!("--server {s:?} is not a URL (https://HOST:6443)"))?;
    }
    Ok(cfg)
}

/// The cluster CA a kubeconfig trusts (its current context's cluster), as PEM.
pub fn cluster_ca(kubeconfig: &Path) -> anyhow::Result<Option<String>> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .or_else(|| kc.clusters.first())
        .and_then(|c| c.cluster.as_ref());
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("the kubeconfig's certificate-authority-data is not base64")?;
        return Ok(Some(String::from_utf8_lossy(&pem).into_owned()));
    }
    if let Some(file) = &cluster.certificate_authority {
        return Ok(Some(
            std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?,
        ));
    }
    Ok(None)
}

/// A join token given by flag (`--token`) or file (`--token-file`), parsed as `T`
/// (an agent's [`berth_join::JoinCredentials`], a server's [`berth_join::JoinToken`]).
pub fn read_join_token<T>(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<T>>
where
    T: std::str::FromStr<Err = berth_join::Error>,
{
    let text = match (token, file) {
        (Some(t), _) => t.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the join token from {}", f.display()))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(
        text.parse().map_err(|e| anyhow::anyhow!("--token: {e}"))?,
    ))
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn agent(ctx: &Ctx, a: AgentArgs) -> anyhow::Result<()> {
    crate::server_cmd::init_logging("text");
    let mut cfg = a.node.config(&ctx.root);
    let token: Option<berth_join::JoinCredentials> =
        read_join_token(a.token.as_deref(), a.token_file.as_deref())?;
    let mut renewal = None;
    let mut followed = None;
    // A token means joining (or the credentials it got before), whatever KUBECONFIG says.
    let kubeconfig = a.kubeconfig.as_ref().filter(|_| token.is_none());
    let client = match (kubeconfig, &a.server) {
        (Some(kc), _) => {
            cfg.client_ca_pem = cluster_ca(kc)?;
            client(kc, a.server.as_deref()).await?
        }
        (None, Some(server)) => {
            let files = berth_agent::credentials::Files::new(
                cfg.pki_dir.as_deref().context("the agent keeps no certificates")?,
            );
            let creds = berth_agent::credentials::join::load_or_join(
                server,
                token.as_ref(),
                &cfg.node_name,
                &files,
            )
            .await?;
            cfg.client_ca_pem = Some(creds.ca_pem.clone());
            followed = Some(tokio::spawn(berth_agent::credentials::servers::follow(
                creds.client.clone(),
                creds.identity.servers(),
            )));
            renewal = Some(tokio::spawn(berth_agent::credentials::rotate::client(
                creds.client.clone(),
                creds.identity.clone(),
                files,
                server.clone(),
                cfg.node_name.clone(),
            )));
            creds.client
        }
        (None, None) => anyhow::bail!(
            "berth agent needs a server to join: --server https://HOST:6443 --token TOKEN (the token is in the server's DATA_DIR/token), or --kubeconfig FILE"
        ),
    };
    cfg.cluster_cidr = Some(a.cluster_cidr.trunc());
    tracing::info!(node = %cfg.node_name, ip = %cfg.node_ip, pod_cidr = ?cfg.pod_cidr, "berth agent starting");
    let cri = crate::cri_cmd::Beside::start(&ctx.root, a.node.cri_socket.clone()).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ran = tokio::select! {
        r = berth_agent::run(client, cfg) => r.context("the agent stopped"),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    cri.stop().await;
    for task in [renewal, followed].into_iter().flatten() {
        task.abort();
    }
    ran?;
    tracing::info!("agent stopping; containers keep running");
    Ok(())
}
