//! `berth explain pod [-n NS] NAME`: a pod on this node as the kernel holds it — the
//! infra process and each container's PID, which namespaces each shares with the pod
//! (by inode) and which it owns, the pod's cgroup tree with the limits read from the
//! cgroup files and its QoS class, every volume with where it comes from and where it
//! is mounted, the pod IP and the host side of its veth.
//!
//! `berth explain path` (in explain_path.rs): the way a packet goes between pods.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use berth_agent::labels;
use berth_cgroups::{naming, Layout};
use berth_engine::cri::{ContainerFilter, RuntimeService, SandboxFilter, SandboxState};
use clap::{Args, Subcommand};

use crate::Ctx;

/// What `berth explain` explains.
#[derive(Subcommand)]
pub enum ExplainCommand {
    /// A pod on this node.
    Pod(PodArgs),
    /// The way one packet goes from a pod to a pod, a Service or an address, read
    /// from the kernels of the nodes on the way.
    Path(crate::explain_path::PathArgs),
}

/// `berth explain pod` options.
#[derive(Args)]
pub struct PodArgs {
    /// The pod's namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The pod's name.
    name: String,
}

fn ns_inode(pid: i32, kind: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|m| m.ino())
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn mib(v: &str) -> String {
    match v.parse::<u64>() {
        Ok(b) if b >= 1 << 62 => "none".into(),
        Ok(b) => format!("{} MiB", b >> 20),
        Err(_) => v.to_string(),
    }
}

/// The limits of a cgroup, read from its files (v1 or v2).
fn limits(path: &str) -> String {
    let Ok(p) = naming::paths_of(&Layout::host(), path) else {
        return "(cgroup not found)".into();
    };
    if p.v2_only {
        let Some(d) = &p.unified else {
            return "(cgroup not found)".into();
        };
        let mem = read(&d.join("memory.max")).unwrap_or_default();
        let weight = read(&d.join("cpu.weight")).unwrap_or_default();
        let max = read(&d.join("cpu.max")).unwrap_or_default();
        return format!(
            "memory.max {} · cpu.weight {weight} · cpu.max {max}",
            if mem == "max" {
                "none".into()
            } else {
                mib(&mem)
            }
        );
    }
    let mem = p
        .v1_dir("memory")
        .and_then(|d| read(&d.join("memory.limit_in_bytes")))
        .map(|m| mib(&m))
        .unwrap_or_else(|| "?".into());
    let cpu = p.v1_dir("cpu");
    let shares = cpu
        .and_then(|d| read(&d.join("cpu.shares")))
        .unwrap_or_default();
    let quota = cpu
        .and_then(|d| read(&d.join("cpu.cfs_quota_us")))
        .unwrap_or_default();
    let period = cpu
        .and_then(|d| read(&d.join("cpu.cfs_period_us")))
        .unwrap_or_default();
    let quota = if quota == "-1" {
        "none".to_string()
    } else {
        format!("{quota}/{period} µs")
    };
    format!("memory.limit_in_bytes {mem} · cpu.shares {shares} · cfs quota {quota}")
}

