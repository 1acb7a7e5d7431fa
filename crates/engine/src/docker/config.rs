//! What a user asks for with `berth run`/`create`: parsed and validated flag values,
//! stored with the container so that a restart recreates exactly the same container.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A bind mount or tmpfs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    /// "bind" or "tmpfs".
    pub kind: String,
    /// Host path (bind).
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// Read-only.
    pub readonly: bool,
    /// Extra options (tmpfs size=..., mode=...).
    pub options: Vec<String>,
}

pub use berth_monitor::supervise::RestartPolicy;

/// Everything `run`/`create` was asked for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunConfig {
    /// Image as given.
    pub image: String,
    /// Command (replaces the image's Cmd).
    pub cmd: Vec<String>,
    /// `--entrypoint` (Some("") clears the image's).
    pub entrypoint: Option<String>,
    /// `-e` and `--env-file` values, `KEY=VALUE` (or `KEY` to take the host's).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-h`.
    pub hostname: Option<String>,
    /// `-v`, `--mount`, `--tmpfs`.
    pub mounts: Vec<MountSpec>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--network`: "bridge" (the default network), a network's name, "none", "host",
    /// "container:ID".
    pub network: String,
    /// Further networks (`berth network connect`), joined at each start after the
    /// first.
    #[serde(default)]
    pub networks: Vec<String>,
    /// `-p` values as given (`[hostIP:][hostPort:]containerPort[/proto]`).
    #[serde(default)]
    pub publish: Vec<String>,
    /// `-P`: publish every port the image exposes on a free host port.
    #[serde(default)]
    pub publish_all: bool,
    /// `--dns`: name servers instead of the host's.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--add-host NAME:IP` lines for /etc/hosts.
    #[serde(default)]
    pub add_hosts: Vec<(String, String)>,
    /// `--procview`: the /proc view's files over /proc and /sys (berth-procview).
    #[serde(default)]
    pub procview: bool,
    /// `--pid`: "", "host", "container:ID".
    pub pid: String,
    /// `--ipc`: "", "host", "container:ID".
    pub ipc: String,
    /// `--uts`: "", "host".
    pub uts: String,
    /// `--cpus` in millicores.
    pub cpus_milli: Option<u64>,
    /// `--cpu-period`.
    pub cpu_period: Option<u64>,
    /// `--cpu-quota`.
    pub cpu_quota: Option<i64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `-m` in bytes.
    pub memory: Option<i64>,
    /// `--memory-swap` in bytes (-1: unlimited).
    pub memory_swap: Option<i64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--ulimit name=soft[:hard]`.
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--device HOST[:CONTAINER][:PERMS]`.
    pub devices: Vec<(String, String, String)>,
    /// `--security-opt seccomp=unconfined|FILE`: None is berth's default profile.
    pub seccomp: Option<String>,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--init`: berth-runtime's reaping init as pid 1, the program its child.
    pub init: bool,
    /// `--stop-signal` (number).
    pub stop_signal: Option<i32>,
    /// `--stop-timeout` in seconds.
    pub stop_timeout: Option<u64>,
    /// `--label k=v`.
    pub labels: Vec<(String, String)>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
}

/// Parses docker's size notation: `512`, `64k`, `256m`, `1g` (binary units).
pub fn parse_size(flag: &str, s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| {
        Error::Invalid(format!(
            "{flag} {s:?}: not a size; use a number with an optional unit b, k, m or g (e.g. 256m)"
        ))
    })?;
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return Err(Error::Invalid(format!(
            "{flag} {s:?}: the size must be positive"
        )));
    }
    Ok((v * mult as f64) as i64)
}

/// Parses `--cpus 1.5` into millicores.
pub fn parse_cpus(s: &str) -> Result<u64> {
    let v: f64 = s.trim().parse().map_err(|_| {
        Error::Invalid(format!(
            "--cpus {s:?}: not a number of CPUs (e.g. 0.5 or 2)"
        ))
    })?;
    let max = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if v.is_nan() || v <= 0.0 || v > max {
        return Err(Error::Invalid(format!(
            "--cpus {s:?}: must be more than 0 and at most the {max} CPUs of this host"
        )));
    }
    Ok((v * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cpus_restart() {
        assert_eq!(parse_size("-m", "256m").unwrap(), 256 << 20);
        assert_eq!(parse_size("-m", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("-m", "4096").unwrap(), 4096);
        assert!(parse_size("-m", "lots")
            .unwrap_err()
            .to_string()
            .contains("not a size"));
        assert!(parse_size("-m", "-5m").is_err());
        assert_eq!(parse_cpus("0.5").unwrap(), 500);
        assert!(parse_cpus("0").is_err());
        assert_eq!(
            "on-failure:3".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure { max: 3 }
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
    }
}
