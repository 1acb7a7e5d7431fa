//! `berth server`: the Kubernetes API server on the embedded SQLite store (or an etcd
//! cluster), with its certificates and admin kubeconfig made on first start, and —
//! unless `--disable-agent` — this machine's node agent in the same process, as
//! `k3s server` is.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::Ctx;

/// `berth server` options.
#[derive(Args)]
pub struct ServerArgs {
    /// Where the server keeps its state (store, certificates, kubeconfig)
    /// [default: ROOT/server].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The address and port to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// etcd endpoints (http://HOST:PORT, comma-separated or repeated) instead of the
    /// embedded SQLite store.
    #[arg(long = "datastore-endpoint", value_delimiter = ',')]
    datastore_endpoint: Vec<String>,
    /// A static token file: lines of token,user,uid,"group1,group2".
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Serve requests without credentials as system:anonymous (what RBAC lets
    /// system:unauthenticated do: health, version, cluster-info); false: 401
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    anonymous_auth: bool,
    /// Pod Security admission's configuration (an AdmissionConfiguration with the
    /// PodSecurity plugin, or a PodSecurityConfiguration): levels for namespaces
    /// without labels, and exempt users, namespaces and runtime classes
    #[arg(long)]
    pod_security_admission_config_file: Option<PathBuf>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long)]
    tls_san: Vec<String>,
    /// Also write the admin kubeconfig here.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Run the API server alone, without this machine's node agent.
    #[arg(long)]
    disable_agent: bool,
    /// The address pods reach this server at, as the `kubernetes` Service's endpoint
    /// (kube-apiserver's flag) [default: the listen address, else the node IP, else
    /// the default route's].
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Parts not to run in this server (comma-separated; k3s's --disable-* flags):
    /// scheduler, controllers, local-storage (the local-path provisioner and its
    /// default StorageClass).
    #[arg(long, value_delimiter = ',', value_parser = ["scheduler", "controllers", "local-storage"])]
    disable: Vec<String>,
    /// Join the cluster of the server at this URL (https://HOST:6443), sharing its
    /// etcd: its CA and keys are fetched with --token.
    #[arg(long)]
    server: Option<String>,
    /// The first server's join token (its DATA_DIR/token), to join with --server.
    #[arg(
        long,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the first server's join token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// How often the datastore's history is compacted (to where it was one interval
    /// before; on SQLite the freed space is given back); 0 never.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    #[command(flatten)]
    snapshots: crate::snapshot_schedule::ScheduleArgs,
    #[command(flatten)]
    election: crate::elected::LeaderElectionArgs,
    #[command(flatten)]
    controllers: crate::controller_cmd::ControllerSettings,
    #[command(flatten)]
    node: crate::agent_cmd::NodeArgs,
    #[command(subcommand)]
    command: Option<crate::snapshot_cmd::ServerCommand>,
}

/// Logs to stderr as text or JSON, at BERTH_LOG's level (info by default).
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if format == "json" {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A client that reaches this server in process, as the component `name` (what
/// kube-scheduler's and kube-controller-manager's certificates name them).
fn in_process(s: &berth_apiserver::Server, name: &str, groups: &[&str]) -> kube::Client {
    let entry = berth_apiserver::inprocess::InProcess::new(s.api.clone(), name, groups);
    kube::Client::new(entry, "default")
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn server(ctx: &Ctx, a: ServerArgs) -> anyhow::Result<()> {
    if let Some(c) = a.command {
        let parent = crate::snapshot_cmd::Parent {
            data_dir: a.data_dir,
            datastore_endpoint: a.datastore_endpoint,
            snapshot_dir: a.snapshots.snapshot_dir,
        };
        return crate::snapshot_cmd::run(ctx, c, &parent).await;
    }
    init_logging(&a.log_format);
    let data_dir = a
        .data_dir
        .unwrap_or_else(|| crate::snapshot_cmd::default_data_dir(ctx));
    if let Some(url) = &a.server {
        let token: berth_join::JoinToken =
            crate::agent_cmd::read_join_token(a.token.as_deref(), a.token_file.as_deref())?
                .context("--server needs the first server's token: --token or --token-file")?;
        crate::server_join::join(url, &token, &data_dir, !a.datastore_endpoint.is_empty()).await?;
    }
    let scheduler_election = a.election.election("kube-scheduler")?;
    let controllers_election = a.election.election("kube-controller-manager")?;
    let mut cfg = berth_apiserver::Config::new(data_dir.clone());
    cfg.listen = a.listen;
    cfg.etcd = a.datastore_endpoint;
    cfg.compaction_interval = a.etcd_compaction_interval;
    cfg.token_file = a.token_auth_file;
    cfg.anonymous_auth = a.anonymous_auth;
    cfg.pod_security_config = a.pod_security_admission_config_file;
    cfg.tls_san = a.tls_san;
    // Reached from other machines by these: agents verify the server by them.
    let node_ip = a.node.config(&ctx.root).node_ip;
    let advertise = a
        .advertise_address
        .or(Some(a.listen.ip()).filter(|ip| !ip.is_unspecified()))
        .unwrap_or(node_ip);
    cfg.advertise_address = Some(advertise);
    for ip in [a.advertise_address, Some(node_ip)].into_iter().flatten() {
        if !ip.is_loopback() && !ip.is_unspecified() && !cfg.tls_san.contains(&ip.to_string()) {
            cfg.tls_san.push(ip.to_string());
        }
    }
    let store_desc = if cfg.etcd.is_empty() {
        format!("sqlite {}", cfg.data_dir.join("state.db").display())
    } else {
        format!("etcd {}", cfg.etcd.join(","))
    };
    // Bad flags stop the start before anything listens.
    let controllers_cfg = a
        .controllers
        .config(!a.disable.iter().any(|d| d == "local-storage"))?;
    let controllers_pod_range = controllers_cfg.pod_range.map(|r| r.cluster);
    let controllers_ipam_off =
        a.disable.iter().any(|d| d == "controllers") || controllers_cfg.pod_range.is_none();
    let snapshots = crate::snapshot_schedule::scheduled(&a.snapshots, &data_dir, &cfg.etcd)?;
    let s = berth_apiserver::start(cfg).await?;
    let _snapshots = snapshots.map(|s| AbortOnDrop(tokio::spawn(s)));
    if let Some(p) = &a.write_kubeconfig {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::copy(&s.kubeconfig, p).with_context(|| format!("writing {}", p.display()))?;
    }
    tracing::info!(
        address = %s.addr,
        store = %store_desc,
        kubeconfig = %a.write_kubeconfig.as_ref().unwrap_or(&s.kubeconfig).display(),
        "berth API server listening"
    );
    // The loopback URL of this server, for the parts that run beside it.
    let local_url = {
        let host = match s.addr.ip() {
            ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        format!("https://{}", std::net::SocketAddr::new(host, s.addr.port()))
    };
    // Each elects a leader on its kube-system Lease, as kube-scheduler and
    // kube-controller-manager do: with several servers on one datastore, one acts.
    // Told to stop on shutdown, so they give their Leases up.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let scheduler = if a.disable.iter().any(|d| d == "scheduler") {
        None
    } else {
        let client = in_process(&s, "system:kube-scheduler", &[]);
        tracing::info!("scheduler starting");
        Some(AbortOnDrop(tokio::spawn(crate::scheduler_cmd::elected(
            client,
            Default::default(),
            scheduler_election,
            stopped(),
        ))))
    };
    let controllers = if a.disable.iter().any(|d| d == "controllers") {
        None
    } else {
        let client = in_process(&s, "system:kube-controller-manager", &[]);
        // Each controller as its own ServiceAccount, as kube-controller-manager with
        // --use-service-account-credentials: in process, no token is needed.
        let api = s.api.clone();
        let mut controllers_cfg = controllers_cfg;
        if controllers_cfg.signer.is_none() {
            // The cluster CA signs nodes' certificates, as kube-controller-manager
            // given the CA's files.
            controllers_cfg.signer = Some(a.controllers.signer(
                s.pki.ca_cert.clone(),
                s.pki.ca_key_pem()?,
                Some(s.pki.kubelet_ca()?),
            ));
        }
        controllers_cfg.identities = Some(berth_controllers::Identities(std::sync::Arc::new(
            move |sa: &str| {
                use berth_pods::identities;
                let groups = identities::groups();
                let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
                let entry = berth_apiserver::inprocess::InProcess::new(
                    api.clone(),
                    &identities::user_name(sa),
                    &groups,
                )
                .with_component("kube-controller-manager");
                kube::Client::new(entry, "default")
            },
        )));
        tracing::info!("controllers starting");
        Some(AbortOnDrop(tokio::spawn(crate::controller_cmd::elected(
            client,
            controllers_cfg,
            controllers_election,
            stopped(),
        ))))
    };
    // As kubeadm init ends: how another node joins (a revoked token was warned of).
    if s.agent_token.is_some() {
        tracing::info!(
            "agents join with: berth agent --server https://HOST:{} --token-file {} (copy the file from here; or make a token that expires: berth token create)",
            s.addr.port(),
            berth_apiserver::certificates::bootstrap::agent_token_path(&data_dir).display(),
        );
    }
    if s.join_token.is_some() {
        tracing::info!(
            "servers on the same etcd join with: berth server --server https://HOST:{} --token-file {}",
            s.addr.port(),
            berth_apiserver::certificates::bootstrap::token_path(&data_dir).display(),
        );
    }
    tokio::spawn(crate::apiserver_endpoints::publish(
        // The server's own loopback identity, in the privileged group as kube's is.
        in_process(&s, "system:apiserver", &["system:masters"]),
        advertise,
        s.addr.port(),
    ));
    let agent = if a.disable_agent {
        None
    } else {
        let mut cfg = a.node.config(&ctx.root);
        // The agent acts as its node (system:node:NAME), as a kubelet does: the Node
        // authorizer and NodeRestriction hold it to its own pods' objects.
        let node_kubeconfig = s.pki.dir.join(format!("node-{}.kubeconfig", cfg.node_name));
        s.pki
            .write_node_kubeconfig(&node_kubeconfig, &cfg.node_name, &local_url)
            .context("writing the node's kubeconfig")?;
        let client = crate::agent_cmd::client(&node_kubeconfig, Some(&local_url)).await?;
        cfg.client_ca_pem = Some(s.api.ca_bundle.clone());
        cfg.cluster_cidr = controllers_pod_range;
        // Without this server's node IPAM nobody assigns one: k3s's first node's block.
        if cfg.pod_cidr.is_none() && controllers_ipam_off {
            cfg.pod_cidr = Some("10.42.0.0/24".into());
        }
        tracing::info!(node = %cfg.node_name, ip = %cfg.node_ip, pod_cidr = ?cfg.pod_cidr, "node agent starting");
        Some(tokio::spawn(berth_agent::run(client, cfg)))
    };
    let cri = crate::cri_cmd::Beside::start(&ctx.root, a.node.cri_socket.clone()).await?;
    let agent_done = async {
        match agent {
            Some(h) => h.await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = agent_done => {
            match r {
                Ok(Ok(())) => anyhow::bail!("the node agent stopped"),
                Ok(Err(e)) => return Err(anyhow::Error::new(e).context("the node agent failed")),
                Err(e) => anyhow::bail!("the node agent panicked: {e}"),
            }
        }
    }
    tracing::info!("shutting down");
    cri.stop().await;
    let _ = stopping.send(true);
    for part in [scheduler, controllers].into_iter().flatten() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), part.wait()).await;
    }
    Ok(())
}

/// A task stopped when its handle goes.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Waits for the task to end by itself.
    async fn wait(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
