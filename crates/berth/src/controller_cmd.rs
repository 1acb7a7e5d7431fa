//! `berth controller-manager`: the controllers alone, against any API server (`berth
//! server` runs them in process unless `--disable controllers`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// `berth controller-manager` options.
#[derive(Args)]
pub struct ControllerManagerArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The API server's URL, over the kubeconfig's.
    #[arg(long)]
    server: Option<String>,
    /// Act only while holding the kube-system/kube-controller-manager Lease (one of
    /// several controller managers acts at a time).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Run no local-path provisioner (and install no default StorageClass).
    #[arg(long)]
    disable_local_storage: bool,
    /// Each controller acts as its own ServiceAccount in kube-system, with a token
    /// asked for with the kubeconfig's identity and renewed before it runs out
    /// (kube-controller-manager's flag; `berth server` always runs its controllers
    /// so).
    #[arg(long)]
    use_service_account_credentials: bool,
    #[command(flatten)]
    election: crate::elected::LeaderElectionArgs,
    #[command(flatten)]
    settings: ControllerSettings,
}

/// Settings of the controllers (also `berth server`'s).
#[derive(Args, Clone, Debug)]
pub struct ControllerSettings {
    /// How long a node may go without a heartbeat before it is marked Unknown and
    /// tainted unreachable (kube-controller-manager's flag of that name).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// Nodes per second, per zone, that get NoExecute taints once down (their pods
    /// then leave; kube-controller-manager's flag of that name).
    #[arg(long, default_value_t = 0.1, value_parser = non_negative)]
    node_eviction_rate: f64,
    /// The same, in a zone where most nodes are down, in clusters larger than
    /// --large-cluster-size-threshold (smaller ones taint none then).
    #[arg(long, default_value_t = 0.01, value_parser = non_negative)]
    secondary_node_eviction_rate: f64,
    /// The share of a zone's nodes down (with more than two) past which the zone
    /// counts as partially disrupted.
    #[arg(long, default_value_t = 0.55, value_parser = non_negative)]
    unhealthy_zone_threshold: f64,
    /// Up to this many nodes in a zone, a partially disrupted zone taints none.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// Where the local-path provisioner makes volumes on the nodes (k3s's flag of
    /// that name).
    #[arg(long, default_value = berth_pods::storage::DEFAULT_LOCAL_STORAGE_PATH)]
    default_local_storage_path: String,
    /// The pods' address range: each Node without a pod CIDR gets a block of it
    /// (k3s's --cluster-cidr); "none" assigns none (agents bring their own).
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// The prefix length of each node's block of the cluster CIDR
    /// (kube-controller-manager's flag of that name).
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How long certificates signed for approved requests are valid, at most
    /// (kube-controller-manager's flag of that name; a request may ask for less).
    #[arg(long, default_value = "8760h", value_parser = humantime::parse_duration)]
    cluster_signing_duration: std::time::Duration,
    /// The CA certificate that signs approved certificate requests [`berth server`:
    /// its own cluster CA].
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The CA key that signs approved certificate requests.
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The CA certificate that signs nodes' serving certificates [`berth server`: its
    /// own nodes' serving CA; otherwise they are not signed].
    #[arg(long, requires = "cluster_signing_kubelet_serving_key_file")]
    cluster_signing_kubelet_serving_cert_file: Option<PathBuf>,
    /// The CA key that signs nodes' serving certificates.
    #[arg(long, requires = "cluster_signing_kubelet_serving_cert_file")]
    cluster_signing_kubelet_serving_key_file: Option<PathBuf>,
}

/// A rate or share: a number not below zero.
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a number of 0 or more")),
    }
}

