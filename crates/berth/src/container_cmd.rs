//! `berth run`, `create`, `start`, `stop`, `kill`, `rm`, `ps`, `logs`, `wait`,
//! `inspect`: containers from the command line, with docker's flags and output.

use std::io::{Read, Seek, Write};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};

use berth_engine::docker::config::RestartPolicy;
use berth_engine::docker::{Container as ContainerRecord, State};
use berth_engine::record::{read_json, ExitRecord};
use berth_engine::Engine;
use berth_image::inspect::{human_age, parse_time};

use crate::create_args::{run_config, signal_number, warn_ignored_limits, CreateArgs};
use crate::session;
use crate::table::Table;
use crate::Ctx;

/// Arguments of `run`.
#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// The keys that detach from an attached -i session (default ctrl-p,ctrl-q; an
    /// empty string turns detaching off).
    #[arg(long)]
    detach_keys: Option<String>,
    #[command(flatten)]
    create: CreateArgs,
}

/// Arguments of `ps`.
#[derive(Args)]
pub struct PsArgs {
    /// All containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Full IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: name=, id=, status=, label=, ancestor=.
    #[arg(short, long)]
    filter: Vec<String>,
    /// json, or a template like {{.ID}} {{.Names}}.
    #[arg(long)]
    format: Option<String>,
}

/// Arguments of `logs`.
#[derive(Args)]
pub struct LogsArgs {
    /// Follow the output.
    #[arg(short, long)]
    follow: bool,
    /// Lines from the end (a number or "all").
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since (RFC 3339 time, or a duration like 10m, 1h).
    #[arg(long)]
    since: Option<String>,
    /// Container.
    container: String,
}

/// Arguments of `stop`/`restart`.
#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short, long)]
    time: Option<u64>,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Arguments of `kill`.
