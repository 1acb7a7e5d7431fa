//! Container Device Interface: devices named `VENDOR/CLASS=NAME` (`nvidia.com/gpu=0`)
//! resolved from the CDI spec files vendors install (JSON or YAML in /etc/cdi and
//! /var/run/cdi; the later directory wins for a name in both), and applied to a
//! container's config as containerd does: the spec's and the device's container edits —
//! environment, device nodes, mounts. CRI hands the names in `cdi_devices` (or, from
//! older kubelets, in `cdi.k8s.io/*` annotations); device plugins answer Allocate with
//! them.
//!
//! Written here rather than taken from a crate: no maintained Rust crate reads CDI
//! specs, and the part a runtime needs is the small schema below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cri::{ContainerConfig, Device, KeyValue, Mount, MountKind};
use crate::error::{Error, Result};

/// Where CDI specs are, lowest priority first (as the CDI specification orders them).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// The prefix of the annotations older kubelets pass CDI device names in.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// A CDI spec file (the fields a runtime acts on).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<SpecDevice>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDevice {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

/// What a device (or every device of a spec) changes in a container.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<SpecMount>,
    #[serde(default)]
    hooks: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
    #[serde(default)]
    permissions: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecMount {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// One resolvable device: its spec's edits, then its own, and the file it came from.
#[derive(Clone, Debug)]
struct Resolved {
    spec_edits: Edits,
    edits: Edits,
    file: PathBuf,
}

/// The devices the spec directories define, by fully qualified name.
#[derive(Debug, Default)]
pub struct Registry {
    devices: BTreeMap<String, Resolved>,
    /// Spec files that could not be read, with why: left out (one vendor's broken
    /// spec does not take every other device away), and named when a device is not
    /// found.
    unreadable: Vec<String>,
}

impl Registry {
    /// Reads every `*.json`, `*.yaml` and `*.yml` spec of `dirs` (missing directories
    /// are empty). A spec that does not parse is left out, and named in the error of
    /// a device that is then not found.
    pub fn load(dirs: &[PathBuf]) -> Result<Registry> {
        let mut reg = Registry::default();
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "yaml" | "yml")
                    )
                })
                .collect();
            files.sort();
            for f in files {
                if let Err(e) = reg.add(&f) {
                    reg.unreadable.push(e.to_string());
                }
            }
        }
        Ok(reg)
    }

    fn add(&mut self, file: &Path) -> Result<()> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("read CDI spec {}", file.display()), e))?;
        let spec: Spec = serde_yaml::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "CDI spec {}: {e} (a spec has cdiVersion, kind VENDOR/CLASS and devices)",
                file.display()
            ))
        })?;
        if spec.cdi_version.is_empty() || !spec.kind.contains('/') {
            return Err(Error::Invalid(format!(
                "CDI spec {}: kind {:?} is not VENDOR/CLASS, or cdiVersion is missing",
                file.display(),
                spec.kind
            )));
        }
        for d in spec.devices {
            self.devices.insert(
                format!("{}={}", spec.kind, d.name),
                Resolved {
                    spec_edits: spec.container_edits.clone(),
                    edits: d.container_edits,
                    file: file.to_path_buf(),
                },
            );
        }
        Ok(())
    }

    /// Applies the devices `names` to `cfg`: environment (a key given again replaced),
    /// device nodes and mounts. A name no spec defines, or a spec with OCI hooks
    /// (which berth does not run), is an error naming it.
    pub fn apply(&self, names: &[String], cfg: &mut ContainerConfig) -> Result<()> {
        let mut seen_specs = Vec::new();
        for name in names {
            let Some(r) = self.devices.get(name) else {
                let skipped = if self.unreadable.is_empty() {
                    String::new()
                } else {
                    format!(" (specs left out: {})", self.unreadable.join("; "))
                };
                return Err(Error::NotFound(format!(
                    "CDI device {name:?} is not defined by any spec in the CDI directories{skipped}"
                )));
            };
            // A spec's own edits apply once however many of its devices are asked for.
            let spec_once = if seen_specs.contains(&r.file) {
                None
            } else {
                seen_specs.push(r.file.clone());
                Some(&r.spec_edits)
            };
            for e in spec_once.into_iter().chain([&r.edits]) {
                apply_edits(e, name, &r.file, cfg)?;
            }
        }
        Ok(())
    }
}