impl ControllerSettings {
    /// The controllers' configuration; `local_storage` runs the local-path
    /// provisioner (and installs its default StorageClass).
    pub fn config(&self, local_storage: bool) -> anyhow::Result<berth_controllers::Config> {
        let pod_range = if self.cluster_cidr == "none" {
            None
        } else {
            let cluster = berth_controllers::nodeipam::parse_cidr(&self.cluster_cidr)
                .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
            let services: berth_controllers::nodeipam::Cidr =
                berth_pods::services::SERVICE_CIDR.parse().expect("a CIDR");
            if berth_controllers::nodeipam::overlaps(&cluster, &services) {
                anyhow::bail!(
                    "--cluster-cidr {cluster} overlaps the Services' range {services}: pods and Services would share addresses; give pods a range apart from it (the default is 10.42.0.0/16)"
                );
            }
            Some(
                berth_controllers::nodeipam::Range::new(cluster, self.node_cidr_mask_size)
                    .map_err(anyhow::Error::msg)?,
            )
        };
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let kubelet_serving = match (
            &self.cluster_signing_kubelet_serving_cert_file,
            &self.cluster_signing_kubelet_serving_key_file,
        ) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        let signer = match (
            &self.cluster_signing_cert_file,
            &self.cluster_signing_key_file,
        ) {
            (Some(c), Some(k)) => Some(self.signer(read(c)?, read(k)?, kubelet_serving)),
            _ => None,
        };
        Ok(berth_controllers::Config {
            node_monitor_grace_period: self.node_monitor_grace_period,
            eviction_rates: berth_controllers::taintrate::EvictionRates {
                primary: self.node_eviction_rate,
                secondary: self.secondary_node_eviction_rate,
                unhealthy_zone_threshold: self.unhealthy_zone_threshold,
                large_cluster_size_threshold: self.large_cluster_size_threshold,
            },
            local_path: local_storage.then(|| self.default_local_storage_path.clone()),
            pod_range,
            // One identity for all unless the caller gives each its own.
            identities: None,
            signer,
        })
    }

    /// The signer of approved certificate requests with this CA (PEM).
    pub fn signer(
        &self,
        ca_cert: String,
        ca_key: String,
        kubelet_serving: Option<(String, String)>,
    ) -> berth_controllers::certificates::Signer {
        berth_controllers::certificates::Signer {
            ca_cert,
            ca_key,
            kubelet_serving,
            duration: self.cluster_signing_duration,
        }
    }
}

/// The controllers, acting while they hold the kube-system/kube-controller-manager
/// Lease, until `stop` (then the Lease is given up).
pub async fn elected(
    client: kube::Client,
    cfg: berth_controllers::Config,
    election: berth_watch::leader::Election,
    stop: impl std::future::Future<Output = ()>,
) {
    let c = client.clone();
    let work = move || berth_controllers::run(c.clone(), cfg.clone());
    berth_watch::leader::run(client, election, work, stop).await
}

/// Runs the controllers until interrupted.
pub async fn controller_manager(a: ControllerManagerArgs) -> anyhow::Result<()> {
    crate::server_cmd::init_logging("text");
    let base = crate::agent_cmd::config(&a.kubeconfig, a.server.as_deref()).await?;
    let client = kube::Client::try_from(base.clone()).context("making the API client")?;
    let mut cfg = a.settings.config(!a.disable_local_storage)?;
    if cfg.signer.is_none() {
        tracing::warn!("no --cluster-signing-cert-file: certificate requests are approved but not signed by these controllers");
    }
    // Kept for as long as the controllers run: it renews their tokens.
    let _accounts = if a.use_service_account_credentials {
        let accounts =
            berth_controllers::credentials::service_account_clients(client.clone(), base).await?;
        cfg.identities = Some(accounts.identities.clone());
        Some(accounts)
    } else {
        None
    };
    let c = client.clone();
    let work = move || berth_controllers::run(c.clone(), cfg.clone());
    let election = a
        .leader_elect
        .then(|| a.election.election("kube-controller-manager"))
        .transpose()?;
    crate::elected::until_interrupted(client, election, "the controllers", work).await
}