#[derive(Args)]
pub struct KillArgs {
    /// Signal (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Arguments of `rm`.
#[derive(Args)]
pub struct RmArgs {
    /// Remove running containers too.
    #[arg(short, long)]
    force: bool,
    /// Also remove anonymous volumes (accepted; volumes are kept by name).
    #[arg(short, long)]
    volumes: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Arguments of `start`.
#[derive(Args)]
pub struct StartArgs {
    /// Attach to the output and wait for the exit.
    #[arg(short, long)]
    attach: bool,
    /// The keys that detach from an attached -i session (default ctrl-p,ctrl-q).
    #[arg(long)]
    detach_keys: Option<String>,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Containers named on the command line.
#[derive(Args)]
pub struct Names {
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Arguments of `inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// Template like {{.State.Status}}, or json.
    #[arg(short, long)]
    format: Option<String>,
    /// container or image (default: try a container, then an image).
    #[arg(long = "type")]
    kind: Option<String>,
    /// Explain a running container from the kernel's view (with --format json: as JSON).
    #[arg(long)]
    explain: bool,
    /// Containers or images.
    #[arg(required = true)]
    names: Vec<String>,
}

pub(crate) fn engine(ctx: &Ctx) -> anyhow::Result<Engine> {
    ctx.check_access()?;
    Ok(Engine::open(&ctx.root)?)
}

/// `berth create`.
pub async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    crate::registry_cmd::ensure_image(ctx, &a.image, a.pull, a.quiet).await?;
    let cfg = run_config(ctx, &a)?;
    warn_ignored_limits(&cfg);
    let e = engine(ctx)?;
    let rec = e.create(cfg, a.name.clone())?;
    println!("{}", rec.id);
    Ok(())
}

/// `berth run`.
pub async fn run(ctx: &Ctx, a: RunArgs) -> anyhow::Result<i32> {
    let c = &a.create;
    crate::registry_cmd::ensure_image(ctx, &c.image, c.pull, c.quiet).await?;
    let cfg = run_config(ctx, &a.create)?;
    warn_ignored_limits(&cfg);
    let e = engine(ctx)?;
    // Held until the container has started (the network helper stays for it).
    let (rec, _hold) = e.create_to_run(cfg, a.create.name.clone())?;
    if !a.detach && (rec.config.tty || rec.config.interactive) {
        let keys = session::detach_keys(a.detach_keys.as_deref())?;
        let started = e.start_attached(&rec, session::terminal_size());
        let (child, _pid, conn) = match started {
            Ok(x) => x,
            Err(err) => {
                if rec.config.auto_remove {
                    let _ = e.remove(&rec, true);
                }
                return Err(err.into());
            }
        };
        return session::run(&e, &rec, Some(child), conn, &keys);
    }
    if a.detach {
        let _pid = match e.start(&rec) {
            Ok(x) => x,
            Err(err) => {
                if rec.config.auto_remove {
                    let _ = e.remove(&rec, true);
                }
                return Err(err.into());
            }
        };
        println!("{}", rec.id);
        return Ok(0);
    }
    let started = e.start_following(&rec);
    let (child, _pid, output) = match started {
        Ok(x) => x,
        Err(err) => {
            if rec.config.auto_remove {
                let _ = e.remove(&rec, true);
            }
            return Err(err.into());
        }
    };
    follow_until_exit(&e, &rec, child, output).await
}

/// Prints the container's output, as its monitor sends it, until the monitor ends;
/// returns the exit code. Ctrl-C and SIGTERM are passed on to the container, as docker
/// does.
async fn follow_until_exit(
    e: &Engine,
    rec: &ContainerRecord,
    mut child: std::process::Child,
    output: berth_engine::docker::MonitorOutput,
) -> anyhow::Result<i32> {
    let mut reader = tokio::task::spawn_blocking(move || {
        berth_engine::docker::read_frames(output, |stderr, data| {
            if stderr {
                let mut w = std::io::stderr().lock();
                let _ = w.write_all(data);
                let _ = w.flush();
            } else {
                let mut w = std::io::stdout().lock();
                let _ = w.write_all(data);
                let _ = w.flush();
            }
        })
    });
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = &mut reader => break,
            _ = sigint.recv() => { let _ = e.kill(rec, "INT", false); }
            _ = sigterm.recv() => { let _ = e.kill(rec, "TERM", false); }
        }
    }
    let st = child.wait()?;
    match read_json::<ExitRecord>(&e.paths(&rec.id).exit()) {
        Ok(Some(x)) if !x.error.is_empty() => {
            eprintln!("Error: {}", x.error);
            Ok(x.exit_code)
        }
        Ok(Some(x)) => Ok(x.exit_code),
        // A --rm container is gone: its monitor's exit status is the container's.
        _ => Ok(st.code().unwrap_or(125)),
    }
}

/// Prints new complete log lines from `offset` on.
fn copy_log(path: &std::path::Path, offset: &mut u64, partial: &mut Vec<u8>, timestamps: bool) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    if f.seek(std::io::SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
        return;
    }
    *offset += buf.len() as u64;
    partial.extend_from_slice(&buf);
    let mut start = 0;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    while let Some(i) = partial[start..].iter().position(|&b| b == b'\n') {
        let line = &partial[start..start + i];
        if let Some(en) = berth_engine::log::parse(line) {
            let w: &mut dyn Write = if en.stderr { &mut err } else { &mut out };
            if timestamps {
                let _ = write!(w, "{} ", en.time);
            }
            let _ = w.write_all(en.content);
            if en.full {
                let _ = w.write_all(b"\n");
            }
        }
        start += i + 1;
    }
    partial.drain(..start);
    let _ = out.flush();
}

/// `berth start`.
pub async fn start(ctx: &Ctx, a: StartArgs) -> anyhow::Result<i32> {
    let e = engine(ctx)?;
    let mut code = 0;
    for name in &a.containers {
        let rec = e.find(name)?;
        if a.attach && a.containers.len() == 1 && (rec.config.tty || rec.config.interactive) {
            let keys = session::detach_keys(a.detach_keys.as_deref())?;
            let (child, _, conn) = e.start_attached(&rec, session::terminal_size())?;
            return session::run(&e, &rec, Some(child), conn, &keys);
        }
        if a.attach && a.containers.len() == 1 {
            let (child, _, output) = e.start_following(&rec)?;
            return follow_until_exit(&e, &rec, child, output).await;
        }
        e.start(&rec)?;
        println!("{name}");
        code = 0;
    }
    Ok(code)
}

fn each(
    ctx: &Ctx,
    names: &[String],
    f: impl Fn(&Engine, &ContainerRecord) -> berth_engine::Result<()>,
) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    let mut failed = 0;
    for n in names {
        match e.find(n).and_then(|r| f(&e, &r)) {
            Ok(()) => println!("{n}"),
            Err(err) => {
                eprintln!("Error: {err}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} containers failed", names.len());
    }
    Ok(())
}

/// `berth stop`.
pub fn stop(ctx: &Ctx, a: StopArgs) -> anyhow::Result<()> {
    let t = a.time.map(Duration::from_secs);
    each(ctx, &a.containers, |e, r| e.stop(r, t))
}

/// `berth restart`.
pub fn restart(ctx: &Ctx, a: StopArgs) -> anyhow::Result<()> {
    let t = a.time.map(Duration::from_secs);
    each(ctx, &a.containers, |e, r| {
        e.stop(r, t)?;
        e.start(r).map(drop)
    })
}

/// `berth kill`.
pub fn kill(ctx: &Ctx, a: KillArgs) -> anyhow::Result<()> {
    let sig = signal_number(&a.signal)?.to_string();
    each(ctx, &a.containers, |e, r| e.kill(r, &sig, true))
}

/// `berth rm`.
pub fn rm(ctx: &Ctx, a: RmArgs) -> anyhow::Result<()> {
    each(ctx, &a.containers, |e, r| e.remove(r, a.force))
}

/// `berth wait`.
pub fn wait(ctx: &Ctx, a: Names) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    for n in &a.containers {
        let rec = e.find(n)?;
        println!("{}", e.wait(&rec)?);
    }
    Ok(())
}

fn status_text(state: &State, rec: &ContainerRecord, e: &Engine) -> String {
    match state {
        State::Created => "Created".into(),
        State::Running(_) => {
            let started = read_json::<serde_json::Value>(&e.paths(&rec.id).monitor_pid())
                .ok()
                .flatten();
            let _ = started;
            format!("Up {}", human_age(&rec.created).trim_end_matches(" ago"))
        }
        State::Orphaned(_) => "Up (monitor lost)".into(),
        State::Paused(_) => format!(
            "Up {} (Paused)",
            human_age(&rec.created).trim_end_matches(" ago")
        ),
        State::Restarting => "Restarting".into(),
        State::Exited(code, at) => format!("Exited ({code}) {}", human_age(at)),
        State::Dead => "Dead".into(),
    }
}

/// docker's PORTS column: `0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp`.
fn ports_text(e: &Engine, r: &ContainerRecord) -> String {
    e.published_ports(r)
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string()),
                p.host_port,
                p.container_port,
                p.proto
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// docker's NetworkSettings, from the container's network record (empty when it has
/// no network of its own or is not running).
fn network_settings(e: &Engine, r: &ContainerRecord) -> Value {
    let att = e.attachment(r);
    let mut ports = serde_json::Map::new();
    let mut networks = serde_json::Map::new();
    for p in e.published_ports(r) {
        let key = format!("{}/{}", p.container_port, p.proto);
        let binding = json!({"HostIp": p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string()), "HostPort": p.host_port.to_string()});
        match ports.get_mut(&key).and_then(Value::as_array_mut) {
            Some(list) => list.push(binding),
            None => {
                ports.insert(key, json!([binding]));
            }
        }
    }
    if let Some(a) = &att {
        for x in std::iter::once(a.clone()).chain(e.extra_attachments(r)) {
            networks.insert(
                x.network.clone(),
                json!({
                    "NetworkID": x.network_id,
                    "EndpointID": x.host_veth,
                    "Gateway": x.gateway.to_string(),
                    "IPAddress": x.ip.map(|i| i.to_string()).unwrap_or_default(),
                    "IPPrefixLen": x.prefix,
                    "MacAddress": x.mac,
                    "GlobalIPv6Address": x.ip6.map(|i| i.to_string()).unwrap_or_default(),
                    "GlobalIPv6PrefixLen": x.prefix6,
                    "IPv6Gateway": x.gateway6.map(|i| i.to_string()).unwrap_or_default(),
                    "Aliases": [r.name.clone()],
                }),
            );
        }
    }
    let ip = att
        .as_ref()
        .and_then(|a| a.ip)
        .map(|i| i.to_string())
        .unwrap_or_default();
    json!({
        "SandboxID": r.sandbox_id,
        "SandboxKey": att.as_ref().map(|a| a.netns.display().to_string()).unwrap_or_default(),
        "Ports": ports,
        "IPAddress": ip,
        "IPPrefixLen": att.as_ref().map_or(0, |a| a.prefix),
        "Gateway": att.as_ref().map(|a| a.gateway.to_string()).unwrap_or_default(),
        "MacAddress": att.as_ref().map(|a| a.mac.clone()).unwrap_or_default(),
        "GlobalIPv6Address": att.as_ref().and_then(|a| a.ip6).map(|i| i.to_string()).unwrap_or_default(),
        "GlobalIPv6PrefixLen": att.as_ref().map_or(0, |a| a.prefix6),
        "IPv6Gateway": att.as_ref().and_then(|a| a.gateway6).map(|i| i.to_string()).unwrap_or_default(),
        "Networks": networks,
    })
}

fn ps_row(e: &Engine, r: &ContainerRecord, no_trunc: bool) -> Value {
    let state = e.state(r);
    let mut cmd = r.args.join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = format!("{}…", cmd.chars().take(19).collect::<String>());
    }
    json!({
        "ID": if no_trunc { r.id.clone() } else { r.id[..12].to_string() },
        "Image": r.config.image,
        "Command": format!("\"{cmd}\""),
        "CreatedAt": r.created,
        "RunningFor": human_age(&r.created),
        "Status": status_text(&state, r, e),
        "State": state.word(),
        "Ports": ports_text(e, r),
        "Names": r.name,
        "Labels": r.config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
    })
}

/// `berth ps`.
pub fn ps(ctx: &Ctx, a: PsArgs) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    let mut rows = Vec::new();
    for r in e.list()?.into_iter().rev() {
        let state = e.state(&r);
        let running = matches!(
            state,
            State::Running(_) | State::Paused(_) | State::Orphaned(_) | State::Restarting
        );
        if !a.all && !running {
            continue;
        }
        let mut keep = true;
        for f in &a.filter {
            let (k, v) = f
                .split_once('=')
                .with_context(|| format!("--filter {f:?}: use KEY=VALUE"))?;
            keep &= match k {
                "name" => r.name.contains(v),
                "id" => r.id.starts_with(v),
                "status" => state.word() == v,
                "label" => {
                    let (lk, lv) = v.split_once('=').map_or((v, None), |(a, b)| (a, Some(b)));
                    r.config
                        .labels
                        .iter()
                        .any(|(k2, v2)| k2 == lk && lv.is_none_or(|x| x == v2))
                }
                "ancestor" => r.config.image == v,
                other => bail!("--filter {other:?}: use name, id, status, label or ancestor"),
            };
        }
        if keep {
            rows.push((r.clone(), ps_row(&e, &r, a.no_trunc)));
        }
    }
    if a.quiet {
        for (_, v) in rows {
            println!("{}", v["ID"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    match a.format.as_deref() {
        Some("json") => {
            for (_, v) in rows {
                println!("{v}");
            }
            return Ok(());
        }
        Some(t) => {
            for (_, v) in rows {
                println!("{}", crate::image_cmd::apply_template(&v, t)?);
            }
            return Ok(());
        }
        None => {}
    }
    // What berth found that its records did not say.
    for r in e.list()? {
        match e.state(&r) {
            State::Orphaned(pid) => eprintln!(
                "note: the monitor of {} is gone (killed, or lost in a crash); its process {pid} runs unwatched: output is no longer logged, stop and rm still work",
                r.name
            ),
            State::Dead => eprintln!(
                "note: {} ended without its monitor recording how (a host reboot?); its exit code is unknown",
                r.name
            ),
            _ => {}
        }
    }
    let mut t = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for (_, v) in rows {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        t.row(vec![
            s("ID"),
            s("Image"),
            s("Command"),
            s("RunningFor"),
            s("Status"),
            s("Ports"),
            s("Names"),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `berth logs`.
pub async fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    let rec = e.find(&a.container)?;
    let path = e.log_path(&rec);
    let since = match &a.since {
        None => None,
        Some(s) => Some(match parse_time(s) {
            Some(t) => t,
            None => {
                let d = humantime_secs(s).with_context(|| {
                    format!("--since {s:?}: use an RFC 3339 time or a duration like 10m")
                })?;
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
                    .saturating_sub(d)
            }
        }),
    };
    let data = std::fs::read(&path).unwrap_or_default();
    let mut lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(t) = since {
        lines.retain(|l| {
            berth_engine::log::parse(l)
                .and_then(|en| parse_time(en.time))
                .is_some_and(|x| x >= t)
        });
    }
    if a.tail != "all" {
        let n: usize = a
            .tail
            .parse()
            .with_context(|| format!("--tail {:?}: a number or all", a.tail))?;
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for l in &lines {
            if let Some(en) = berth_engine::log::parse(l) {
                let w: &mut dyn Write = if en.stderr { &mut err } else { &mut out };
                if a.timestamps {
                    write!(w, "{} ", en.time)?;
                }
                w.write_all(en.content)?;
                if en.full {
                    w.write_all(b"\n")?;
                }
            }
        }
        out.flush()?;
    }
    if a.follow {
        let mut offset = data.len() as u64;
        let mut partial = Vec::new();
        loop {
            copy_log(&path, &mut offset, &mut partial, a.timestamps);
            match e.state(&rec) {
                State::Running(_) | State::Restarting => {}
                _ => {
                    copy_log(&path, &mut offset, &mut partial, a.timestamps);
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn humantime_secs(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    })
}

/// The `docker inspect` document of a container.
pub fn inspect_json(e: &Engine, r: &ContainerRecord) -> Value {
    let state = e.state(r);
    let exit: ExitRecord = read_json(&e.paths(&r.id).exit())
        .ok()
        .flatten()
        .unwrap_or_default();
    let pid = match state {
        State::Running(p) | State::Paused(p) | State::Orphaned(p) => p,
        _ => 0,
    };
    let c = &r.config;
    let (upper, _, _) = e.images().container_paths(&r.id);
    json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.args.first(),
        "Args": r.args.get(1..).unwrap_or(&[]),
        "State": {
            "Status": state.word(),
            "Running": matches!(state, State::Running(_) | State::Paused(_) | State::Orphaned(_)),
            "Paused": matches!(state, State::Paused(_)),
            "Restarting": state == State::Restarting,
            "OOMKilled": exit.oom_killed,
            "Dead": state == State::Dead,
            "Pid": pid,
            "ExitCode": exit.exit_code,
            "Error": exit.error,
            "LogError": exit.log_error,
            "StartedAt": exit.started_at,
            "FinishedAt": exit.finished_at,
        },
        "Image": r.image_id,
        "ResolvConfPath": e.sandbox_dir(r).join("resolv.conf").display().to_string(),
        "HostnamePath": e.sandbox_dir(r).join("hostname").display().to_string(),
        "HostsPath": e.sandbox_dir(r).join("hosts").display().to_string(),
        "NetworkSettings": network_settings(e, r),
        "LogPath": e.log_path(r),
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "overlay",
        "HostConfig": {
            "Binds": c.mounts.iter().filter(|m| m.kind == "bind").map(|m| format!("{}:{}{}", m.source, m.destination, if m.readonly { ":ro" } else { "" })).collect::<Vec<_>>(),
            "NetworkMode": c.network,
            "PortBindings": c.publish,
            "PublishAllPorts": c.publish_all,
            "Dns": c.dns,
            "ExtraHosts": c.add_hosts.iter().map(|(n, ip)| format!("{n}:{ip}")).collect::<Vec<_>>(),
            "PidMode": c.pid,
            "IpcMode": c.ipc,
            "UTSMode": c.uts,
            "RestartPolicy": match &c.restart {
                RestartPolicy::No => json!({"Name": "no", "MaximumRetryCount": 0}),
                RestartPolicy::OnFailure { max } => json!({"Name": "on-failure", "MaximumRetryCount": max}),
                RestartPolicy::Always => json!({"Name": "always", "MaximumRetryCount": 0}),
                RestartPolicy::UnlessStopped => json!({"Name": "unless-stopped", "MaximumRetryCount": 0}),
            },
            "AutoRemove": c.auto_remove,
            "Init": c.init,
            "Privileged": c.privileged,
            "ReadonlyRootfs": c.read_only,
            "CapAdd": c.cap_add,
            "CapDrop": c.cap_drop,
            "Memory": c.memory.unwrap_or(0),
            "MemorySwap": c.memory_swap.unwrap_or(0),
            "NanoCpus": c.cpus_milli.map_or(0, |m| m * 1_000_000),
            "CpuShares": c.cpu_shares.unwrap_or(0),
            "CpuPeriod": c.cpu_period.unwrap_or(0),
            "CpuQuota": c.cpu_quota.unwrap_or(0),
            "CpusetCpus": c.cpuset_cpus.clone().unwrap_or_default(),
            "PidsLimit": c.pids_limit,
            "Ulimits": c.ulimits.iter().map(|(n, s, h)| json!({"Name": n, "Soft": s, "Hard": h})).collect::<Vec<_>>(),
            "SecurityOpt": c.seccomp.as_ref().map(|s| vec![format!("seccomp={s}")]).unwrap_or_default(),
        },
        "GraphDriver": {"Name": "overlay", "Data": {"UpperDir": upper, "MergedDir": r.rootfs}},
        "Mounts": c.mounts.iter().map(|m| json!({"Type": m.kind, "Source": m.source, "Destination": m.destination, "RW": !m.readonly})).collect::<Vec<_>>(),
        "Config": {
            "Hostname": c.hostname.clone().unwrap_or_else(|| r.id[..12].to_string()),
            "User": c.user.clone().unwrap_or_default(),
            "Env": c.env,
            "Cmd": c.cmd,
            "Image": c.image,
            "WorkingDir": c.workdir.clone().unwrap_or_default(),
            "Entrypoint": c.entrypoint,
            "Labels": c.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "StopSignal": c.stop_signal,
            "StopTimeout": c.stop_timeout,
        },
    })
}

/// `berth inspect`: containers (and images, as docker does).
pub fn inspect(ctx: &Ctx, a: InspectArgs) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    if a.explain {
        for n in &a.names {
            let v = e.explain(&e.find(n)?)?;
            match a.format.as_deref() {
                Some("json") => println!("{}", serde_json::to_string_pretty(&v)?),
                Some(t) => println!("{}", crate::image_cmd::apply_template(&v, t)?),
                None => print!("{}", berth_engine::explain::explain_text(&v)),
            }
        }
        return Ok(());
    }
    let mut out = Vec::new();
    for n in &a.names {
        let want_image = a.kind.as_deref() == Some("image");
        let found = if want_image { None } else { e.find(n).ok() };
        match found {
            Some(r) => out.push(inspect_json(&e, &r)),
            None if a.kind.as_deref() != Some("container") => match e.images().inspect(n, None) {
                Ok(v) => out.push(v),
                Err(_) => bail!("no such object: {n}"),
            },
            None => bail!("no such container: {n}"),
        }
    }
    match a.format.as_deref() {
        None | Some("json") => println!("{}", serde_json::to_string_pretty(&out)?),
        Some(t) => {
            for v in &out {
                println!("{}", crate::image_cmd::apply_template(v, t)?);
            }
        }
    }
    Ok(())
}

/// Arguments of `exec`.
#[derive(Args)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Environment variable KEY=VALUE.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Keep stdin open (stdin is passed through).
    #[arg(short, long)]
    interactive: bool,
    /// Container.
    container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `berth exec`.
pub fn exec(ctx: &Ctx, a: ExecArgs) -> anyhow::Result<i32> {
    let e = engine(ctx)?;
    let rec = e.find(&a.container)?;
    let opts = berth_engine::docker::ExecOptions {
        args: a.command,
        env: a.env,
        user: a.user,
        workdir: a.workdir,
        detach: a.detach,
        tty: a.tty,
        interactive: a.interactive,
        privileged: false,
    };
    let s = e.exec(&rec, &opts)?;
    if a.detach {
        return Ok(s.wait()?);
    }
    session::run_exec(s, a.tty, a.interactive)
}

/// `berth pause` / `unpause`.
pub fn pause(ctx: &Ctx, a: Names, pause: bool) -> anyhow::Result<()> {
    each(ctx, &a.containers, |e, r| e.pause(r, pause))
}

/// Arguments of `rename`.
#[derive(Args)]
pub struct RenameArgs {
    /// Container.
    container: String,
    /// New name.
    new_name: String,
}

/// `berth rename`.
pub fn rename(ctx: &Ctx, a: RenameArgs) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    let rec = e.find(&a.container)?;
    e.rename(&rec, &a.new_name)?;
    Ok(())
}

/// Arguments of `commit`.
#[derive(Args)]
pub struct CommitArgs {
    /// Author.
    #[arg(short, long)]
    author: Option<String>,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Dockerfile-style config change (CMD, ENV, WORKDIR...).
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Container.
    container: String,
    /// Name of the new image.
    reference: Option<String>,
}

/// `berth commit`.
pub fn commit(ctx: &Ctx, a: CommitArgs) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    let rec = e.find(&a.container)?;
    let opts = berth_image::commit::NewImage {
        reference: a.reference.as_deref().map(str::parse).transpose()?,
        author: a.author,
        comment: a.message,
        created_by: rec.args.join(" "),
        config_changes: crate::image_cmd::changes(&a.change)?,
    };
    let d = e.commit(&rec, &opts)?;
    let id = e
        .images()
        .resolve_digest(&d, &berth_image::oci::Platform::host())?
        .config_digest;
    println!("{id}");
    Ok(())
}

/// `berth top`.
pub fn top(ctx: &Ctx, a: Names) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    let rec = e.find(&a.containers[0])?;
    let mut t = Table::new(&["UID", "PID", "PPID", "STIME", "TIME", "CMD"]);
    for pid in e.top(&rec)? {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split(' ').collect())
            .unwrap_or_default();
        let ticks = 100.0;
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let cpu = (num(12) + num(13)) / ticks;
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .and_then(|v| v.split_whitespace().next().map(String::from))
            })
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .trim()
            .to_string();
        t.row(vec![
            uid,
            pid.to_string(),
            f.get(2).unwrap_or(&"").to_string(),
            {
                let btime: u64 = std::fs::read_to_string("/proc/stat")
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
                    .unwrap_or(0);
                let started = btime + (num(19) / ticks) as u64;
                let rfc = berth_image::commit::rfc3339(started);
                rfc.get(11..16).unwrap_or("").to_string()
            },
            format!(
                "{:02}:{:02}:{:02}",
                (cpu as u64) / 3600,
                (cpu as u64) / 60 % 60,
                cpu as u64 % 60
            ),
            cmd,
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `berth diff`.
pub fn diff(ctx: &Ctx, a: Names) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    let rec = e.find(&a.containers[0])?;
    for (k, p) in e.diff(&rec)? {
        println!("{k} {p}");
    }
    Ok(())
}

/// Removes every container that is not running (for `system prune`); returns their IDs.
pub fn prune_containers(ctx: &Ctx) -> anyhow::Result<Vec<String>> {
    let e = engine(ctx)?;
    let mut out = Vec::new();
    for r in e.list()? {
        if matches!(
            e.state(&r),
            State::Created | State::Exited(..) | State::Dead
        ) {
            e.remove(&r, false)?;
            out.push(r.id);
        }
    }
    Ok(out)
}
