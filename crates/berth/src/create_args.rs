//! The flags of `berth run` and `berth create`, as docker's, and the RunConfig the
//! engine gets from them (checked before anything is made).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use berth_engine::docker::config::{parse_cpus, parse_size, MountSpec, RunConfig};

use crate::Ctx;

/// Flags of `run` and `create` (docker's names).
#[derive(Args, Clone)]
pub struct CreateArgs {
    /// Print help (-h is --hostname, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
    /// Assign a name.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's).
    #[arg(short, long = "env")]
    pub(crate) env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long)]
    pub(crate) env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub(crate) workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    pub(crate) user: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// Container hostname.
    #[arg(short = 'h', long)]
    pub(crate) hostname: Option<String>,
    /// Bind mount or volume: HOST-PATH|NAME:CONTAINER-PATH[:ro|rw].
    #[arg(short, long = "volume")]
    pub(crate) volume: Vec<String>,
    /// Mount: type=bind|tmpfs|volume,source=...,target=...[,readonly].
    #[arg(long)]
    pub(crate) mount: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS].
    #[arg(long)]
    pub(crate) tmpfs: Vec<String>,
    /// Read-only root filesystem.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Network: bridge (the default network), a network's name, none, host or
    /// container:NAME.
    #[arg(long, alias = "network", default_value = "bridge")]
    pub(crate) net: String,
    /// Publish a port: [hostIP:][hostPort:]containerPort[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub(crate) publish: Vec<String>,
    /// Publish every port the image exposes, on free host ports.
    #[arg(short = 'P', long)]
    pub(crate) publish_all: bool,
    /// A name server for the container (instead of the host's).
    #[arg(long)]
    pub(crate) dns: Vec<String>,
    /// An /etc/hosts line: NAME:IP.
    #[arg(long = "add-host")]
    pub(crate) add_host: Vec<String>,
    /// Serve /proc/meminfo, cpuinfo, stat, uptime, loadavg, diskstats, swaps and the
    /// online CPU list from the container's own limits (what lxcfs does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) procview: bool,
    /// PID namespace: host or container:NAME.
    #[arg(long, default_value = "")]
    pub(crate) pid: String,
    /// IPC namespace: host, private or container:NAME.
    #[arg(long, default_value = "")]
    pub(crate) ipc: String,
    /// UTS namespace: host.
    #[arg(long, default_value = "")]
    pub(crate) uts: String,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    pub(crate) cpus: Option<String>,
    /// CPU CFS period (µs).
    #[arg(long)]
    pub(crate) cpu_period: Option<u64>,
    /// CPU CFS quota (µs).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    pub(crate) cpu_shares: Option<u64>,
    /// CPUs allowed (0-3, 0,1).
    #[arg(long)]
    pub(crate) cpuset_cpus: Option<String>,
    /// Memory limit (e.g. 256m).
    #[arg(short, long)]
    pub(crate) memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) memory_swap: Option<String>,
    /// Process limit (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) pids_limit: Option<i64>,
    /// Resource limit: NAME=SOFT[:HARD].
    #[arg(long)]
    pub(crate) ulimit: Vec<String>,
    /// Add a capability.
    #[arg(long)]
    pub(crate) cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long)]
    pub(crate) cap_drop: Vec<String>,
    /// Give the container every capability and device, no seccomp or masked paths.
    #[arg(long)]
    pub(crate) privileged: bool,
    /// Host device: HOST[:CONTAINER[:PERMS]].
    #[arg(long)]
    pub(crate) device: Vec<String>,
    /// seccomp=unconfined|FILE, no-new-privileges.
    #[arg(long)]
    pub(crate) security_opt: Vec<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no")]
    pub(crate) restart: String,
    /// Run an init as pid 1.
    #[arg(long)]
    pub(crate) init: bool,
    /// Signal to stop the container.
    #[arg(long)]
    pub(crate) stop_signal: Option<String>,
    /// Seconds to wait before killing at stop.
    #[arg(long)]
    pub(crate) stop_timeout: Option<u64>,
    /// Label KEY=VALUE.
    #[arg(short, long = "label")]
    pub(crate) label: Vec<String>,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// Pull the image before creating the container: missing (when it is not in the
    /// store), always, or never (docker's --pull).
    #[arg(long, value_enum, default_value_t = crate::registry_cmd::PullPolicy::Missing)]
    pub(crate) pull: crate::registry_cmd::PullPolicy,
    /// Suppress the pull output.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Image.
    pub(crate) image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

