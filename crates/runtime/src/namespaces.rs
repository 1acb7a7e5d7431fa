//! Which namespaces a container creates and which it joins by path, checked before any
//! process is forked (a path that is not a namespace of the right type is bad input).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Context, Error, Result};
use crate::sys;

/// The CLONE_NEW* flag of a namespace type.
pub fn clone_flag(t: LinuxNamespaceType) -> i32 {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// The name used under /proc/<pid>/ns for a namespace flag.
pub fn proc_name(flag: i32) -> &'static str {
    match flag {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "net",
        libc::CLONE_NEWTIME => "time",
        _ => "unknown",
    }
}

fn type_name(flag: i32) -> &'static str {
    match flag {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "network",
        libc::CLONE_NEWTIME => "time",
        _ => "unknown",
    }
}

/// A namespace to join: its flag, an open descriptor and the path it came from.
pub struct Join {
    /// CLONE_NEW* flag.
    pub flag: i32,
    /// The open namespace file.
    pub fd: OwnedFd,
    /// Where it was opened from (for messages).
    pub path: PathBuf,
}

/// The namespace plan of a container.
#[derive(Default)]
pub struct Plan {
    /// Namespaces to join, user namespace first.
    pub join: Vec<Join>,
    /// Namespaces to create (CLONE_NEW* flags), the user namespace excluded.
    pub create: i32,
    /// Whether to create a user namespace.
    pub new_user: bool,
}

impl Plan {
    /// Whether the container gets a namespace of this type (new or joined).
    pub fn has(&self, flag: i32) -> bool {
        self.create & flag != 0
            || (flag == libc::CLONE_NEWUSER && self.new_user)
            || self.join.iter().any(|j| j.flag == flag)
    }

    /// Whether the container creates a namespace of this type.
    pub fn creates(&self, flag: i32) -> bool {
        self.create & flag != 0 || (flag == libc::CLONE_NEWUSER && self.new_user)
    }

    /// Whether the container gets a namespace of this type other than the runtime's own
    /// (a new one, or one joined by path that is not the host's).
    pub fn isolates(&self, flag: i32) -> bool {
        if self.creates(flag) {
            return true;
        }
        let own = ns_identity("self", proc_name(flag));
        self.join.iter().any(|j| {
            j.flag == flag
                && rustix::fs::fstat(&j.fd).is_ok_and(|st| Some((st.st_ino, st.st_dev)) != own)
        })
    }

    /// Whether the container joins an existing namespace of this type.
    pub fn joins(&self, flag: i32) -> bool {
        self.join.iter().any(|j| j.flag == flag)
    }
}

/// Opens and checks the namespaces of a spec.
pub fn plan(spec: &Spec) -> Result<Plan> {
    let mut plan = Plan::default();
    for (i, (typ, path)) in crate::spec::namespaces(spec).into_iter().enumerate() {
        let flag = clone_flag(typ);
        match path {
            None => {
                if flag == libc::CLONE_NEWUSER {
                    plan.new_user = true;
                } else {
                    if flag == libc::CLONE_NEWTIME
                        && !std::path::Path::new("/proc/self/ns/time").exists()
                    {
                        return Err(Error::unsupported(format!(
                            "linux.namespaces[{i}]: this kernel has no time namespaces (Linux 5.6 or newer is needed)"
                        )));
                    }
                    plan.create |= flag;
                }
            }
            Some(path) => {
                let fd = open_ns(&path, flag, i)?;
                plan.join.push(Join { flag, fd, path });
            }
        }
    }
    // The user namespace is joined first: the others are then joined with its privileges.
    plan.join.sort_by_key(|j| j.flag != libc::CLONE_NEWUSER);
    Ok(plan)
}

fn open_ns(path: &std::path::Path, flag: i32, i: usize) -> Result<OwnedFd> {
    let field = format!("linux.namespaces[{i}].path");
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        Error::invalid(format!(
            "{field} {}: {}",
            path.display(),
            std::io::Error::from(e)
        ))
    })?;
    match sys::ns_type(fd.as_fd()) {
        Ok(t) if t == flag => Ok(fd),
        Ok(t) => Err(Error::invalid(format!(
            "{field} {} is a {} namespace, not a {} namespace",
            path.display(),
            type_name(t),
            type_name(flag)
        ))),
        Err(_) => Err(Error::invalid(format!(
            "{field} {} is not a namespace file (expected something like /proc/<pid>/ns/{})",
            path.display(),
            proc_name(flag)
        ))),
    }
}

/// Formats id mappings as /proc/<pid>/uid_map wants them.
pub fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes the uid and gid maps of a process that just entered a new user namespace,
/// through a verified procfs.
pub fn write_id_maps(pid: i32, uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<()> {
    use std::io::Write;
    let proc = pathrs::procfs::ProcfsHandle::new().ctx(|| "open a private procfs")?;
    for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
        let text = map_text(maps);
        let mut f = proc
            .open(
                pathrs::procfs::ProcfsBase::ProcPid(pid as u32),
                file,
                pathrs::flags::OpenFlags::O_WRONLY,
            )
            .ctx(|| format!("open /proc/{pid}/{file}"))?;
        f.write_all(text.as_bytes()).map_err(|e| {
            Error::invalid(format!(
                "linux.{}Mappings: the kernel refused {:?}: {e}",
                &file[..3],
                text.trim()
            ))
        })?;
    }
    Ok(())
}

/// Whether container id 0 is mapped (then the process can become root inside).
pub fn maps_root(maps: &[LinuxIdMapping]) -> bool {
    maps.iter().any(|m| m.container_id() == 0 && m.size() > 0)
}

/// The (inode, device) identity of one of a process's namespaces.
pub fn ns_identity(pid: &str, name: &str) -> Option<(u64, u64)> {
    let st = rustix::fs::stat(format!("/proc/{pid}/ns/{name}")).ok()?;
    Some((st.st_ino, st.st_dev))
}
