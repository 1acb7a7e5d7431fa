//! A plugin's Allocate answer applied to a container's config, as the kubelet hands
//! it to the runtime: device nodes (allowed in the device cgroup by the engine),
//! bind mounts, environment, annotations, and CDI devices resolved from the specs.

use std::path::PathBuf;

use berth_deviceplugin::v1beta1::ContainerAllocateResponse;
use berth_engine::cri::{ContainerConfig, Device, KeyValue, Mount, MountKind};

/// Applies `answers` to `cfg`; a later answer's device, mount or variable at the same
/// path or name replaces an earlier one. A CDI device no spec in `cdi_dirs` defines
/// is an error naming it.
pub fn apply(
    answers: &[ContainerAllocateResponse],
    cfg: &mut ContainerConfig,
    cdi_dirs: &[PathBuf],
) -> Result<(), String> {
    let mut cdi = Vec::new();
    for a in answers {
        for d in &a.devices {
            cfg.devices.retain(|x| x.container_path != d.container_path);
            cfg.devices.push(Device {
                container_path: d.container_path.clone(),
                host_path: d.host_path.clone().into(),
                permissions: d.permissions.clone(),
            });
        }
        for m in &a.mounts {
            cfg.mounts.retain(|x| x.container_path != m.container_path);
            cfg.mounts.push(Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone().into(),
                readonly: m.read_only,
                kind: MountKind::Bind,
                ..Default::default()
            });
        }
        let mut envs: Vec<_> = a.envs.iter().collect();
        envs.sort();
        for (k, v) in envs {
            cfg.envs.retain(|x| &x.key != k);
            cfg.envs.push(KeyValue {
                key: k.clone(),
                value: v.clone(),
            });
        }
        for (k, v) in &a.annotations {
            cfg.annotations.insert(k.clone(), v.clone());
        }
        cdi.extend(a.cdi_devices.iter().map(|d| d.name.clone()));
    }
    if !cdi.is_empty() {
        berth_engine::cdi::Registry::load(cdi_dirs)
            .and_then(|r| r.apply(&cdi, cfg))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_deviceplugin::v1beta1::{CdiDevice, DeviceSpec, Mount as PluginMount};

    #[test]
    fn an_answer_becomes_devices_mounts_env_annotations_and_cdi_edits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vendor.json"),
            r#"{"cdiVersion": "0.6.0", "kind": "vendor.example/thing",
                "devices": [{"name": "one", "containerEdits": {"env": ["THING=1"]}}]}"#,
        )
        .unwrap();
        let answer = ContainerAllocateResponse {
            envs: [("LOOPS".to_string(), "loop1".to_string())].into(),
            mounts: vec![PluginMount {
                container_path: "/etc/loops".into(),
                host_path: "/tmp".into(),
                read_only: true,
            }],
            devices: vec![DeviceSpec {
                container_path: "/dev/loop1".into(),
                host_path: "/dev/loop1".into(),
                permissions: "rw".into(),
            }],
            annotations: [("example.com/held".to_string(), "loop1".to_string())].into(),
            cdi_devices: vec![CdiDevice {
                name: "vendor.example/thing=one".into(),
            }],
        };
        let mut cfg = ContainerConfig {
            envs: vec![KeyValue {
                key: "LOOPS".into(),
                value: "old".into(),
            }],
            ..Default::default()
        };
        apply(
            std::slice::from_ref(&answer),
            &mut cfg,
            &[dir.path().to_path_buf()],
        )
        .unwrap();
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.devices[0].permissions, "rw");
        assert!(cfg.mounts[0].readonly);
        let env: Vec<(&str, &str)> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(env, [("LOOPS", "loop1"), ("THING", "1")]);
        assert_eq!(cfg.annotations["example.com/held"], "loop1");
        let e = apply(&[answer], &mut ContainerConfig::default(), &[]).unwrap_err();
        assert!(e.contains("vendor.example/thing=one"), "{e}");
    }
}
