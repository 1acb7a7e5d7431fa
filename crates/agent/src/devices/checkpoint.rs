//! The device manager's checkpoint: which pod's containers hold which devices (with
//! the plugin's Allocate answers) and which devices each resource had, so that an
//! agent restart neither hands held devices out again nor loses what running
//! containers were given. Written whole, atomically, on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_deviceplugin::v1beta1::ContainerAllocateResponse;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::state::{Assigned, DeviceInfo, PodDevices, Resource, State};

/// The file's name in the device plugin directory (the kubelet's own is
/// kubelet_internal_checkpoint, in another format: named apart so that tools reading
/// that one do not misread this).
pub const FILE: &str = "berth_device_checkpoint.json";

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    /// Pod UID → its devices.
    pods: BTreeMap<String, PodEntry>,
    /// Resource → the IDs of its devices.
    registered: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, Deserialize)]
struct PodEntry {
    namespace: String,
    name: String,
    /// Container → resource → devices.
    containers: BTreeMap<String, BTreeMap<String, Entry>>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    ids: Vec<String>,
    /// The plugin's ContainerAllocateResponse, protobuf in base64.
    response: String,
}

/// The checkpoint's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes the allocations that are complete (a running Allocate call is not
/// recorded: after a crash it never happened).
pub fn save(dir: &Path, s: &State) -> std::io::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let pods = s
        .pods
        .iter()
        .map(|(uid, p)| {
            let containers = p
                .containers
                .iter()
                .map(|(c, by)| {
                    let by = by
                        .iter()
                        .filter_map(|(r, a)| {
                            let resp = a.response.as_ref()?;
                            Some((
                                r.clone(),
                                Entry {
                                    ids: a.ids.clone(),
                                    response: b64.encode(resp.encode_to_vec()),
                                },
                            ))
                        })
                        .collect();
                    (c.clone(), by)
                })
                .collect();
            (
                uid.clone(),
                PodEntry {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    containers,
                },
            )
        })
        .collect();
    let registered = s
        .resources
        .iter()
        .map(|(r, res)| (r.clone(), res.devices.keys().cloned().collect()))
        .collect();
    let body = serde_json::to_vec_pretty(&Checkpoint { pods, registered })
        .map_err(std::io::Error::other)?;
    let file = path(dir);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &file)
}

/// Reads the checkpoint: the pods' devices, and each resource's devices as unhealthy
/// until its plugin registers again. No file: an empty book. A file that does not
/// parse is an error naming it.
pub fn load(dir: &Path, now: std::time::Instant) -> Result<State, String> {
    let file = path(dir);
    let body = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    let c: Checkpoint = serde_json::from_slice(&body)
        .map_err(|e| format!("{} is not a device checkpoint: {e}", file.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut s = State::default();
    for (uid, p) in c.pods {
        let mut containers = BTreeMap::new();
        for (name, by) in p.containers {
            let mut out = BTreeMap::new();
            for (r, e) in by {
                let bytes = b64.decode(&e.response).map_err(|err| {
                    format!("{}: pod {uid} container {name}: {err}", file.display())
                })?;
                let resp = ContainerAllocateResponse::decode(bytes.as_slice()).map_err(|err| {
                    format!("{}: pod {uid} container {name}: {err}", file.display())
                })?;
                out.insert(
                    r,
                    Assigned {
                        ids: e.ids,
                        response: Some(resp),
                    },
                );
            }
            containers.insert(name, out);
        }
        s.pods.insert(
            uid,
            PodDevices {
                namespace: p.namespace,
                name: p.name,
                containers,
            },
        );
    }
    for (r, ids) in c.registered {
        let devices = ids
            .into_iter()
            .map(|id| {
                (
                    id,
                    DeviceInfo {
                        healthy: false,
                        numa: Vec::new(),
                    },
                )
            })
            .collect();
        s.resources.insert(
            r,
            Resource {
                devices,
                serving: None,
                gone_since: Some(now),
            },
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_deviceplugin::v1beta1::DeviceSpec;

    #[test]
    fn a_checkpoint_keeps_allocations_and_devices_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::default();
        s.set_devices(
            "example.com/loop",
            &[berth_deviceplugin::v1beta1::Device {
                id: "loop1".into(),
                health: "Healthy".into(),
                topology: None,
            }],
        );
        let resp = ContainerAllocateResponse {
            devices: vec![DeviceSpec {
                container_path: "/dev/loop1".into(),
                host_path: "/dev/loop1".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        let pod = s.pods.entry("uid-1".into()).or_default();
        pod.namespace = "default".into();
        pod.name = "p".into();
        let c = pod.containers.entry("app".into()).or_default();
        c.insert(
            "example.com/loop".into(),
            Assigned {
                ids: vec!["loop1".into()],
                response: Some(resp.clone()),
            },
        );
        c.insert(
            "example.com/other".into(),
            Assigned {
                ids: vec!["x".into()],
                response: None,
            },
        );
        save(dir.path(), &s).unwrap();
        let back = load(dir.path(), std::time::Instant::now()).unwrap();
        let held = &back.pods["uid-1"].containers["app"];
        assert_eq!(held["example.com/loop"].response.as_ref(), Some(&resp));
        // An Allocate call that had not answered is not recorded.
        assert!(!held.contains_key("example.com/other"));
        // Devices come back known but unhealthy until their plugin registers again.
        assert_eq!(back.counts()["example.com/loop"], (1, 0));
        std::fs::write(path(dir.path()), "{").unwrap();
        assert!(load(dir.path(), std::time::Instant::now())
            .unwrap_err()
            .contains("is not a device checkpoint"));
    }
}
