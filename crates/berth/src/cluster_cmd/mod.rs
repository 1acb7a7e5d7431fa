//! `berth cluster`: clusters of several nodes on this one machine, as kind and k3d
//! make them — one server and N agents, each node in a network namespace of its own
//! with its own IP on a shared bridge, its own state root and runtime directory, so
//! traffic between nodes really leaves one node for another. `create`, `delete`,
//! `ls`, `kubeconfig` (as `kind get kubeconfig`), `load` (as `kind load
//! docker-image`: images from this machine's store into every node's), `start`
//! and `stop` (nodes' processes; pods keep running, as kubelets restart).

mod hostnet;
mod nodes;
pub mod record;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::Ctx;
use record::{ClusterRecord, NodeRecord, Paths, Role};

/// `berth cluster` subcommands.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster of one server and N agents on this machine, and wait until
    /// its nodes are Ready.
    Create(CreateArgs),
    /// Delete a cluster: its nodes' processes, pods, namespaces, bridge and state.
    Delete(NameArgs),
    /// List the clusters.
    Ls,
    /// Print the path of a cluster's admin kubeconfig.
    Kubeconfig(KubeconfigArgs),
    /// Copy images from this machine's store into every node of a cluster.
    Load(LoadArgs),
    /// Start a cluster's stopped nodes.
    Start(NameArgs),
    /// Stop a cluster's nodes' processes (their pods keep running).
    Stop(NameArgs),
    /// (Inside a node) remove what its pods left in its engine.
    #[command(hide = true)]
    ResetNode,
}

/// `berth cluster create` options.
#[derive(Args)]
pub struct CreateArgs {
    /// The cluster's name.
    name: String,
    /// How many agents beside the server.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// The nodes' network (a /24 or wider) [default: a free /24 of 10.45.0.0/16].
    #[arg(long)]
    subnet: Option<ipnet::Ipv4Net>,
    /// How pods reach other nodes' pods: vxlan, host-gw or none.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw", "none"])]
    flannel_backend: String,
    /// An extra flag for the server (repeat for more), as k3d's --k3s-arg.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// An extra flag for every agent (repeat for more).
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// How long to wait for the nodes to be Ready.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

/// A cluster's name.
#[derive(Args)]
pub struct NameArgs {
    /// The cluster's name.
    name: String,
}

/// `berth cluster kubeconfig` options.
#[derive(Args)]
pub struct KubeconfigArgs {
    /// The cluster's name.
    name: String,
    /// An agent's own kubeconfig instead (its node's identity, system:node:NAME).
    #[arg(long)]
    node: Option<String>,
}

/// `berth cluster load` options.
#[derive(Args)]
pub struct LoadArgs {
    /// The cluster's name.
    name: String,
    /// Images of this machine's store.
    #[arg(required = true)]
    images: Vec<String>,
}

/// Runs a `berth cluster` subcommand.
pub async fn run(ctx: &Ctx, c: ClusterCommand) -> anyhow::Result<()> {
    match c {
        ClusterCommand::Create(a) => create(ctx, a).await,
        ClusterCommand::Delete(a) => delete(ctx, &a.name),
        ClusterCommand::Ls => ls(ctx),
        ClusterCommand::Kubeconfig(a) => {
            let paths = Paths::of(&ctx.root, &a.name);
            let c = ClusterRecord::read(&paths, &a.name)?;
            match &a.node {
                None => println!("{}", paths.kubeconfig().display()),
                Some(node) => {
                    let n = c
                        .nodes
                        .iter()
                        .find(|n| &n.name == node)
                        .with_context(|| format!("cluster {} has no node {node:?}", a.name))?;
                    anyhow::ensure!(
                        n.role == Role::Agent,
                        "{node} is the server: its agent acts in process; give an agent's name"
                    );
                    let kc = paths.node_kubeconfig(node);
                    anyhow::ensure!(
                        kc.exists(),
                        "node {node} has not joined yet ({} is missing)",
                        kc.display()
                    );
                    println!("{}", kc.display());
                }
            }
            Ok(())
        }
        ClusterCommand::Load(a) => load(ctx, a),
        ClusterCommand::Start(a) => start(ctx, &a.name).await,
        ClusterCommand::Stop(a) => {
            let paths = Paths::of(&ctx.root, &a.name);
            let c = ClusterRecord::read(&paths, &a.name)?;
            for n in c.nodes.iter().rev() {
                nodes::stop(&paths, n, Duration::from_secs(10));
                println!("stopped {}", n.name);
            }
            Ok(())
        }
        ClusterCommand::ResetNode => nodes::reset_here(&ctx.root),
    }
}

/// The flags each node started with, kept beside the record so `start` repeats them.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct NodeFlags {
    server: Vec<String>,
    agent: Vec<String>,
}

