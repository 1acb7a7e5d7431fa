//! A cluster's node processes: each `berth server` or `berth agent` runs in its node's
//! network namespace (entered with nsenter), in a session of its own (setsid: it
//! outlives the command that started it, as kind's node containers do), with the
//! node's state root, runtime directory and network records, logging to
//! `nodes/NODE.log`; its pid is kept in the cluster's run directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::record::{ClusterRecord, NodeRecord, Paths, Role, API_PORT};

/// The environment that puts a berth process on node `n`.
fn node_env(cmd: &mut Command, paths: &Paths, n: &NodeRecord) {
    cmd.env(berth_hostdirs::RUN_DIR_ENV, paths.node_run(&n.name))
        .env("BERTH_NET_ROOT", paths.node_root(&n.name))
        .env("BERTH_ROOT", paths.node_root(&n.name));
}

/// A command running `berth ARGS` inside node `n`'s network namespace.
fn in_node(paths: &Paths, n: &NodeRecord, args: &[String]) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("finding the berth binary")?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", paths.node_netns(&n.name).display()))
        .arg("--")
        .arg(exe)
        .arg("--root")
        .arg(paths.node_root(&n.name))
        .args(args);
    node_env(&mut cmd, paths, n);
    Ok(cmd)
}

/// Node `n`'s cgroup root: its pods' /kubepods tree goes under it.
pub fn cgroup_root(c: &ClusterRecord, n: &NodeRecord) -> String {
    format!("/berth-clusters/{}/{}", c.name, n.name)
}