/// The host side of the pod's eth0: its peer's interface index, read in the pod's
/// network namespace, named on the host.
fn host_veth(infra: i32) -> Option<String> {
    let out = std::process::Command::new("nsenter")
        .args([
            "-t",
            &infra.to_string(),
            "-n",
            "ip",
            "-o",
            "link",
            "show",
            "eth0",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let idx: u32 = text
        .split_whitespace()
        .nth(1)?
        .split("@if")
        .nth(1)?
        .trim_end_matches(':')
        .parse()
        .ok()?;
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let i = read(&e.path().join("ifindex"))?.parse::<u32>().ok()?;
            (i == idx).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Prints the pod's facts.
pub async fn explain(ctx: &Ctx, c: ExplainCommand) -> anyhow::Result<()> {
    let a = match c {
        ExplainCommand::Pod(a) => a,
        ExplainCommand::Path(a) => return crate::explain_path::explain_path(a).await,
    };
    let core = berth_engine::Core::open(&ctx.root)?;
    let by_pod = BTreeMap::from([
        (labels::POD_NAMESPACE.to_string(), a.namespace.clone()),
        (labels::POD_NAME.to_string(), a.name.clone()),
    ]);
    let mut sandboxes = core.list_pod_sandbox(&SandboxFilter {
        labels: by_pod.clone(),
        ..Default::default()
    })?;
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let Some(sb) = sandboxes.first() else {
        bail!(
            "no pod {}/{} runs on this node (under {}): is it bound to this node, and is this the agent's --root?",
            a.namespace,
            a.name,
            ctx.root.display()
        );
    };
    let st = core.pod_sandbox_status(&sb.id)?;
    let uid = sb.labels.get(labels::POD_UID).cloned().unwrap_or_default();
    println!(
        "pod {}/{} (uid {uid}) — sandbox {} (attempt {}), {}",
        a.namespace,
        a.name,
        &sb.id[..12.min(sb.id.len())],
        sb.metadata.attempt,
        if sb.state == SandboxState::Ready {
            "ready"
        } else {
            "not ready"
        }
    );
    let kinds = ["net", "ipc", "uts", "pid", "mnt", "cgroup"];
    match st.infra_pid {
        Some(pid) => {
            let comm = read(Path::new(&format!("/proc/{pid}/comm"))).unwrap_or_default();
            println!("\ninfra process: pid {pid} ({comm}): it holds the pod's namespaces; the pod lives as long as it does");
            for (k, p) in &st.namespace_paths {
                println!(
                    "  {k:<4} inode {:<12} pinned at {}",
                    ns_inode(pid, k).map_or("?".into(), |i| i.to_string()),
                    p.display()
                );
            }
        }
        None => println!("\ninfra process: none running (the sandbox is stopped)"),
    }
    match (st.ip, st.infra_pid) {
        (Some(ip), Some(pid)) => println!(
            "\npod IP {ip} on eth0 in the pod's network namespace (network {}); host side: {}",
            st.network,
            host_veth(pid).unwrap_or_else(|| "not found".into())
        ),
        _ => println!("\nnetwork: {} (no pod IP of its own)", st.network),
    }
    let qos = st.cgroup_parent.split('/').find_map(|p| match p {
        "burstable" => Some("Burstable"),
        "besteffort" => Some("BestEffort"),
        _ => None,
    });
    println!(
        "\ncgroup: {} (QoS class {})",
        st.cgroup_parent,
        qos.unwrap_or("Guaranteed")
    );
    println!("  pod            {}", limits(&st.cgroup_parent));
    let mut ctrs = core.list_containers(&ContainerFilter {
        sandbox_id: Some(sb.id.clone()),
        ..Default::default()
    })?;
    ctrs.sort_by_key(|c| (c.metadata.name.clone(), c.metadata.attempt));
    let mut details = Vec::new();
    for c in &ctrs {
        let cs = core.container_status(&c.id)?;
        println!("  {:<14} {}", c.metadata.name, limits(&cs.cgroup));
        details.push(cs);
    }
    println!("\ncontainers:");
    for cs in &details {
        let c = &cs.summary;
        let state = c.state.word();
        let Some(pid) = c.state.pid() else {
            println!(
                "  {} (attempt {}): {state}, exit code {}",
                c.metadata.name, c.metadata.attempt, cs.exit_code
            );
            continue;
        };
        println!(
            "  {} (attempt {}): pid {pid}, {state}, image {}",
            c.metadata.name, c.metadata.attempt, c.image
        );
        let (mut shared, mut own) = (Vec::new(), Vec::new());
        for k in kinds {
            let mine = ns_inode(pid, k);
            let pods = st.infra_pid.and_then(|i| ns_inode(i, k));
            let host = ns_inode(std::process::id() as i32, k);
            if mine.is_some() && mine == pods {
                shared.push(k);
            } else if mine.is_some() && mine == host {
                own.push(format!("{k} (the host's)"));
            } else {
                own.push(k.to_string());
            }
        }
        println!("    shares with the pod: {}", shared.join(" "));
        println!("    its own:             {}", own.join(" "));
        let mountinfo =
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        for m in &cs.config.mounts {
            let seen = mountinfo
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(m.container_path.as_str()));
            let source = m.host_path.display().to_string();
            let kind = [
                "empty-dir",
                "configmap",
                "secret",
                "downward-api",
                "projected",
            ]
            .iter()
            .find(|k| source.contains(&format!("/volumes/{k}/")))
            .map(|k| k.to_string())
            .unwrap_or_else(|| {
                if source.contains("/volume-subpaths/") {
                    "subPath".into()
                } else if source.contains("/containers/") {
                    "termination message".into()
                } else {
                    "host path".into()
                }
            });
            println!(
                "    {} ← {kind} {source}{}{}",
                m.container_path,
                if m.readonly { " (read-only)" } else { "" },
                if seen {
                    ""
                } else {
                    " — NOT in its mountinfo"
                }
            );
        }
    }
    Ok(())
}
