//! The cgroup library's only unsafe code: kill(2) with any signal number, and the
//! bpf(2) calls of the cgroup v2 device filter, which rustix does not cover.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// kill(2) with a raw signal number (the OCI spec and `kill` take any number).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill only reads its integer arguments.
    let ret = unsafe { libc::kill(pid, sig) };
    cvt(ret as libc::c_long).map(drop)
}

/// The bpf(2) commands and constants the device-filter code needs.
pub mod bpf {
    use super::*;

    const BPF_PROG_LOAD: i32 = 5;
    const BPF_PROG_ATTACH: i32 = 8;
    const BPF_PROG_DETACH: i32 = 9;
    const BPF_PROG_GET_FD_BY_ID: i32 = 13;
    const BPF_PROG_QUERY: i32 = 16;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    /// Attach type of device filters.
    pub const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;

    /// A zeroed `union bpf_attr`, filled field by field at the kernel ABI offsets.
    #[repr(C, align(8))]
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Self {
            Attr([0; 128])
        }
        fn u32_at(&mut self, off: usize, v: u32) {
            self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        }
        fn u64_at(&mut self, off: usize, v: u64) {
            self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        }
        fn read_u32(&self, off: usize) -> u32 {
            u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
        }
    }

    fn bpf(cmd: i32, attr: &mut Attr) -> io::Result<libc::c_long> {
        // SAFETY: attr is a zero-initialised 128-byte union bpf_attr whose fields were
        // set at their ABI offsets; any pointers stored in it reference live buffers.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        cvt(ret)
    }

    /// Loads a BPF_PROG_TYPE_CGROUP_DEVICE program; returns its fd, or the verifier
    /// log in the error.
    pub fn load_device_program(insns: &[u64]) -> io::Result<OwnedFd> {
        let license = c"Apache";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = Attr::new();
        attr.u32_at(0, BPF_PROG_TYPE_CGROUP_DEVICE);
        attr.u32_at(4, insns.len() as u32);
        attr.u64_at(8, insns.as_ptr() as u64);
        attr.u64_at(16, license.as_ptr() as u64);
        attr.u32_at(24, 1);
        attr.u32_at(28, log.len() as u32);
        attr.u64_at(32, log.as_mut_ptr() as u64);
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: BPF_PROG_LOAD returns a new descriptor that we now own.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(0);
                let text = String::from_utf8_lossy(&log[..end]);
                if text.is_empty() {
                    Err(e)
                } else {
                    Err(io::Error::new(e.kind(), format!("{e}; verifier: {text}")))
                }
            }
        }
    }

    /// Attaches a program to a cgroup directory as a device filter (multi-attach).
    pub fn attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
        let mut attr = Attr::new();
        attr.u32_at(0, cgroup.as_raw_fd() as u32);
        attr.u32_at(4, prog.as_raw_fd() as u32);
        attr.u32_at(8, BPF_CGROUP_DEVICE);
        attr.u32_at(12, BPF_F_ALLOW_MULTI);
        bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
    }

    /// Detaches one device-filter program from a cgroup directory.
    pub fn detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
        let mut attr = Attr::new();
        attr.u32_at(0, cgroup.as_raw_fd() as u32);
        attr.u32_at(4, prog.as_raw_fd() as u32);
        attr.u32_at(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut attr).map(drop)
    }

    /// Ids of the device-filter programs attached directly to a cgroup directory.
    pub fn query(cgroup: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
        let mut ids = vec![0u32; 64];
        let mut attr = Attr::new();
        attr.u32_at(0, cgroup.as_raw_fd() as u32);
        attr.u32_at(4, BPF_CGROUP_DEVICE);
        attr.u64_at(16, ids.as_mut_ptr() as u64);
        attr.u32_at(24, ids.len() as u32);
        bpf(BPF_PROG_QUERY, &mut attr)?;
        let count = attr.read_u32(24) as usize;
        ids.truncate(count.min(64));
        Ok(ids)
    }

    /// Opens a loaded program by id.
    pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
        let mut attr = Attr::new();
        attr.u32_at(0, id);
        let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
        // SAFETY: the call returned a new descriptor that we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}