fn flags_path(paths: &Paths) -> std::path::PathBuf {
    paths.dir.join("flags.json")
}

async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    record::check_name(&a.name)?;
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "berth cluster needs root (network namespaces, a bridge, nftables): run it with sudo"
    );
    anyhow::ensure!(a.agents <= 50, "--agents {}: at most 50", a.agents);
    let paths = Paths::of(&ctx.root, &a.name);
    if paths.record().exists() {
        anyhow::bail!(
            "cluster {:?} exists (berth cluster delete {} first, or berth cluster start {})",
            a.name,
            a.name,
            a.name
        );
    }
    // Two creates at once must not pick one subnet: held until the bridge exists.
    let lock = lock_clusters()?;
    let others: Vec<ipnet::Ipv4Net> = list(ctx).iter().map(|c| c.subnet).collect();
    let subnet = match a.subnet {
        Some(s) => {
            let s = s.trunc();
            anyhow::ensure!(
                s.prefix_len() <= 28 && s.hosts().count() >= a.agents + 2,
                "--subnet {s} has room for {} nodes and the bridge; {} are needed",
                s.hosts().count().saturating_sub(1),
                a.agents + 1
            );
            if let Some(o) = others
                .iter()
                .chain(hostnet::host_routes().iter().filter(|r| r.prefix_len() > 0))
                .find(|o| o.contains(&s.network()) || s.contains(&o.network()))
            {
                anyhow::bail!("--subnet {s} overlaps {o}, a route of this host or another cluster's network: give another");
            }
            s
        }
        None => hostnet::free_subnet(&others)?,
    };
    let mut hosts = subnet.hosts().skip(1);
    let mut node_list = Vec::new();
    for i in 0..=a.agents {
        let (name, role) = if i == 0 {
            (format!("{}-server", a.name), Role::Server)
        } else {
            (format!("{}-agent-{i}", a.name), Role::Agent)
        };
        node_list.push(NodeRecord {
            name,
            role,
            ip: hosts.next().context("the subnet is too small")?,
            host_veth: hostnet::host_veth(&a.name, i),
        });
    }
    let c = ClusterRecord {
        name: a.name.clone(),
        bridge: hostnet::bridge_name(&a.name),
        subnet,
        backend: a.flannel_backend.clone(),
        nodes: node_list,
    };
    c.write(&paths)?;
    std::fs::write(
        flags_path(&paths),
        serde_json::to_vec(&NodeFlags {
            server: a.server_args.clone(),
            agent: a.agent_args.clone(),
        })?,
    )?;
    println!(
        "cluster {}: nodes on {} (bridge {}), pods over {}",
        c.name, c.subnet, c.bridge, c.backend
    );
    let made = match hostnet::ensure_bridge(&c) {
        Ok(()) => {
            drop(lock);
            bring_up(&c, &paths, a.wait).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = made {
        eprintln!("creating cluster {} failed; removing what was made", a.name);
        let logs: Vec<String> = c
            .nodes
            .iter()
            .map(|n| paths.node_log(&n.name).display().to_string())
            .collect();
        let tails: String = c
            .nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(paths.node_log(&n.name)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "--- {} (last lines) ---\n{}\n",
                    n.name,
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect();
        eprint!("{tails}");
        let _ = delete(ctx, &a.name);
        return Err(e.context(format!("the nodes' logs were {}", logs.join(", "))));
    }
    println!(
        "cluster {} is ready: {} nodes on {} (bridge {})",
        c.name,
        c.nodes.len(),
        c.subnet,
        c.bridge
    );
    println!("kubeconfig: {}", paths.kubeconfig().display());
    println!(
        "try: kubectl --kubeconfig {} get nodes -o wide",
        paths.kubeconfig().display()
    );
    Ok(())
}

/// Makes the network, starts the server, writes the kubeconfig, starts the agents and
/// waits for every node to be Ready.
async fn bring_up(c: &ClusterRecord, paths: &Paths, wait: Duration) -> anyhow::Result<()> {
    let flags: NodeFlags = std::fs::read(flags_path(paths))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let deadline = Instant::now() + wait;
    hostnet::ensure_bridge(c)?;
    for n in &c.nodes {
        hostnet::ensure_node(c, paths, n)?;
    }
    let server = c.server().context("the cluster has no server")?;
    // The server writes its kubeconfig anew as it starts (its admin certificate may
    // have been renewed): the last run's is not waited for.
    match std::fs::remove_file(paths.server_kubeconfig()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("removing {}", paths.server_kubeconfig().display()))
        }
    }
    let pid = nodes::start(c, paths, server, &flags.server)?;
    println!(
        "node {} ({}): server started, pid {pid}",
        server.name, server.ip
    );
    write_kubeconfig(c, paths, deadline).await?;
    // Each agent joins with the server's token, as a node on another machine would:
    // it verifies the server's CA and gets its node certificate through a
    // CertificateSigningRequest.
    for n in c.nodes.iter().filter(|n| n.role == Role::Agent) {
        let pid = nodes::start(c, paths, n, &flags.agent)?;
        println!("node {} ({}): agent started, pid {pid}", n.name, n.ip);
    }
    wait_ready(c, paths, deadline).await
}

