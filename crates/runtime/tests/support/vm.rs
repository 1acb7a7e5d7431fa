//! A VM booted on a cgroup v2-only kernel command line (Debian's linux-image-cloud-amd64,
//! `cgroup_no_v1=all`) from an initramfs a test fills: busybox, the programs under test
//! with their libraries, and an `/init` script whose output (the serial console) the
//! test reads. For the paths this hybrid host cannot take: cgroup2 end to end.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An initramfs being filled.
pub struct Initramfs {
    dir: tempfile::TempDir,
    /// Its root directory.
    pub root: PathBuf,
}

impl Initramfs {
    /// An initramfs with busybox (every applet linked) and empty /proc, /sys, /dev,
    /// /run, /tmp and /etc.
    pub fn new() -> Initramfs {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-vm")
            .tempdir()
            .unwrap();
        let root = dir.path().join("initramfs");
        for d in ["bin", "proc", "sys", "dev", "run", "tmp", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        Initramfs { dir, root }
    }

    /// Writes `/init` (the script the kernel runs; it should end with `poweroff -f`).
    pub fn init(&self, script: &str) {
        std::fs::write(self.root.join("init"), script).unwrap();
        std::fs::set_permissions(
            self.root.join("init"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }

    /// Boots it with `mem_mib` of memory and returns what the console printed.
    pub fn boot(&self, mem_mib: u32) -> String {
        let Some(kernel) = kernel() else {
            panic!("no kernel in /boot (scripts/deps.sh installs linux-image-cloud-amd64)");
        };
        let cpio = self.dir.path().join("initramfs.cpio");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && find . | cpio -o -H newc --quiet > {}",
                self.root.display(),
                cpio.display()
            ))
            .status()
            .unwrap();
        assert!(st.success());
        // Software emulation: nested KVM inside this project's VMs is unusably slow, and
        // the workloads are small enough for TCG.
        let out = Command::new("timeout")
            .arg("300")
            .arg("qemu-system-x86_64")
            .args(["-machine", "accel=tcg", "-cpu", "max", "-m"])
            .arg(mem_mib.to_string())
            .args(["-smp", "1", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&cpio)
            .args(["-append", "console=ttyS0 quiet panic=-1 cgroup_no_v1=all"])
            .stdin(Stdio::null())
            .output()
            .expect("qemu-system-x86_64 (scripts/deps.sh installs qemu-system-x86)");
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    }
}

/// The newest kernel in /boot.
fn kernel() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Copies a dynamically linked program and the libraries it needs into `root`.
pub fn copy_with_libs(prog: &Path, root: &Path, dest: &str) {
    let target = root.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(prog, &target).unwrap();
    let ldd = Command::new("ldd").arg(prog).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = path {
            let to = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &to).unwrap();
        }
    }
}
