//! Shared helpers of the engine's tests: a private state root per test with a busybox
//! image, the workspace's berth-runtime, berth-monitor and berth binaries, a pod CIDR
//! and network root of the test's own, and checks that nothing is left in the kernel.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_engine::cri::*;
use berth_engine::Core;

#[path = "../support/cidr_lease.rs"]
mod cidr_lease;

/// A binary the workspace build puts in the target directory.
pub fn built_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/TEST-HASH → target/debug/NAME
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace; scripts/test.sh does)",
        p.display()
    );
    p
}

/// A private state root with a busybox image, a pod CIDR of its own and its own
/// network records (so parallel tests never share a bridge or addresses).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub core: Core,
    pub n: u32,
    /// Holds the pod CIDR's lease.
    _cidr_lock: std::fs::File,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-engine-test")
            .tempdir()
            .unwrap();
        // SAFETY of set_var: nextest runs each test in a process of its own, and this
        // runs before any thread of the test.
        std::env::set_var("BERTH_RUNTIME", built_bin("berth-runtime"));
        std::env::set_var("BERTH_MONITOR", built_bin("berth-monitor"));
        std::env::set_var("BERTH_BIN", built_bin("berth"));
        std::env::set_var("BERTH_NET_ROOT", dir.path().join("net"));
        let core = Core::open(&dir.path().join("root")).unwrap();
        let (n, cidr_lock) = cidr_lease::lease_octet(44);
        core.update_runtime_config(&format!("10.44.{n}.0/24"))
            .unwrap();
        import_busybox(&core, "localhost/busybox:1");
        Env {
            dir,
            core,
            n,
            _cidr_lock: cidr_lock,
        }
    }

    /// A pod sandbox config named `name`, in the kubelet's cgroup layout.
    pub fn pod(&self, name: &str) -> SandboxConfig {
        let uid = format!("{name}-{}", std::process::id());
        SandboxConfig {
            metadata: SandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            },
            hostname: name.into(),
            cgroup_parent: berth_cgroups::naming::pod_parent(
                berth_cgroups::naming::QosClass::Burstable,
                &uid,
            ),
            ..Default::default()
        }
    }

    /// A container config running `cmd` in busybox.
    pub fn ctr(&self, name: &str, cmd: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: ContainerMetadata {
                name: name.into(),
                attempt: 0,
            },
            image: "localhost/busybox:1".into(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Creates and starts a container in `sandbox`; returns its ID.
    pub fn run(&self, sandbox: &str, c: &ContainerConfig) -> String {
        let id = self.core.create_container(sandbox, c).unwrap();
        self.core.start_container(&id).unwrap();
        id
    }

    /// `sh -c SCRIPT` in container `id`: its stdout, asserting exit 0.
    pub fn sh(&self, id: &str, script: &str) -> String {
        let r = self
            .core
            .exec_sync(
                id,
                &["sh".into(), "-c".into(), script.into()],
                Some(Duration::from_secs(20)),
            )
            .unwrap();
        assert_eq!(
            r.exit_code,
            0,
            "{script}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for Env {
    /// Everything the test made goes, also when it failed: sandboxes (with their
    /// containers), the pod network, and mounts left under the directory.
    fn drop(&mut self) {
        if let Ok(all) = self.core.list_pod_sandbox(&SandboxFilter {
            include_lean: true,
            ..Default::default()
        }) {
            for s in all {
                let _ = self.core.remove_pod_sandbox(&s.id);
            }
        }
        let _ = berth_net::network::Networks::host().remove(&self.core.pod_network().name);
        berth_cgroups::mountinfo::unmount_under(self.dir.path());
    }
}

/// Stores a busybox root filesystem (Debian's busybox-static) as image `name`.
pub fn import_busybox(core: &Core, name: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], mode: u32, link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, data).unwrap(),
        }
    };
    for d in ["bin", "etc", "tmp", "www"] {
        add(d, tar::EntryType::Directory, &[], 0o755, None);
    }
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    add("bin/busybox", tar::EntryType::Regular, &bb, 0o755, None);
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for a in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        add(
            &format!("bin/{a}"),
            tar::EntryType::Symlink,
            &[],
            0o777,
            Some("busybox"),
        );
    }
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        0o644,
        None,
    );
    add(
        "etc/group",
        tar::EntryType::Regular,
        b"root:x:0:\nnogroup:x:65534:\n",
        0o644,
        None,
    );
    add(
        "www/index.html",
        tar::EntryType::Regular,
        b"hello from the pod\n",
        0o644,
        None,
    );
    let tarball = b.into_inner().unwrap();
    let opts = berth_image::commit::NewImage {
        reference: Some(name.parse().unwrap()),
        created_by: "test".into(),
        ..Default::default()
    };
    let mut changes = serde_json::Map::new();
    changes.insert("Cmd".into(), serde_json::json!(["sh"]));
    let opts = berth_image::commit::NewImage {
        config_changes: changes,
        ..opts
    };
    core.images().import(&tarball[..], &opts).unwrap();
}

