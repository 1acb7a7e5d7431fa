//! Device access rules (`linux.resources.devices`), reduced to what the kernel enforces:
//! a default (allow or deny) plus exceptions, as the v1 devices controller keeps them.
//! The same reduced form drives the v1 files and the v2 eBPF filter, so both hosts
//! enforce the same thing.

use std::path::Path;

use oci_spec::runtime::{Linux, LinuxDeviceType};

use crate::error::{Error, Result};
use crate::paths::write_file;

/// Access bit: create the node (mknod).
pub const MKNOD: u8 = 1;
/// Access bit: read.
pub const READ: u8 = 2;
/// Access bit: write.
pub const WRITE: u8 = 4;
const RWM: u8 = MKNOD | READ | WRITE;

/// One rule: allow or deny `access` to devices of a type and major/minor (None = any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// 'a' (all), 'c' or 'b'.
    pub kind: char,
    /// Major number, None for any.
    pub major: Option<i64>,
    /// Minor number, None for any.
    pub minor: Option<i64>,
    /// Access bits (MKNOD | READ | WRITE).
    pub access: u8,
}

impl DeviceRule {
    fn line(&self) -> String {
        let n = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
        let mut acc = String::new();
        if self.access & READ != 0 {
            acc.push('r');
        }
        if self.access & WRITE != 0 {
            acc.push('w');
        }
        if self.access & MKNOD != 0 {
            acc.push('m');
        }
        format!("{} {}:{} {}", self.kind, n(self.major), n(self.minor), acc)
    }

    fn same_device(&self, o: &DeviceRule) -> bool {
        self.kind == o.kind && self.major == o.major && self.minor == o.minor
    }
}

/// Devices every container may use, appended after the spec's rules as runc does, so a
/// config that starts with "deny all" still gets a working /dev.
const DEFAULT_ALLOWED: &[(char, Option<i64>, Option<i64>, u8)] = &[
    ('c', None, None, MKNOD),
    ('b', None, None, MKNOD),
    ('c', Some(1), Some(3), RWM),
    ('c', Some(1), Some(8), RWM),
    ('c', Some(1), Some(7), RWM),
    ('c', Some(5), Some(0), RWM),
    ('c', Some(1), Some(5), RWM),
    ('c', Some(1), Some(9), RWM),
    ('c', Some(136), None, RWM),
    ('c', Some(5), Some(2), RWM),
    ('c', Some(5), Some(1), RWM),
    ('c', Some(10), Some(200), RWM),
];

/// The effective rule list of a container.
#[derive(Clone, Debug, Default)]
pub struct DeviceRules {
    /// Rules in order; later rules override earlier ones.
    pub rules: Vec<DeviceRule>,
}

fn parse_access(s: Option<&str>, field: &str) -> Result<u8> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(RWM);
    };
    let mut bits = 0;
    for c in s.chars() {
        bits |= match c {
            'r' => READ,
            'w' => WRITE,
            'm' => MKNOD,
            _ => {
                return Err(Error::invalid(format!(
                    "{field}.access {s:?}: only the letters r, w and m are allowed"
                )))
            }
        };
    }
    Ok(bits)
}

fn kind_of(t: Option<LinuxDeviceType>, field: &str) -> Result<char> {
    match t {
        None | Some(LinuxDeviceType::A) => Ok('a'),
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Ok('c'),
        Some(LinuxDeviceType::B) => Ok('b'),
        Some(LinuxDeviceType::P) => Err(Error::invalid(format!(
            "{field}.type \"p\": fifos are not controlled by the devices cgroup (use a, b or c)"
        ))),
    }
}

