//! Loading and checking a bundle's config.json before anything is created, so that bad
//! input fails with one line naming the field, and nothing is left behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// Reads and parses `<bundle>/config.json`, reporting the JSON path of a field that does
/// not have the expected type or is missing.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            if !bundle.exists() {
                Error::invalid(format!(
                    "bundle {}: no such directory (pass --bundle with the directory that holds config.json)",
                    bundle.display()
                ))
            } else {
                Error::invalid(format!(
                    "{}: no such file (a bundle needs a config.json; `berth-runtime spec` writes a default one)",
                    path.display()
                ))
            }
        } else {
            Error::io(format!("read {}", path.display()), e)
        }
    })?;
    parse(&data).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

/// Parses config.json bytes; the error names the JSON path of the offending field.
pub fn parse(data: &[u8]) -> std::result::Result<Spec, String> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() || inner.is_syntax() || inner.is_eof() {
            format!("invalid JSON: {inner}")
        } else {
            format!("field {path}: {inner}")
        }
    })
}

/// Checks a container id: non-empty, no path separators, no `.`/`..`, printable ASCII
/// from the set runc accepts (letters, digits, `_ + - .`).
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid container id {id:?}: {why} (use letters, digits, '_', '+', '-' and '.')"
        )))
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if id == "." || id == ".." {
        return bad("it is a relative path component");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        let what = if c == '/' {
            "it contains '/'".to_string()
        } else if c.is_control() {
            format!("it contains the control character {:?}", c)
        } else {
            format!("it contains {c:?}")
        };
        return bad(&what);
    }
    Ok(())
}