/// Waits until `cond` holds, up to `limit`.
pub fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The inode of namespace `kind` of process `pid`.
pub fn ns_inode(pid: i32, kind: &str) -> u64 {
    let l = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let s = l.to_string_lossy();
    s[s.find('[').unwrap() + 1..s.find(']').unwrap()]
        .parse()
        .unwrap()
}

/// The init pid of a running container.
pub fn pid_of(core: &Core, id: &str) -> i32 {
    match core.container_status(id).unwrap().summary.state {
        ContainerState::Running(p) if p > 0 => p,
        s => panic!("container {id} is not running: {s:?}"),
    }
}

/// What of sandbox `id` and its containers is still in the kernel or on disk: pins,
/// network namespace, cgroups, leases, runtime state, lock and marker files.
pub fn leftovers(env: &Env, sandbox: &str, containers: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    let p = |s: String| PathBuf::from(s);
    for path in [
        p(format!("/run/berth/ns/{sandbox}")),
        p(format!("/run/berth/netns/{sandbox}")),
        env.root().join("sandboxes").join(sandbox),
        env.root().join("locks").join(sandbox),
        env.root().join("creating").join(sandbox),
        env.root().join("runtime").join(sandbox),
    ] {
        if path.exists() {
            left.push(path.display().to_string());
        }
    }
    for c in containers {
        for path in [
            env.root().join("containers").join(c),
            env.root().join("runtime").join(c),
            env.root().join("events").join(c),
            env.root().join("locks").join(c),
            env.root().join("creating").join(c),
            env.root().join("image/c").join(c),
        ] {
            if path.exists() {
                left.push(path.display().to_string());
            }
        }
    }
    for entry in std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
    {
        let mut stack = vec![entry.join("kubepods")];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == sandbox || containers.contains(&name) {
                    left.push(e.path().display().to_string());
                }
                stack.push(e.path());
            }
        }
    }
    let leases =
        std::path::Path::new("/var/lib/berth/networks/leases").join(env.core.pod_network().name);
    if let Ok(rd) = std::fs::read_dir(&leases) {
        for net in rd.flatten() {
            for l in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let holder = std::fs::read_to_string(l.path()).unwrap_or_default();
                if holder.lines().next() == Some(sandbox) {
                    left.push(format!("lease {}", l.path().display()));
                }
            }
        }
    }
    left
}

/// The directory of `path` in the memory hierarchy (v1) or cgroup2.
pub fn memory_limit_of(cgroup: &str) -> Option<u64> {
    let v1 = Path::new("/sys/fs/cgroup/memory").join(cgroup.trim_start_matches('/'));
    let v2 = Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/'));
    std::fs::read_to_string(v1.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(v2.join("memory.max")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}