pub(crate) fn signal_number(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    const NAMES: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("WINCH", 28),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .with_context(|| format!("unknown signal {s:?} (e.g. TERM, KILL, HUP or a number)"))
}

/// Turns flags into a RunConfig (validating what can be checked before anything is made).
pub(crate) fn run_config(ctx: &Ctx, a: &CreateArgs) -> anyhow::Result<RunConfig> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    env.extend(a.env.iter().cloned());
    let mut mounts = Vec::new();
    for v in &a.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [d] => ("", *d, ""),
            [s, d] => (*s, *d, ""),
            [s, d, m] => (*s, *d, *m),
            _ => bail!("-v {v:?}: use HOST-PATH:CONTAINER-PATH[:ro|rw] or NAME:CONTAINER-PATH"),
        };
        if !dst.starts_with('/') {
            bail!("-v {v:?}: the container path must be absolute");
        }
        let readonly = match mode {
            "" | "rw" => false,
            "ro" => true,
            m => bail!("-v {v:?}: mode {m:?}: use ro or rw"),
        };
        mounts.push(MountSpec {
            kind: "bind".into(),
            source: volume_source(ctx, src)?,
            destination: dst.into(),
            readonly,
            options: Vec::new(),
        });
    }
    for m in &a.mount {
        let mut kind = "volume".to_string();
        let (mut src, mut dst, mut ro, mut opts) =
            (String::new(), String::new(), false, Vec::new());
        for kv in m.split(',') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "type" => kind = v.into(),
                "source" | "src" => src = v.into(),
                "target" | "destination" | "dst" => dst = v.into(),
                "readonly" | "ro" => ro = v.is_empty() || v == "true" || v == "1",
                "tmpfs-size" => opts.push(format!("size={v}")),
                "tmpfs-mode" => opts.push(format!("mode={v}")),
                other => bail!("--mount {m:?}: unknown key {other:?}"),
            }
        }
        if !dst.starts_with('/') {
            bail!("--mount {m:?}: target= must be an absolute path");
        }
        let (kind, source) = match kind.as_str() {
            "bind" => {
                if !std::path::Path::new(&src).exists() {
                    bail!("--mount {m:?}: bind source {src:?} does not exist (unlike -v, --mount does not create it)");
                }
                ("bind", src)
            }
            "volume" => ("bind", volume_source(ctx, &src)?),
            "tmpfs" => ("tmpfs", String::new()),
            t => bail!("--mount {m:?}: type {t:?}: use bind, volume or tmpfs"),
        };
        mounts.push(MountSpec {
            kind: kind.into(),
            source,
            destination: dst,
            readonly: ro,
            options: opts,
        });
    }
    for t in &a.tmpfs {
        let (dst, opts) = t.split_once(':').unwrap_or((t, ""));
        if !dst.starts_with('/') {
            bail!("--tmpfs {t:?}: the path must be absolute");
        }
        mounts.push(MountSpec {
            kind: "tmpfs".into(),
            source: String::new(),
            destination: dst.into(),
            readonly: false,
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect(),
        });
    }
    let mut ulimits = Vec::new();
    for u in &a.ulimit {
        let (name, vals) = u
            .split_once('=')
            .with_context(|| format!("--ulimit {u:?}: use NAME=SOFT[:HARD]"))?;
        let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
        let num = |s: &str| -> anyhow::Result<u64> {
            if s == "-1" || s == "unlimited" {
                return Ok(u64::MAX);
            }
            s.parse()
                .with_context(|| format!("--ulimit {u:?}: {s:?} is not a number"))
        };
        let (soft, hard) = (num(soft)?, num(hard)?);
        if soft > hard {
            bail!("--ulimit {u:?}: the soft limit is above the hard limit");
        }
        ulimits.push((name.to_string(), soft, hard));
    }
    let mut devices = Vec::new();
    for d in &a.device {
        let parts: Vec<&str> = d.split(':').collect();
        let (h, c, p) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, c] if c.starts_with('/') => (*h, *c, "rwm"),
            [h, p] => (*h, *h, *p),
            [h, c, p] => (*h, *c, *p),
            _ => bail!("--device {d:?}: use HOST[:CONTAINER[:PERMS]]"),
        };
        devices.push((h.to_string(), c.to_string(), p.to_string()));
    }
    let mut seccomp = None;
    let mut nnp = false;
    for o in &a.security_opt {
        match o.split_once(['=', ':']) {
            Some(("seccomp", v)) => seccomp = Some(v.to_string()),
            None if o == "no-new-privileges" => nnp = true,
            Some(("no-new-privileges", v)) => nnp = v == "true",
            Some(("label" | "apparmor", _)) => bail!(
                "--security-opt {o:?}: SELinux labels and AppArmor profiles are not supported yet"
            ),
            _ => bail!("--security-opt {o:?}: use seccomp=unconfined|FILE or no-new-privileges"),
        }
    }
    let labels = a
        .label
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Ok(RunConfig {
        image: a.image.clone(),
        cmd: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        mounts,
        read_only: a.read_only,
        network: a.net.clone(),
        networks: Vec::new(),
        publish: a.publish.clone(),
        publish_all: a.publish_all,
        // A rootless container has no cgroup for the view to read its limits from.
        procview: a.procview && !berth_engine::rootless::active(),
        dns: a.dns.clone(),
        add_hosts: a
            .add_host
            .iter()
            .map(|h| match h.split_once(':') {
                Some((n, ip)) if !n.is_empty() && ip.parse::<std::net::IpAddr>().is_ok() => {
                    Ok((n.to_string(), ip.to_string()))
                }
                _ => Err(anyhow::anyhow!(
                    "--add-host {h:?}: expected NAME:IP (e.g. db:10.0.0.5)"
                )),
            })
            .collect::<anyhow::Result<_>>()?,
        pid: a.pid.clone(),
        ipc: a.ipc.clone(),
        uts: a.uts.clone(),
        cpus_milli: a.cpus.as_deref().map(parse_cpus).transpose()?,
        cpu_period: a.cpu_period,
        cpu_quota: a.cpu_quota,
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus.clone(),
        memory: a
            .memory
            .as_deref()
            .map(|m| parse_size("-m", m))
            .transpose()?,
        memory_swap: match a.memory_swap.as_deref() {
            Some("-1") => Some(-1),
            Some(s) => Some(parse_size("--memory-swap", s)?),
            None => None,
        },
        pids_limit: a.pids_limit,
        ulimits,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        devices,
        seccomp,
        no_new_privileges: nnp,
        restart: a.restart.parse()?,
        auto_remove: a.rm,
        init: a.init,
        stop_signal: a.stop_signal.as_deref().map(signal_number).transpose()?,
        stop_timeout: a.stop_timeout,
        labels,
        tty: a.tty,
        interactive: a.interactive,
    })
}

/// `-v NAME:/path` → `<root>/volumes/NAME/_data` (created); an absolute path is a bind.
fn volume_source(ctx: &Ctx, src: &str) -> anyhow::Result<String> {
    if src.starts_with('/') {
        return Ok(src.to_string());
    }
    let name = if src.is_empty() {
        berth_engine::core::names::new_id()
    } else {
        berth_engine::core::names::check_name(src).map_err(|_| {
            anyhow::anyhow!("volume name {src:?}: use letters, digits, '_', '.', '-' (or an absolute host path)")
        })?;
        src.to_string()
    };
    let dir = ctx.root.join("volumes").join(&name).join("_data");
    std::fs::create_dir_all(&dir).with_context(|| format!("create volume {}", dir.display()))?;
    Ok(dir.display().to_string())
}

/// Says so when limits asked for cannot be had (a rootless container without a
/// delegated cgroup), as podman warns.
pub(crate) fn warn_ignored_limits(cfg: &RunConfig) {
    if let Some(w) = berth_engine::rootless::ignored_limits(cfg) {
        eprintln!("WARNING: {w}");
    }
}