/// Waits for the server's kubeconfig and writes the cluster's, with the server's node
/// address.
async fn write_kubeconfig(
    c: &ClusterRecord,
    paths: &Paths,
    deadline: Instant,
) -> anyhow::Result<()> {
    let server = c.server().context("the cluster has no server")?;
    while !paths.server_kubeconfig().exists() {
        anyhow::ensure!(
            nodes::running(paths, server).is_some(),
            "the server stopped: {}",
            nodes::why_stopped(paths, server)
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server wrote no kubeconfig in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut kc = kube::config::Kubeconfig::read_from(paths.server_kubeconfig())
        .context("reading the server's kubeconfig")?;
    let url = c.api_url().context("the cluster has no server")?;
    for cl in &mut kc.clusters {
        if let Some(cluster) = cl.cluster.as_mut() {
            cluster.server = Some(url.clone());
        }
    }
    // JSON is YAML: kubectl and every client read it.
    let text = serde_json::to_vec_pretty(&kc)?;
    let tmp = paths.dir.join("kubeconfig.tmp");
    std::fs::write(&tmp, text)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, paths.kubeconfig())?;
    Ok(())
}

async fn wait_ready(c: &ClusterRecord, paths: &Paths, deadline: Instant) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let client = crate::agent_cmd::client(&paths.kubeconfig(), None).await?;
    let api: kube::Api<Node> = kube::Api::all(client);
    loop {
        for n in &c.nodes {
            anyhow::ensure!(
                nodes::running(paths, n).is_some(),
                "node {} stopped: {}",
                n.name,
                nodes::why_stopped(paths, n)
            );
        }
        let last = match api.list(&Default::default()).await {
            Ok(list) => {
                let ready: Vec<String> = list
                    .items
                    .iter()
                    .filter(|n| berth_pods::readiness::node_is_ready(n))
                    .filter_map(|n| n.metadata.name.clone())
                    .collect();
                let missing: Vec<&str> = c
                    .nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .filter(|n| !ready.iter().any(|r| r == n))
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                format!("not Ready yet: {}", missing.join(", "))
            }
            Err(e) => format!("the API server does not answer: {e}"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes did not come up in time ({last})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn start(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let paths = Paths::of(&ctx.root, name);
    let c = ClusterRecord::read(&paths, name)?;
    bring_up(&c, &paths, Duration::from_secs(120)).await?;
    println!("cluster {name} is running");
    Ok(())
}

fn delete(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let paths = Paths::of(&ctx.root, name);
    let c = ClusterRecord::read(&paths, name)?;
    let mut problems = Vec::new();
    // Agents first: the server answers them until they are gone.
    for n in c.nodes.iter().rev() {
        nodes::stop(&paths, n, Duration::from_secs(10));
    }
    for n in &c.nodes {
        if let Err(e) = nodes::reset(&paths, n) {
            problems.push(format!("{e:#}"));
        }
        hostnet::remove_node(&paths, n);
        nodes::remove_cgroups(&c, n);
    }
    hostnet::remove_bridge(&c);
    for d in [&paths.run, &paths.dir] {
        berth_cgroups::mountinfo::unmount_under(d);
    }
    for d in [&paths.run, &paths.dir] {
        if let Err(e) = std::fs::remove_dir_all(d) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("removing {}: {e}", d.display()));
            }
        }
    }
    if problems.is_empty() {
        println!("deleted cluster {name}");
        Ok(())
    } else {
        anyhow::bail!("cluster {name} deleted, but: {}", problems.join("; "))
    }
}

/// An exclusive lock over the choice of clusters' subnets.
fn lock_clusters() -> anyhow::Result<std::fs::File> {
    let dir = berth_hostdirs::run_dir().join("clusters");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .with_context(|| format!("opening {}/.lock", dir.display()))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .context("locking the clusters' subnets")?;
    Ok(f)
}

fn list(ctx: &Ctx) -> Vec<ClusterRecord> {
    let Ok(dir) = std::fs::read_dir(record::clusters_dir(&ctx.root)) else {
        return Vec::new();
    };
    let mut out: Vec<ClusterRecord> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            ClusterRecord::read(&Paths::of(&ctx.root, &name), &name).ok()
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn ls(ctx: &Ctx) -> anyhow::Result<()> {
    let mut t = crate::table::Table::new(&["NAME", "NODES", "RUNNING", "SUBNET", "KUBECONFIG"]);
    for c in list(ctx) {
        let paths = Paths::of(&ctx.root, &c.name);
        let running = c
            .nodes
            .iter()
            .filter(|n| nodes::running(&paths, n).is_some())
            .count();
        t.row(vec![
            c.name.clone(),
            c.nodes.len().to_string(),
            running.to_string(),
            c.subnet.to_string(),
            paths.kubeconfig().display().to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// Saves the images from this machine's store once and loads them into each node's.
fn load(ctx: &Ctx, a: LoadArgs) -> anyhow::Result<()> {
    let paths = Paths::of(&ctx.root, &a.name);
    let c = ClusterRecord::read(&paths, &a.name)?;
    let store = ctx.store()?;
    let platform = berth_image::oci::Platform::host();
    let tmp = tempfile::NamedTempFile::new_in(&paths.dir).context("making a temporary archive")?;
    store
        .save(
            &a.images,
            berth_image::archive::SaveFormat::OciArchive,
            &platform,
            tmp.as_file(),
        )
        .context("saving the images from this machine's store")?;
    for n in &c.nodes {
        let node_store = berth_image::Store::open(paths.node_root(&n.name).join("image"))?;
        node_store
            .load(tmp.path(), &platform)
            .with_context(|| format!("loading the images into node {}", n.name))?;
        println!("loaded {} into {}", a.images.join(", "), n.name);
    }
    Ok(())
}
