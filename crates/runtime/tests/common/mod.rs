//! Shared helpers for the runtime's integration tests: busybox bundles in temporary
//! directories, a private runtime root per test, unique container ids, and checks that
//! nothing (cgroup, mount, state directory, process) is left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

/// The runtime binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth-runtime")
}

/// A container id unique to this test process.
pub fn unique_id(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "bt-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A bundle with a busybox root filesystem and a config.json from `berth-runtime spec`.
pub struct Bundle {
    dir: tempfile::TempDir,
    /// The config, written by [`Bundle::write`].
    pub config: Value,
}

impl Bundle {
    /// A fresh bundle: busybox and its applets in rootfs/bin, no terminal, writable root.
    pub fn busybox() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-bundle")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("busybox-static is installed");
        let list = Command::new(rootfs.join("bin/busybox"))
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        let out = Command::new(bin())
            .arg("spec")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        config["process"]["terminal"] = json!(false);
        config["root"]["readonly"] = json!(false);
        let b = Bundle { dir, config };
        b.write();
        b
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Sets process.args to `sh -c <script>`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.config["process"]["args"] = json!(["sh", "-c", script]);
        self.write();
        self
    }

    /// Sets process.args.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self.write();
        self
    }

    /// Writes the config back to disk.
    pub fn write(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }
}

/// A private runtime root (`--root`) for one test.
pub struct Runtime {
    root: tempfile::TempDir,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A new, empty root.
    pub fn new() -> Runtime {
        Runtime {
            root: tempfile::Builder::new()
                .prefix("berth-test-root")
                .tempdir()
                .unwrap(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A command with `--root` set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--root").arg(self.root.path());
        c.stdin(Stdio::null());
        c
    }

    /// Runs the runtime with these arguments. Output goes through files, not pipes: a
    /// container's init inherits the runtime's stdio and keeps it open, so waiting for
    /// pipes to close would wait for the container.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let status = self
            .cmd()
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: read_all(out),
            stderr: read_all(err),
        }
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth-runtime {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "berth-runtime {args:?} should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `run --bundle B ID` in the foreground: (exit code, stdout, stderr).
    pub fn run_container(&self, bundle: &Bundle, id: &str) -> (i32, String, String) {
        let out = self.run(&["run", "--bundle", bundle.path().to_str().unwrap(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a container in the foreground and expects exit 0; returns stdout.
    pub fn output_of(&self, bundle: &Bundle, id: &str) -> String {
        let (code, out, err) = self.run_container(bundle, id);
        assert_eq!(
            code, 0,
            "container {id} exited {code}\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    /// Runs the runtime through `sh -c "PREFIX; exec berth-runtime --root R ARGS..."`,
    /// to start it with extra descriptors open (`exec 7<dir` in the prefix).
    pub fn run_after(&self, prefix: &str, args: &[&str]) -> Output {
        let script = format!(
            "{prefix}; exec {} --root {} {}",
            bin(),
            self.root.path().display(),
            args.join(" ")
        );
        std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap()
    }

    /// The pids of a container's processes (`ps --format json`).
    pub fn pids(&self, id: &str) -> Vec<i32> {
        serde_json::from_str(&self.ok(&["ps", "--format", "json", id])).unwrap()
    }

    /// The OCI state of a container.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    /// The status string of a container.
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    /// Creates a container and returns a guard that force-deletes it.
    pub fn create<'a>(&'a self, bundle: &Bundle, id: &str) -> Guard<'a> {
        self.ok(&["create", "--bundle", bundle.path().to_str().unwrap(), id]);
        Guard {
            rt: self,
            id: id.to_string(),
        }
    }
}

fn read_all(mut f: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut v = Vec::new();
    f.rewind().unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Force-deletes a container when dropped (so a failing test leaves nothing behind).
pub struct Guard<'a> {
    /// The runtime it belongs to.
    pub rt: &'a Runtime,
    /// Container id.
    pub id: String,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.rt.run(&["delete", "--force", &self.id]);
    }
}

/// Cgroup directories (up to depth 3) whose name contains `needle`.
pub fn cgroup_dirs_named(needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(dir: &Path, depth: u32, needle: &str, out: &mut Vec<PathBuf>) {
        if depth == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                if e.file_name().to_string_lossy().contains(needle) {
                    out.push(p.clone());
                }
                walk(&p, depth - 1, needle, out);
            }
        }
    }
    walk(Path::new("/sys/fs/cgroup"), 3, needle, &mut out);
    out
}

/// A tar of a busybox root filesystem, written into `dir` as rootfs.tar.
pub fn rootfs_tar(dir: &Path) -> PathBuf {
    let b = Bundle::busybox();
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(b.rootfs())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

/// Asserts that a container left nothing behind: no cgroup, no mount naming its bundle
/// or id, no state directory.
pub fn assert_no_leaks(rt: &Runtime, id: &str, bundle: Option<&Bundle>) {
    let cg = cgroup_dirs_named(id);
    assert!(cg.is_empty(), "cgroups left behind for {id}: {cg:?}");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mi.lines() {
        assert!(!line.contains(id), "mount left behind: {line}");
        if let Some(b) = bundle {
            assert!(
                !line.contains(b.path().to_str().unwrap()),
                "mount left behind: {line}"
            );
        }
    }
    assert!(
        !rt.root().join(id).exists(),
        "state dir left behind for {id}"
    );
}

/// Pids of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) && pid != std::process::id() as i32 {
                out.push(pid);
            }
        }
    }
    out
}

/// Waits until `f` is true or the timeout passes.
pub fn wait_for(what: &str, timeout_ms: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