fn apply_edits(e: &Edits, name: &str, file: &Path, cfg: &mut ContainerConfig) -> Result<()> {
    if !e.hooks.is_empty() {
        return Err(Error::Invalid(format!(
            "CDI device {name:?} ({}) asks for OCI hooks, which berth does not run",
            file.display()
        )));
    }
    for kv in &e.env {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        cfg.envs.retain(|x| x.key != key);
        cfg.envs.push(KeyValue {
            key: key.into(),
            value: value.into(),
        });
    }
    for n in &e.device_nodes {
        cfg.devices.retain(|d| d.container_path != n.path);
        cfg.devices.push(Device {
            container_path: n.path.clone(),
            host_path: n.host_path.clone().unwrap_or_else(|| n.path.clone()).into(),
            permissions: n.permissions.clone().unwrap_or_else(|| "rwm".into()),
        });
    }
    for m in &e.mounts {
        let kind = match m.kind.as_deref() {
            None | Some("bind") | Some("") => MountKind::Bind,
            Some("tmpfs") => MountKind::Tmpfs(
                m.options
                    .iter()
                    .filter(|o| !matches!(o.as_str(), "ro" | "rw" | "bind" | "rbind"))
                    .cloned()
                    .collect(),
            ),
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "CDI device {name:?} ({}): mount type {other:?} is not bind or tmpfs",
                    file.display()
                )))
            }
        };
        cfg.mounts.retain(|x| x.container_path != m.container_path);
        cfg.mounts.push(Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone().into(),
            readonly: m.options.iter().any(|o| o == "ro"),
            kind,
            ..Default::default()
        });
    }
    Ok(())
}

/// The CDI device names a container asks for: `cdi_devices`, then those of the
/// `cdi.k8s.io/*` annotations (comma-separated), each once.
pub fn requested(listed: &[String], annotations: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let from_annotations = annotations
        .iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from);
    for n in listed.iter().cloned().chain(from_annotations) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_json_and_yaml_specs_edit_the_container() {
        let d = tempfile::tempdir().unwrap();
        let (low, high) = (d.path().join("etc"), d.path().join("run"));
        std::fs::create_dir_all(&low).unwrap();
        std::fs::create_dir_all(&high).unwrap();
        std::fs::write(
            low.join("loop.json"),
            r#"{"cdiVersion":"0.6.0","kind":"example.com/loop",
                "containerEdits":{"env":["LOOP_SPEC=1"]},
                "devices":[
                  {"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/loop0","permissions":"rw"}],"env":["LOOP=0"]}},
                  {"name":"1","containerEdits":{"deviceNodes":[{"path":"/dev/xloop1","hostPath":"/dev/loop1"}],"env":["LOOP=1"]}}]}"#,
        )
        .unwrap();
        // The later directory wins for a name both define.
        std::fs::write(
            high.join("loop.yaml"),
            "cdiVersion: 0.6.0\nkind: example.com/loop\ndevices:\n- name: \"1\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/loop1\n    mounts:\n    - hostPath: /srv/data\n      containerPath: /data\n      options: [ro, bind]\n",
        )
        .unwrap();
        std::fs::write(high.join("notes.txt"), "not a spec").unwrap();
        let reg = Registry::load(&[low, high]).unwrap();
        let mut cfg = ContainerConfig::default();
        reg.apply(
            &["example.com/loop=0".into(), "example.com/loop=1".into()],
            &mut cfg,
        )
        .unwrap();
        let env: Vec<_> = cfg
            .envs
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect();
        assert_eq!(env, ["LOOP_SPEC=1", "LOOP=0"]);
        let devs: Vec<_> = cfg
            .devices
            .iter()
            .map(|d| {
                (
                    d.container_path.as_str(),
                    d.host_path.display().to_string(),
                    d.permissions.as_str(),
                )
            })
            .collect();
        assert_eq!(
            devs,
            [
                ("/dev/loop0", "/dev/loop0".to_string(), "rw"),
                ("/dev/loop1", "/dev/loop1".to_string(), "rwm")
            ]
        );
        assert_eq!(cfg.mounts.len(), 1);
        assert!(cfg.mounts[0].readonly && cfg.mounts[0].container_path == "/data");
        let e = reg
            .apply(&["example.com/loop=9".into()], &mut cfg)
            .unwrap_err();
        assert!(e.to_string().contains("example.com/loop=9"), "{e}");
    }

    #[test]
    fn bad_specs_hooks_and_annotations() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.json"), r#"{"kind":"nokind"}"#).unwrap();
        // A broken spec is left out, and named when a device is then missing.
        let reg = Registry::load(&[d.path().to_path_buf()]).unwrap();
        let e = reg
            .apply(&["nokind=x".into()], &mut ContainerConfig::default())
            .unwrap_err();
        assert!(e.to_string().contains("bad.json"), "{e}");
        std::fs::remove_file(d.path().join("bad.json")).unwrap();
        std::fs::write(
            d.path().join("hooks.json"),
            r#"{"cdiVersion":"0.6.0","kind":"v.com/gpu","devices":[{"name":"a","containerEdits":{"hooks":[{"hookName":"createContainer","path":"/bin/true"}]}}]}"#,
        )
        .unwrap();
        let reg = Registry::load(&[d.path().to_path_buf()]).unwrap();
        let e = reg
            .apply(&["v.com/gpu=a".into()], &mut ContainerConfig::default())
            .unwrap_err();
        assert!(e.to_string().contains("hooks"), "{e}");
        let ann = BTreeMap::from([
            (
                "cdi.k8s.io/plugin".to_string(),
                "v.com/gpu=a, v.com/gpu=b".to_string(),
            ),
            ("other".to_string(), "v.com/gpu=c".to_string()),
        ]);
        assert_eq!(
            requested(&["v.com/gpu=b".into()], &ann),
            ["v.com/gpu=b", "v.com/gpu=a"]
        );
    }
}