/// Resolves the rootfs path of a spec against its bundle and checks that it is a
/// directory.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| {
        Error::invalid(
            "config.json: field root is required (root.path names the container's root filesystem)",
        )
    })?;
    let path = root.path();
    if path.as_os_str().is_empty() {
        return Err(Error::invalid("config.json: field root.path is empty"));
    }
    let full = if path.is_absolute() {
        path.clone()
    } else {
        bundle.join(path)
    };
    match std::fs::metadata(&full) {
        Ok(m) if m.is_dir() => Ok(full),
        Ok(_) => Err(Error::invalid(format!(
            "root.path {}: not a directory",
            full.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(format!(
            "root.path {}: no such directory (create the root filesystem there or fix root.path)",
            full.display()
        ))),
        Err(e) => Err(Error::io(format!("stat root.path {}", full.display()), e)),
    }
}

/// Static checks on a spec that need no system state: required fields, duplicates, and
/// the fields berth-runtime does not implement (each rejected by name, never ignored).
pub fn validate(spec: &Spec) -> Result<()> {
    let process = spec.process().as_ref().ok_or_else(|| {
        Error::invalid("config.json: field process is required to create a container")
    })?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::invalid(
            "config.json: field process.args is empty (it must name the program to run)",
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::invalid(format!(
            "config.json: process.cwd {:?} must be an absolute path",
            process.cwd()
        )));
    }
    if let Some(env) = process.env() {
        for (i, e) in env.iter().enumerate() {
            if !e.contains('=') {
                return Err(Error::invalid(format!(
                    "config.json: process.env[{i}] {e:?} is not of the form KEY=value"
                )));
            }
        }
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        && !apparmor_enabled()
    {
        return Err(Error::unsupported(
            "config.json: process.apparmorProfile is set but AppArmor is not enabled on this host (remove the field)",
        ));
    }
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        && !selinux_enabled()
    {
        // As runc and crun: nothing to label on a host without SELinux.
        crate::logging::debug("process.selinuxLabel ignored: SELinux is not enabled on this host");
    }
    let Some(linux) = spec.linux() else {
        return Err(Error::invalid(
            "config.json: field linux is required (berth-runtime runs Linux containers)",
        ));
    };
    let mut seen = HashSet::new();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(Error::invalid(format!(
                "config.json: linux.namespaces[{i}]: namespace type {} is listed twice",
                ns.typ()
            )));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(Error::invalid(format!(
                    "config.json: linux.namespaces[{i}].path {:?} must be absolute",
                    p
                )));
            }
        }
    }
    let new_user = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if new_user
        && (linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
            || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()))
    {
        return Err(Error::invalid(
            "config.json: a new user namespace needs linux.uidMappings and linux.gidMappings",
        ));
    }
    if !new_user && (linux.uid_mappings().is_some() || linux.gid_mappings().is_some()) {
        let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if has_maps {
            return Err(Error::invalid(
                "config.json: linux.uidMappings/gidMappings are set but no new user namespace is requested (add {\"type\":\"user\"} to linux.namespaces)",
            ));
        }
    }
    if linux.intel_rdt().is_some() {
        return Err(Error::unsupported(
            "config.json: linux.intelRdt is not supported by berth-runtime (no resctrl support; remove the field)",
        ));
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(Error::unsupported(
            "config.json: linux.netDevices is not supported by berth-runtime (remove the field)",
        ));
    }
    if linux.memory_policy().is_some() {
        return Err(Error::unsupported(
            "config.json: linux.memoryPolicy is not supported by berth-runtime (remove the field)",
        ));
    }
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) && !selinux_enabled() {
        crate::logging::debug("linux.mountLabel ignored: SELinux is not enabled on this host");
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(Error::invalid(format!(
                "config.json: mounts[{i}].destination {:?} must be an absolute path",
                m.destination()
            )));
        }
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(Error::unsupported(format!(
                "config.json: mounts[{i}]: uidMappings/gidMappings (idmapped mounts) are not supported by berth-runtime"
            )));
        }
    }
    if let Some(hooks) = spec.hooks() {
        let lists = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (name, list) in lists {
            for (i, h) in list.iter().flatten().enumerate() {
                if !h.path().is_absolute() {
                    return Err(Error::invalid(format!(
                        "config.json: hooks.{name}[{i}].path {:?} must be absolute",
                        h.path()
                    )));
                }
                if h.timeout().is_some_and(|t| t <= 0) {
                    return Err(Error::invalid(format!(
                        "config.json: hooks.{name}[{i}].timeout must be greater than zero"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether the host has AppArmor enabled (so a profile could be applied).
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

/// Whether SELinux is enabled: its filesystem is mounted (what libselinux's
/// is_selinux_enabled checks first).
pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// The SELinux label of a spec field, when SELinux is enabled to apply it.
pub fn selinux_label(label: Option<&String>) -> Option<String> {
    label
        .filter(|l| !l.is_empty() && selinux_enabled())
        .cloned()
}

/// Whether the container shares the runtime's mount namespace (the spec lists no
/// mount namespace), so that its mounts lie in the runtime's table under the rootfs.
pub fn shares_mount_namespace(spec: &Spec) -> bool {
    !namespaces(spec)
        .iter()
        .any(|(t, _)| *t == LinuxNamespaceType::Mount)
}

/// The namespace entries of a spec, with their types, in a fixed order.
pub fn namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a\nb", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad:?} must be refused");
        }
        let e = validate_id("a/b").unwrap_err().to_string();
        assert!(e.contains("'/'"), "{e}");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse(br#"{"ociVersion":"1.0.0","process":{"args":"sh"}}"#).unwrap_err();
        assert!(e.contains("process.args"), "{e}");
        let e = parse(b"not json").unwrap_err();
        assert!(e.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn validation() {
        let spec: Spec =
            parse(br#"{"ociVersion":"1.0.0","root":{"path":"r"},"linux":{}}"#).unwrap();
        let e = validate(&spec).unwrap_err().to_string();
        assert!(e.contains("process"), "{e}");
        let spec: Spec = parse(
            br#"{"ociVersion":"1.0.0","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}"#,
        )
        .unwrap();
        let e = validate(&spec).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let spec: Spec = parse(
            br#"{"ociVersion":"1.0.0","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"user"}]}}"#,
        )
        .unwrap();
        let e = validate(&spec).unwrap_err().to_string();
        assert!(e.contains("uidMappings"), "{e}");
    }
}
