//! The FUSE filesystem: a flat directory of the view's files. Each open computes the
//! file for the opening process's cgroups once; reads of that handle serve that copy
//! (direct I/O, sizes unknown in advance as on procfs).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use crate::cgroup::{Cgroups, Mounts};
use crate::load::Loads;
use crate::render;

/// The files served, by name (the engine bind-mounts each over its /proc or /sys
/// counterpart; see [`crate::TARGETS`]).
pub const FILES: [&str; 8] = [
    "meminfo",
    "cpuinfo",
    "stat",
    "uptime",
    "loadavg",
    "diskstats",
    "swaps",
    "cpu-online",
];

const TTL: Duration = Duration::from_secs(1);

/// The size files claim. Their content is computed per reader at open, so no true size
/// exists; 0 (as procfs says) makes `cat`, which copies with sendfile and trusts the
/// size, print nothing. Reads stop at the real end of the content.
const CLAIMED_SIZE: u64 = 64 * 1024;

fn attr(ino: u64) -> FileAttr {
    let dir = ino == 1;
    FileAttr {
        ino: INodeNo(ino),
        size: if dir { 0 } else { CLAIMED_SIZE },
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o555 } else { 0o444 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

/// The /proc view.
pub struct ProcView {
    mounts: Mounts,
    loads: Arc<Loads>,
    open: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    next: AtomicU64,
}

impl ProcView {
    /// A view over the host's cgroup mounts, with `loads` sampled elsewhere.
    pub fn new(loads: Arc<Loads>) -> ProcView {
        ProcView {
            mounts: berth_cgroups::Layout::host(),
            loads,
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// The content of file `name` for process `pid`.
    pub fn render(&self, name: &str, pid: u32) -> String {
        let cg = Cgroups::of(pid, &self.mounts).unwrap_or_default();
        match name {
            "meminfo" => render::meminfo(&cg),
            "cpuinfo" => render::cpuinfo(&cg),
            "stat" => render::stat(&cg),
            "uptime" => render::uptime(&cg),
            "loadavg" => {
                let (running, total) = crate::load::tasks(&cg);
                render::loadavg(self.loads.get(&cg), running, total)
            }
            "diskstats" => render::diskstats(&cg),
            "swaps" => render::swaps(&cg),
            "cpu-online" => render::cpu_online(&cg),
            _ => String::new(),
        }
    }
}

fn ino_of(name: &OsStr) -> Option<u64> {
    FILES
        .iter()
        .position(|f| OsStr::new(f) == name)
        .map(|i| i as u64 + 2)
}

impl Filesystem for ProcView {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (u64::from(parent), ino_of(name)) {
            (1, Some(ino)) => reply.entry(&TTL, &attr(ino), fuser::Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = u64::from(ino);
        if ino == 1 || (2..2 + FILES.len() as u64).contains(&ino) {
            reply.attr(&TTL, &attr(ino));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let ino = u64::from(ino);
        let Some(name) = ino.checked_sub(2).and_then(|i| FILES.get(i as usize)) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let content = Arc::new(self.render(name, req.pid()).into_bytes());
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("not poisoned").insert(fh, content);
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let content = self.open.lock().expect("not poisoned").get(&fh.0).cloned();
        match content {
            Some(c) => {
                let start = (offset as usize).min(c.len());
                let end = (start + size as usize).min(c.len());
                reply.data(&c[start..end]);
            }
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open.lock().expect("not poisoned").remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != 1 {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let mut entries = vec![
            (1u64, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
        ];
        for (i, f) in FILES.iter().enumerate() {
            entries.push((i as u64 + 2, FileType::RegularFile, f));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
