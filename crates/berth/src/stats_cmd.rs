//! `berth stats`: CPU, memory, block I/O and pids of containers, read from their cgroups
//! (through `berth-runtime events --stats`), as one sample or refreshed every second.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use berth_engine::docker::{Container as ContainerRecord, State};
use berth_engine::Engine;

use crate::container_cmd::engine;
use crate::table::Table;
use crate::Ctx;

/// Arguments of `stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// One sample, then exit (default: refresh every second until interrupted).
    #[arg(long)]
    no_stream: bool,
    /// All containers (default: running).
    #[arg(short, long)]
    all: bool,
    /// json, or a template like {{.Name}} {{.CPUPerc}}.
    #[arg(long)]
    format: Option<String>,
    /// Containers (default: all running, and those started while streaming).
    containers: Vec<String>,
}

/// `berth stats`.
pub fn stats(ctx: &Ctx, a: StatsArgs) -> anyhow::Result<()> {
    let e = engine(ctx)?;
    if berth_engine::rootless::active() && berth_engine::rootless::cgroup_parent().is_none() {
        anyhow::bail!(
            "berth stats reads containers' cgroups, and rootless containers have none on this \
             host: stats and limits need a cgroup v2 subtree delegated to you (as systemd's \
             user@UID.service is)"
        );
    }
    let clear = !a.no_stream && a.format.is_none() && std::io::stdout().is_terminal();
    // CPU use is the difference between two samples: the first frame comes after a
    // short window, the next ones a second after the one before.
    let mut prev: HashMap<String, (Instant, f64)> = HashMap::new();
    for r in select(&e, &a)? {
        if let Some(s) = runtime_stats(&e, &r.id) {
            prev.insert(r.id.clone(), (Instant::now(), cpu_total(&s)));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    loop {
        let recs = select(&e, &a)?;
        let mut rows = Vec::new();
        let mut next = HashMap::new();
        for r in &recs {
            let s = runtime_stats(&e, &r.id);
            let now = Instant::now();
            let cpu_pct = match (&s, prev.get(&r.id)) {
                (Some(s), Some((t0, c0))) => {
                    (cpu_total(s) - c0).max(0.0) / (now - *t0).as_nanos() as f64 * 100.0
                }
                _ => 0.0,
            };
            if let Some(s) = &s {
                next.insert(r.id.clone(), (now, cpu_total(s)));
            }
            rows.push(row(r, s.as_ref(), cpu_pct));
        }
        prev = next;
        let mut frame = String::new();
        if clear {
            // Home and clear, as docker stats redraws its table on a terminal.
            frame.push_str("\x1b[H\x1b[2J");
        }
        frame.push_str(&render(&rows, a.format.as_deref())?);
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the stream quietly.
        if out
            .write_all(frame.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
            || a.no_stream
        {
            return Ok(());
        }
        drop(out);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The containers to show: those named (each must exist), else the running ones (or all).
fn select(e: &Engine, a: &StatsArgs) -> anyhow::Result<Vec<ContainerRecord>> {
    if !a.containers.is_empty() {
        return Ok(a
            .containers
            .iter()
            .map(|n| e.find(n))
            .collect::<Result<_, _>>()?);
    }
    Ok(e.list()?
        .into_iter()
        .filter(|r| {
            a.all
                || matches!(
                    e.state(r),
                    State::Running(_) | State::Paused(_) | State::Orphaned(_)
                )
        })
        .collect())
}

fn runtime_stats(e: &Engine, id: &str) -> Option<Value> {
    let out = e.runtime(&["events", "--stats", id]).output().ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["data"].clone())
}

fn cpu_total(s: &Value) -> f64 {
    s.pointer("/cpu/usage/total")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

fn host_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |k| k * 1024.0)
}

/// One container's line, with docker's field names (for `--format`).
fn row(r: &ContainerRecord, s: Option<&Value>, cpu_pct: f64) -> Value {
    let num = |p: &str| s.and_then(|v| v.pointer(p)).and_then(Value::as_f64);
    let usage = num("/memory/usage/usage").unwrap_or(0.0);
    let host_mem = host_memory();
    // No limit reads as a huge number (v1) or is absent (v2): the host's memory then.
    let limit = num("/memory/usage/limit")
        .filter(|l| *l > 0.0 && *l < host_mem)
        .unwrap_or(host_mem);
    let pids = num("/pids/current").unwrap_or(0.0) as u64;
    let blk = |op: &str| -> f64 {
        s.and_then(|v| v.pointer("/blkio/ioServiceBytesRecursive"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|x| x["op"] == op)
                    .filter_map(|x| x["value"].as_f64())
                    .sum::<f64>()
            })
            .unwrap_or(0.0)
            .max(0.0)
    };
    json!({
        "ID": r.id[..12].to_string(),
        "Name": r.name,
        "CPUPerc": format!("{cpu_pct:.2}%"),
        "MemUsage": format!("{} / {}", bytes_human(usage), bytes_human(limit)),
        "MemPerc": format!("{:.2}%", if limit > 0.0 { usage / limit * 100.0 } else { 0.0 }),
        "NetIO": "--",
        "BlockIO": format!("{} / {}", bytes_human(blk("Read")), bytes_human(blk("Write"))),
        "PIDs": pids,
    })
}

/// One frame: a table, JSON lines, or a template per container.
fn render(rows: &[Value], format: Option<&str>) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        Some("json") => {
            for r in rows {
                out.push_str(&format!("{r}\n"));
            }
        }
        Some(t) => {
            for r in rows {
                out.push_str(&crate::image_cmd::apply_template(r, t)?);
                out.push('\n');
            }
        }
        None => {
            let mut t = Table::new(&[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ]);
            for r in rows {
                let s = |k: &str| {
                    r[k].as_str()
                        .map(String::from)
                        .unwrap_or_else(|| r[k].to_string())
                };
                t.row(
                    [
                        "ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs",
                    ]
                    .iter()
                    .map(|k| s(k))
                    .collect(),
                );
            }
            out.push_str(&t.render());
        }
    }
    Ok(out)
}

fn bytes_human(n: f64) -> String {
    const U: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}{}", U[i])
    } else {
        format!("{v:.2}{}", U[i])
    }
}