impl DeviceRules {
    /// The spec's rules, then the default devices, then an allow rule for each device in
    /// `linux.devices` (so the container can use the nodes it is given).
    pub fn for_spec(linux: &Linux) -> Result<DeviceRules> {
        let mut rules = Vec::new();
        if let Some(res) = linux.resources() {
            for (i, d) in res.devices().iter().flatten().enumerate() {
                let f = format!("linux.resources.devices[{i}]");
                rules.push(DeviceRule {
                    allow: d.allow(),
                    kind: kind_of(d.typ(), &f)?,
                    major: d.major(),
                    minor: d.minor(),
                    access: parse_access(d.access().as_deref(), &f)?,
                });
            }
        }
        for &(kind, major, minor, access) in DEFAULT_ALLOWED {
            rules.push(DeviceRule {
                allow: true,
                kind,
                major,
                minor,
                access,
            });
        }
        for (i, d) in linux.devices().iter().flatten().enumerate() {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => 'c',
                LinuxDeviceType::B => 'b',
                LinuxDeviceType::P => continue,
                LinuxDeviceType::A => {
                    return Err(Error::invalid(format!(
                        "linux.devices[{i}].type \"a\" is not a device type (use c, b, u or p)"
                    )))
                }
            };
            rules.push(DeviceRule {
                allow: true,
                kind,
                major: Some(d.major()),
                minor: Some(d.minor()),
                access: RWM,
            });
        }
        Ok(DeviceRules { rules })
    }

    /// Reduces the rules the way the v1 controller does: a type-'a' rule resets the
    /// default and drops exceptions; a rule agreeing with the default removes matching
    /// exceptions; any other rule adds one. Returns (default allows?, exceptions).
    pub fn effective(&self) -> (bool, Vec<DeviceRule>) {
        let mut default_allow = true;
        let mut exceptions: Vec<DeviceRule> = Vec::new();
        for r in &self.rules {
            if r.kind == 'a' {
                default_allow = r.allow;
                exceptions.clear();
                continue;
            }
            if r.allow == default_allow {
                exceptions.retain_mut(|e| {
                    if e.same_device(r) {
                        e.access &= !r.access;
                    }
                    e.access != 0
                });
            } else if let Some(e) = exceptions.iter_mut().find(|e| e.same_device(r)) {
                e.access |= r.access;
            } else {
                exceptions.push(DeviceRule {
                    allow: r.allow,
                    ..r.clone()
                });
            }
        }
        (default_allow, exceptions)
    }

    /// Writes the rules to a v1 devices cgroup directory.
    pub fn write_v1(&self, dir: &Path) -> Result<()> {
        let (default_allow, exceptions) = self.effective();
        let f = "linux.resources.devices";
        let wrap = |e: Error| Error::invalid(format!("{f}: {e}"));
        if default_allow {
            let list = std::fs::read_to_string(dir.join("devices.list")).unwrap_or_default();
            if list.trim() != "a *:* rwm" {
                write_file(&dir.join("devices.allow"), "a").map_err(wrap)?;
            }
        } else {
            write_file(&dir.join("devices.deny"), "a").map_err(wrap)?;
        }
        let file = if default_allow {
            "devices.deny"
        } else {
            "devices.allow"
        };
        for e in &exceptions {
            write_file(&dir.join(file), &e.line()).map_err(wrap)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: char,
        major: Option<i64>,
        minor: Option<i64>,
        access: u8,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access,
        }
    }

    #[test]
    fn deny_all_then_allow() {
        let rules = DeviceRules {
            rules: vec![
                rule(false, 'a', None, None, RWM),
                rule(true, 'c', Some(1), Some(3), RWM),
                rule(true, 'c', Some(1), Some(3), READ),
                rule(false, 'c', Some(1), Some(3), WRITE),
            ],
        };
        let (allow, ex) = rules.effective();
        assert!(!allow);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].access, READ | MKNOD);
        assert_eq!(ex[0].line(), "c 1:3 rm");
    }

    #[test]
    fn allow_all_with_deny_exception() {
        let rules = DeviceRules {
            rules: vec![
                rule(true, 'a', None, None, RWM),
                rule(false, 'b', Some(8), None, WRITE),
            ],
        };
        let (allow, ex) = rules.effective();
        assert!(allow);
        assert_eq!(ex[0].line(), "b 8:* w");
    }

    #[test]
    fn spec_rules_get_defaults_appended() {
        let linux: Linux = serde_json::from_str(
            r#"{"resources":{"devices":[{"allow":false,"access":"rwm"}]},
                "devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229}]}"#,
        )
        .unwrap();
        let rules = DeviceRules::for_spec(&linux).unwrap();
        let (allow, ex) = rules.effective();
        assert!(!allow);
        assert!(ex.iter().any(|e| e.line() == "c 1:3 rwm"));
        assert!(ex.iter().any(|e| e.line() == "c 10:229 rwm"));
        let bad: Linux =
            serde_json::from_str(r#"{"resources":{"devices":[{"allow":true,"access":"rwx"}]}}"#)
                .unwrap();
        assert!(DeviceRules::for_spec(&bad).is_err());
    }
}
