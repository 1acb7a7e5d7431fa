//! Mount options of config.json (`mounts[].options`) split into what each kernel
//! interface wants: flags for the mount, propagation, recursive attributes, and the
//! filesystem's own data string.

use crate::error::{Error, Result};
use crate::sys::mount_attr as attr;

/// Parsed mount options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// MS_* flags set.
    pub flags: u64,
    /// MS_* flags explicitly cleared (e.g. "rw", "suid").
    pub cleared: u64,
    /// Propagation (MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE, with MS_REC).
    pub propagation: Vec<u64>,
    /// Recursive attributes to set (MOUNT_ATTR_*), from "rro", "rnosuid"...
    pub rec_set: u64,
    /// Recursive attributes to clear, from "rrw", "rsuid"...
    pub rec_clear: u64,
    /// Filesystem-specific options, comma separated.
    pub data: Vec<String>,
    /// "bind" or "rbind" was given.
    pub bind: bool,
    /// "rbind" was given.
    pub recursive: bool,
    /// runc's "tmpcopyup": copy the destination's contents into a new tmpfs.
    pub tmpcopyup: bool,
}

const MS: &[(&str, bool, u64)] = &[
    ("async", false, libc::MS_SYNCHRONOUS),
    ("atime", false, libc::MS_NOATIME),
    ("defaults", true, 0),
    ("dev", false, libc::MS_NODEV),
    ("diratime", false, libc::MS_NODIRATIME),
    ("dirsync", true, libc::MS_DIRSYNC),
    ("exec", false, libc::MS_NOEXEC),
    ("iversion", true, libc::MS_I_VERSION),
    ("lazytime", true, libc::MS_LAZYTIME),
    ("loud", false, libc::MS_SILENT),
    ("mand", true, libc::MS_MANDLOCK),
    ("noatime", true, libc::MS_NOATIME),
    ("nodev", true, libc::MS_NODEV),
    ("nodiratime", true, libc::MS_NODIRATIME),
    ("noexec", true, libc::MS_NOEXEC),
    ("noiversion", false, libc::MS_I_VERSION),
    ("nolazytime", false, libc::MS_LAZYTIME),
    ("nomand", false, libc::MS_MANDLOCK),
    ("norelatime", false, libc::MS_RELATIME),
    ("nostrictatime", false, libc::MS_STRICTATIME),
    ("nosuid", true, libc::MS_NOSUID),
    ("nosymfollow", true, 256), // MS_NOSYMFOLLOW
    ("relatime", true, libc::MS_RELATIME),
    ("remount", true, libc::MS_REMOUNT),
    ("ro", true, libc::MS_RDONLY),
    ("rw", false, libc::MS_RDONLY),
    ("silent", true, libc::MS_SILENT),
    ("strictatime", true, libc::MS_STRICTATIME),
    ("suid", false, libc::MS_NOSUID),
    ("sync", true, libc::MS_SYNCHRONOUS),
];

const PROPAGATION: &[(&str, u64)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | libc::MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | libc::MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | libc::MS_REC),
];

const RECURSIVE: &[(&str, bool, u64)] = &[
    ("rro", true, attr::RDONLY),
    ("rrw", false, attr::RDONLY),
    ("rnosuid", true, attr::NOSUID),
    ("rsuid", false, attr::NOSUID),
    ("rnodev", true, attr::NODEV),
    ("rdev", false, attr::NODEV),
    ("rnoexec", true, attr::NOEXEC),
    ("rexec", false, attr::NOEXEC),
    ("rnodiratime", true, attr::NODIRATIME),
    ("rdiratime", false, attr::NODIRATIME),
    ("rnoatime", true, attr::NOATIME),
    ("rstrictatime", true, attr::STRICTATIME),
    ("rrelatime", true, attr::RELATIME),
    ("rnosymfollow", true, attr::NOSYMFOLLOW),
    ("rsymfollow", false, attr::NOSYMFOLLOW),
];

impl MountOptions {
    /// Parses a mount's options; `field` names it in errors.
    pub fn parse(options: &[String], field: &str) -> Result<MountOptions> {
        let mut o = MountOptions::default();
        for opt in options {
            let s = opt.as_str();
            if let Some(&(_, set, flag)) = MS.iter().find(|(n, _, _)| *n == s) {
                if set {
                    o.flags |= flag;
                    o.cleared &= !flag;
                } else {
                    o.flags &= !flag;
                    o.cleared |= flag;
                }
            } else if let Some(&(_, p)) = PROPAGATION.iter().find(|(n, _)| *n == s) {
                o.propagation.push(p);
            } else if let Some(&(_, set, a)) = RECURSIVE.iter().find(|(n, _, _)| *n == s) {
                if set {
                    o.rec_set |= a;
                } else {
                    o.rec_clear |= a;
                }
            } else if s == "bind" {
                o.bind = true;
            } else if s == "rbind" {
                o.bind = true;
                o.recursive = true;
            } else if s == "tmpcopyup" {
                o.tmpcopyup = true;
            } else if matches!(s, "idmap" | "ridmap") {
                return Err(Error::unsupported(format!(
                    "{field}: option {s:?} (idmapped mounts) is not supported by berth-runtime"
                )));
            } else if s.is_empty() {
                continue;
            } else {
                o.data.push(s.to_string());
            }
        }
        Ok(o)
    }

    /// The per-mount attributes (MOUNT_ATTR_*) equivalent to the MS_* flags, as
    /// (set, clear) for mount_setattr.
    pub fn attrs(&self) -> (u64, u64) {
        let mut set = 0;
        let mut clear = 0;
        let pairs = [
            (libc::MS_RDONLY, attr::RDONLY),
            (libc::MS_NOSUID, attr::NOSUID),
            (libc::MS_NODEV, attr::NODEV),
            (libc::MS_NOEXEC, attr::NOEXEC),
            (libc::MS_NODIRATIME, attr::NODIRATIME),
            (256, attr::NOSYMFOLLOW),
        ];
        for (ms, a) in pairs {
            if self.flags & ms != 0 {
                set |= a;
            } else if self.cleared & ms != 0 {
                clear |= a;
            }
        }
        if self.flags & libc::MS_NOATIME != 0 {
            set |= attr::NOATIME;
            clear |= attr::ATIME_MASK;
        } else if self.flags & libc::MS_STRICTATIME != 0 {
            set |= attr::STRICTATIME;
            clear |= attr::ATIME_MASK;
        } else if self.flags & libc::MS_RELATIME != 0 {
            clear |= attr::ATIME_MASK;
        }
        (set, clear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> MountOptions {
        MountOptions::parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "m").unwrap()
    }

    #[test]
    fn splits_options() {
        let o = p(&[
            "nosuid",
            "noexec",
            "nodev",
            "mode=755",
            "size=65536k",
            "rprivate",
            "rro",
        ]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV);
        assert_eq!(o.data, ["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(o.rec_set, attr::RDONLY);
        let (set, clear) = o.attrs();
        assert_eq!(set, attr::NOSUID | attr::NOEXEC | attr::NODEV);
        assert_eq!(clear, 0);
    }

    #[test]
    fn later_options_win() {
        let o = p(&["ro", "rw", "rbind"]);
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
        assert!(o.bind && o.recursive);
        assert_eq!(o.attrs().1, attr::RDONLY);
    }

    #[test]
    fn idmap_is_refused() {
        assert!(MountOptions::parse(&["idmap".into()], "mounts[0]").is_err());
    }
}
