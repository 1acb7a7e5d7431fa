//! A rootless container's network: its namespace reached through pasta (passt's
//! namespace mode, Debian's `passt` package), as podman's rootless mode does. pasta runs
//! as the user, copies the host's addresses and routes into the namespace and carries
//! the container's traffic through ordinary sockets of the host; published ports are
//! its listening sockets on the host. It leaves by itself when the namespace's file is
//! removed; [`stop`] makes sure.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::ports::{PortMap, Proto};

/// Where pasta's pid is kept in sandbox directory `dir`.
fn pid_file(dir: &Path) -> PathBuf {
    dir.join("pasta.pid")
}

/// Where the ports pasta publishes are recorded in sandbox directory `dir`.
fn ports_file(dir: &Path) -> PathBuf {
    dir.join("pasta-ports.json")
}

/// The ports published through pasta for the sandbox of directory `dir` (none when
/// it has no pasta).
pub fn ports(dir: &Path) -> Vec<PortMap> {
    std::fs::read(ports_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Starts pasta for the namespace at `netns` with `ports` published, keeping its pid
/// and the ports (host ports given as 0 chosen) in sandbox directory `dir`.
pub fn start(netns: &Path, ports: &[PortMap], dir: &Path) -> Result<()> {
    let pid_file = pid_file(dir);
    let mut chosen = Vec::with_capacity(ports.len());
    for p in ports {
        let mut p = p.clone();
        if p.host_port == 0 {
            p.host_port = free_port(p.proto, p.host_ip)?;
        }
        chosen.push(p);
    }
    let mut cmd = Command::new("pasta");
    cmd.args(["--config-net", "--quiet", "--pid"])
        .arg(&pid_file)
        .arg("--netns")
        .arg(netns);
    for proto in [Proto::Tcp, Proto::Udp] {
        let flag = if proto == Proto::Tcp { "-t" } else { "-u" };
        let specs: Vec<String> = chosen
            .iter()
            .filter(|p| p.proto == proto)
            .map(|p| match p.host_ip {
                Some(ip) => format!("{ip}/{}:{}", p.host_port, p.container_port),
                None => format!("{}:{}", p.host_port, p.container_port),
            })
            .collect();
        if specs.is_empty() {
            // pasta's default forwards whatever the container binds: docker's users
            // expect only what they publish.
            cmd.args([flag, "none"]);
        }
        for s in specs {
            cmd.args([flag, &s]);
        }
    }
    // The host's own loopback services stay out of reach, as on a bridge.
    cmd.args(["-T", "none", "-U", "none"]);
    let out = cmd.output().map_err(|e| {
        Error::Invalid(format!(
            "a rootless container's network needs pasta, which could not run ({e}): \
             install the passt package, or run with --network none or host"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Conflict(format!(
            "pasta could not wire the container's network: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let record = ports_file(dir);
    std::fs::write(
        &record,
        serde_json::to_vec(&chosen).expect("ports serialize"),
    )
    .ctx(|| format!("write {}", record.display()))?;
    Ok(())
}

/// A free host port for `proto` (the kernel's pick of an ephemeral port).
fn free_port(proto: Proto, ip: Option<Ipv4Addr>) -> Result<u16> {
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    let port = match proto {
        Proto::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
        Proto::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
    }
    .ctx(|| format!("find a free {proto} port"))?
    .port();
    Ok(port)
}

/// Stops the sandbox's pasta (directory `dir`) if it still runs (and is pasta), and
/// removes its records.
pub fn stop(dir: &Path) {
    let pid_file = pid_file(dir);
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
        // This sandbox's pasta (its pid file is on its command line), not a process
        // that took the pid since.
        let cmdline =
            std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero())).unwrap_or_default();
        let ours = cmdline
            .split(|&b| b == 0)
            .any(|a| a == pid_file.as_os_str().as_encoded_bytes());
        if ours {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(ports_file(dir));
}
