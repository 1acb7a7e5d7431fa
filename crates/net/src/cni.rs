//! CNI: handing a container's network namespace to standard CNI plugins, as the CNI
//! specification describes — a network configuration list from a conf directory, each
//! plugin run with CNI_COMMAND=ADD/DEL/CHECK and its configuration (with the previous
//! plugin's result) on stdin. Tested with Debian's containernetworking-plugins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::ports::PortMap;

/// Where configurations are looked for: `$BERTH_CNI_CONF_DIR`, else /etc/cni/net.d.
pub fn conf_dir() -> PathBuf {
    std::env::var_os("BERTH_CNI_CONF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/cni/net.d"))
}

/// Where plugins are looked for: `$BERTH_CNI_PATH` (colon-separated), else
/// /usr/lib/cni and /opt/cni/bin.
pub fn plugin_path() -> String {
    std::env::var("BERTH_CNI_PATH").unwrap_or_else(|_| "/usr/lib/cni:/opt/cni/bin".into())
}

/// The configuration list named `name` in the conf directory (a `.conflist`, or a
/// single-plugin `.conf` taken as a list of one).
pub fn load(name: &str) -> Result<Value> {
    load_from(&conf_dir(), name)
}

fn conf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
        })
        .collect();
    entries.sort();
    Ok(entries)
}

/// The name of the network in conf directory `dir` that pods get: the first file's, in
/// name order (as the kubelet's runtimes choose). None when the directory is missing
/// or has none.
pub fn default_network(dir: &Path) -> Option<String> {
    let first = conf_files(dir).ok()?.into_iter().next()?;
    let v: Value = serde_json::from_slice(&std::fs::read(first).ok()?).ok()?;
    v["name"].as_str().map(str::to_string)
}

/// [`load`] from the conf directory `dir`.
pub fn load_from(dir: &Path, name: &str) -> Result<Value> {
    let mut names = Vec::new();
    let entries = conf_files(dir)
        .map_err(|e| Error::io(format!("read the CNI conf dir {}", dir.display()), e))?;
    for p in entries {
        let Ok(text) = std::fs::read(&p) else {
            continue;
        };
        let v: Value = serde_json::from_slice(&text).map_err(|e| {
            Error::Invalid(format!("{}: not a CNI configuration: {e}", p.display()))
        })?;
        let n = v["name"].as_str().unwrap_or("").to_string();
        if n == name {
            if v.get("plugins").is_some() {
                return Ok(v);
            }
            // A single-plugin configuration.
            return Ok(json!({"cniVersion": v["cniVersion"], "name": n, "plugins": [v]}));
        }
        names.push(n);
    }
    Err(Error::NotFound(format!(
        "no CNI network {name:?} in {} (there: {})",
        dir.display(),
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    )))
}

fn find_plugin(kind: &str) -> Result<PathBuf> {
    let path = plugin_path();
    path.split(':')
        .map(|d| Path::new(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "CNI plugin {kind:?} is not in {path} (apt-get install containernetworking-plugins)"
            ))
        })
}

/// Runs one plugin; returns its stdout JSON (ADD's result; Null for DEL and CHECK).
fn exec(command: &str, conf: &Value, id: &str, netns: &Path, ifname: &str) -> Result<Value> {
    let kind = conf["type"].as_str().unwrap_or("");
    let plugin = find_plugin(kind)?;
    let mut child = Command::new(&plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", plugin_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("run CNI plugin {}", plugin.display()), e))?;
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(&serde_json::to_vec(conf).expect("JSON"));
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("run CNI plugin {}", plugin.display()), e))?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        // The spec's error object: {"code": N, "msg": "...", "details": "..."}.
        let msg = v["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        let details = v["details"].as_str().unwrap_or("");
        return Err(Error::Invalid(format!(
            "CNI plugin {kind} {command} failed: {msg}{}",
            if details.is_empty() {
                String::new()
            } else {
                format!(" ({details})")
            }
        )));
    }
    Ok(v)
}

/// The configuration one plugin of `list` gets: its own object plus the list's name and
/// version, the previous result, and runtime values for the capabilities it declares.
fn plugin_conf(list: &Value, plugin: &Value, prev: &Value, ports: &[PortMap]) -> Value {
    let mut c = plugin.clone();
    c["name"] = list["name"].clone();
    c["cniVersion"] = list["cniVersion"].clone();
    if !prev.is_null() {
        c["prevResult"] = prev.clone();
    }
    if plugin["capabilities"]["portMappings"] == true {
        c["runtimeConfig"]["portMappings"] = ports
            .iter()
            .map(|p| {
                let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.proto.to_string()});
                if let Some(ip) = p.host_ip {
                    m["hostIP"] = json!(ip.to_string());
                }
                m
            })
            .collect();
    }
    c
}

/// ADD: runs the list's plugins in order; returns the last result. If one fails, the
/// ones before it are deleted again.
pub fn add(list: &Value, id: &str, netns: &Path, ifname: &str, ports: &[PortMap]) -> Result<Value> {
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    let mut prev = Value::Null;
    for (i, p) in plugins.iter().enumerate() {
        match exec(
            "ADD",
            &plugin_conf(list, p, &prev, ports),
            id,
            netns,
            ifname,
        ) {
            Ok(r) => prev = r,
            Err(e) => {
                for q in plugins[..i].iter().rev() {
                    let _ = exec(
                        "DEL",
                        &plugin_conf(list, q, &prev, ports),
                        id,
                        netns,
                        ifname,
                    );
                }
                return Err(e);
            }
        }
    }
    Ok(prev)
}

/// DEL: the plugins in reverse order, with the result ADD gave; errors are collected
/// and the first returned, after every plugin had its turn.
pub fn del(
    list: &Value,
    id: &str,
    netns: &Path,
    ifname: &str,
    ports: &[PortMap],
    result: &Value,
) -> Result<()> {
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    let mut first = None;
    for p in plugins.iter().rev() {
        if let Err(e) = exec(
            "DEL",
            &plugin_conf(list, p, result, ports),
            id,
            netns,
            ifname,
        ) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// CHECK: each plugin confirms that what ADD made is still there.
pub fn check(
    list: &Value,
    id: &str,
    netns: &Path,
    ifname: &str,
    ports: &[PortMap],
    result: &Value,
) -> Result<()> {
    for p in list["plugins"].as_array().cloned().unwrap_or_default() {
        exec(
            "CHECK",
            &plugin_conf(list, &p, result, ports),
            id,
            netns,
            ifname,
        )?;
    }
    Ok(())
}

/// The container's first IPv4 address in a result.
pub fn result_ip(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|i| i["address"].as_str())
        .find_map(|a| a.split('/').next()?.parse().ok())
}