/// Removes node `n`'s cgroup tree, deepest first, on every hierarchy, ending the
/// processes still in it (for `berth cluster delete`: the node is gone for good).
pub fn remove_cgroups(c: &ClusterRecord, n: &NodeRecord) {
    fn rmdir_tree(d: &Path) {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        // Whatever the node's engine could not remove (a reset that found no
        // records: a node whose state went first) still holds the cgroup: the
        // cgroup says whose it is, so those processes go too.
        for _ in 0..50 {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(d);
    }
    let root = cgroup_root(c, n);
    if let Ok(paths) = berth_cgroups::naming::paths_of(&berth_cgroups::Layout::host(), &root) {
        for d in paths.dirs() {
            rmdir_tree(d);
        }
    }
    let cluster = format!("/berth-clusters/{}", c.name);
    berth_cgroups::naming::remove_empty(&berth_cgroups::Layout::host(), &cluster, "/");
}

/// The flags of node `n`'s process.
fn node_args(c: &ClusterRecord, paths: &Paths, n: &NodeRecord, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = match n.role {
        Role::Server => vec![
            "server".into(),
            "--listen".into(),
            format!("0.0.0.0:{API_PORT}"),
            "--tls-san".into(),
            n.ip.to_string(),
            "--write-kubeconfig".into(),
            paths.server_kubeconfig().display().to_string(),
        ],
        Role::Agent => {
            let server = c.server().map(|s| s.name.clone()).unwrap_or_default();
            vec![
                "agent".into(),
                "--server".into(),
                c.api_url().unwrap_or_default(),
                "--token-file".into(),
                paths.agent_token(&server).display().to_string(),
            ]
        }
    };
    args.extend([
        "--node-name".into(),
        n.name.clone(),
        "--node-ip".into(),
        n.ip.to_string(),
        "--flannel-backend".into(),
        c.backend.clone(),
        // Each node's pods in a cgroup tree of their own.
        "--cgroup-root".into(),
        cgroup_root(c, n),
    ]);
    args.extend(extra.iter().cloned());
    args
}

/// Starts node `n`'s process unless it runs; returns its pid.
pub fn start(
    c: &ClusterRecord,
    paths: &Paths,
    n: &NodeRecord,
    extra: &[String],
) -> anyhow::Result<u32> {
    if let Some(pid) = running(paths, n) {
        return Ok(pid);
    }
    for d in [paths.node_root(&n.name), paths.node_run(&n.name)] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = paths.node_log(&n.name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let inner = in_node(paths, n, &node_args(c, paths, n, extra))?;
    // setsid runs the program in a new session (it execs: the pid stays).
    let mut cmd = Command::new("setsid");
    cmd.arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.env(
        "BERTH_LOG",
        std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into()),
    )
    .stdin(Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log);
    let child = cmd
        .spawn()
        .context("starting the node (are setsid and nsenter, from util-linux, installed?)")?;
    let pid = child.id();
    // Not waited for: the node outlives this command. Its exit is reaped by init.
    std::mem::forget(child);
    std::fs::write(paths.node_pid(&n.name), pid.to_string())
        .with_context(|| format!("writing {}", paths.node_pid(&n.name).display()))?;
    Ok(pid)
}

/// The pid of node `n`'s process, if it runs (the pid file's process is a berth with
/// the node's state root on its command line: a reused pid is not taken for it).
pub fn running(paths: &Paths, n: &NodeRecord) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(paths.node_pid(&n.name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let root = paths.node_root(&n.name);
    let root = root.to_string_lossy();
    // A process in the middle of an exec (setsid and nsenter exec the next program)
    // shows an empty command line for a moment; so does a zombie, for good. On a
    // loaded machine the moment can be long (a debug build's exec, two cores busy):
    // up to two seconds is waited for.
    for _ in 0..400 {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !cmdline.is_empty() {
            return cmdline
                .split(|b| *b == 0)
                .any(|a| a == root.as_bytes())
                .then_some(pid);
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The state follows the command name in parentheses.
        let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
        if matches!(state, "Z" | "X") {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Why node `n` is not running, for an error message: what its pid file names and
/// what became of that process, and the end of its log.
pub fn why_stopped(paths: &Paths, n: &NodeRecord) -> String {
    let pid_file = paths.node_pid(&n.name);
    let process = match std::fs::read_to_string(&pid_file) {
        Err(e) => format!("{}: {e}", pid_file.display()),
        Ok(text) => {
            let pid = text.trim();
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => format!("pid {pid} has exited"),
                Ok(stat) => {
                    let state = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .unwrap_or("?");
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                        .unwrap_or_default()
                        .split(|b| *b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ");
                    format!(
                        "pid {pid} is in state {state}, running `{}`",
                        cmdline.trim()
                    )
                }
            }
        }
    };
    let log_path = paths.node_log(&n.name);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    if tail.is_empty() {
        format!("{process}; its log {} is empty", log_path.display())
    } else {
        format!(
            "{process}; the end of its log {}:\n{tail}",
            log_path.display()
        )
    }
}

/// Processes of node `n` other than the one its pid file names (a start whose pid file
/// was lost): berth server or agent processes with the node's state root.
fn strays(paths: &Paths, n: &NodeRecord) -> Vec<u32> {
    let root = paths.node_root(&n.name);
    let root = root.to_string_lossy();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--root" && w[1] == root.as_bytes())
                && args.iter().any(|a| *a == b"server" || *a == b"agent")
        })
        .collect()
}

/// Stops node `n`'s process: SIGTERM, then SIGKILL after `grace`. Its containers keep
/// running, as when a kubelet stops.
pub fn stop(paths: &Paths, n: &NodeRecord, grace: Duration) {
    for pid in strays(paths, n) {
        if Some(pid) != running(paths, n) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
    let Some(pid) = running(paths, n) else {
        let _ = std::fs::remove_file(paths.node_pid(&n.name));
        return;
    };
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while running(paths, n).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if running(paths, n).is_some() {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(paths, n).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(paths.node_pid(&n.name));
}

/// Removes what node `n`'s pods and containers left in its engine (sandboxes,
/// containers, the pod network, the overlay), from inside its namespace: the
/// engine's network records and links belong to the node's namespace, not the host's.
pub fn reset(paths: &Paths, n: &NodeRecord) -> anyhow::Result<()> {
    if !paths.node_netns(&n.name).exists() || !paths.node_root(&n.name).exists() {
        return Ok(());
    }
    let out = in_node(paths, n, &["cluster".into(), "reset-node".into()])?
        .stdin(Stdio::null())
        .output()
        .context("running berth cluster reset-node in the node")?;
    anyhow::ensure!(
        out.status.success(),
        "cleaning node {} failed: {}",
        n.name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Inside a node (`berth cluster reset-node`): removes every sandbox and container of
/// the engine at `root`, the pod network and the overlay's routes.
pub fn reset_here(root: &Path) -> anyhow::Result<()> {
    use berth_engine::cri::{RuntimeService, SandboxFilter};
    let core = berth_engine::Core::open(root)?;
    let mut failed = Vec::new();
    for s in core.list_pod_sandbox(&SandboxFilter {
        include_lean: true,
        ..Default::default()
    })? {
        if let Err(e) = core.remove_pod_sandbox(&s.id) {
            failed.push(format!("sandbox {}: {e}", s.id));
        }
    }
    for c in core.list_containers(&Default::default())? {
        if let Err(e) = core.remove_container_id(&c.id) {
            failed.push(format!("container {}: {e}", c.id));
        }
    }
    let nets = berth_net::network::Networks::host();
    let _ = nets.remove(&core.pod_network().name);
    let _ = berth_net::overlay::teardown();
    berth_net::nft::forget_all();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}
