//! The real clients: podman and containerd (ctr), Debian's packages, pointed at
//! berth-runtime instead of runc. Each test keeps all of the client's state in its own
//! temporary directories.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::Builder::new()
                .prefix("berth-test-podman")
                .tempdir()
                .unwrap(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root").arg(self.dir.path().join("root"));
        c.arg("--runroot").arg(self.dir.path().join("run"));
        // Its own tmpdir too: podman treats a missing "alive" file there as a reboot and
        // resets every container's state.
        c.arg("--tmpdir").arg(self.dir.path().join("tmp"));
        c.args([
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--runtime",
            bin(),
        ]);
        c.stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-af", "-t", "0"]).output();
        let _ = self.cmd().args(["system", "reset", "-f"]).output();
    }
}

// The sandbox these tests run in lacks CAP_SYS_RESOURCE, so podman's default rlimits
// (which raise the hard limit) cannot be applied; these fit under the current ones.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

#[test]
fn podman_runs_execs_stops_and_removes_containers() {
    if !have("podman") {
        panic!("podman is not installed (scripts/deps.sh installs it)");
    }
    let p = Podman::new();
    let tar = rootfs_tar(p.dir.path());
    p.ok(&["import", tar.to_str().unwrap(), "localhost/berth-bb:latest"]);

    // run --rm, output and exit code.
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(ULIMITS);
    args.extend([
        "localhost/berth-bb:latest",
        "sh",
        "-c",
        "echo hello-podman; exit 3",
    ]);
    let out = p.cmd().args(&args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello-podman\n");

    // A detached container with limits, checked on the host's cgroup files.
    let mut args = vec![
        "run",
        "-d",
        "--network",
        "none",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "33",
    ];
    args.extend(ULIMITS);
    args.extend(["localhost/berth-bb:latest", "sleep", "1000"]);
    let cid = p.ok(&args).trim().to_string();
    let pid = p
        .ok(&["inspect", "-f", "{{.State.Pid}}", &cid])
        .trim()
        .to_string();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |ctrl: &str| {
        cg.lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|x| x == ctrl))
            })
            .map(|l| l.split(':').nth(2).unwrap().to_string())
            .unwrap()
    };
    let read = |ctrl: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}{}/{file}", path_of(ctrl)))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("pids", "pids.max"), "33");
    let out = p.ok(&["exec", &cid, "sh", "-c", "echo exec-ok; cat /proc/1/comm"]);
    assert_eq!(out, "exec-ok\nsleep\n");
    let state = p.ok(&["inspect", "-f", "{{.State.Status}}", &cid]);
    assert_eq!(state.trim(), "running");
    p.ok(&["stop", "-t", "1", &cid]);
    assert_eq!(
        p.ok(&["inspect", "-f", "{{.State.Status}}", &cid]).trim(),
        "exited"
    );
    p.ok(&["rm", &cid]);
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err()
            || !Path::new(&format!("/proc/{pid}/cgroup")).exists()
    );

    // -it through a real pty (script(1) provides the terminal podman expects).
    let mut inner = format!(
        "podman --root {} --runroot {} --tmpdir {} --cgroup-manager cgroupfs --events-backend file --runtime {} run --rm -it --network none",
        p.dir.path().join("root").display(),
        p.dir.path().join("run").display(),
        p.dir.path().join("tmp").display(),
        bin()
    );
    for u in ULIMITS {
        inner.push(' ');
        inner.push_str(u);
    }
    inner.push_str(" localhost/berth-bb:latest sh -c 'tty; echo tty-ok'");
    // podman can lose the output of a container that ends before its attach is set up
    // (seen under a loaded CI machine): up to three tries, each one checked.
    let mut out = None;
    for _ in 0..3 {
        let o = Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let done = !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("tty-ok");
        out = Some(o);
        if done {
            break;
        }
    }
    let out = out.expect("ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("/dev/pts/0") && text.contains("tty-ok"),
        "{text}"
    );
}

struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
    ns: String,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-ctd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{r}\"\nstate = \"{s}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n[debug]\n  address = \"{d}/debug.sock\"\n",
            r = d.join("root").display(),
            s = d.join("state").display(),
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let sock = d.join("c.sock");
        wait_for("containerd's socket", 10000, || sock.exists());
        let ns = unique_id("ctd");
        Containerd { dir, child, ns }
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("c.sock"))
            .args(["-n", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn containerd_ctr_runs_containers_with_berth_runtime() {
    if !have("containerd") || !have("podman") {
        panic!("containerd and podman are needed (scripts/deps.sh installs them)");
    }
    // An OCI archive of the busybox image, written by podman.
    let p = Podman::new();
    let tar = rootfs_tar(p.dir.path());
    p.ok(&["import", tar.to_str().unwrap(), "localhost/berth-bb:latest"]);
    let archive = p.dir.path().join("bb-oci.tar");
    p.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        "localhost/berth-bb:latest",
    ]);

    let c = Containerd::start();
    c.ok(&[
        "images",
        "import",
        "--base-name",
        "localhost/berth-bb",
        archive.to_str().unwrap(),
    ]);
    let out = c.ok(&[
        "run",
        "--rm",
        "--runc-binary",
        bin(),
        "localhost/berth-bb:latest",
        "c1",
        "sh",
        "-c",
        "echo hello-ctr",
    ]);
    assert_eq!(out, "hello-ctr\n");
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        bin(),
        "localhost/berth-bb:latest",
        "c2",
        "sh",
        "-c",
        "exit 9",
    ]);
    assert_eq!(out.status.code(), Some(9));

    c.ok(&[
        "run",
        "-d",
        "--runc-binary",
        bin(),
        "--memory-limit",
        "33554432",
        "localhost/berth-bb:latest",
        "c3",
        "sleep",
        "1000",
    ]);
    let tasks = c.ok(&["task", "ls"]);
    assert!(tasks.contains("c3") && tasks.contains("RUNNING"), "{tasks}");
    let out = c.ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "c3",
        "sh",
        "-c",
        "echo exec-ok",
    ]);
    assert_eq!(out, "exec-ok\n");
    c.ok(&["task", "pause", "c3"]);
    assert!(c.ok(&["task", "ls"]).contains("PAUSED"));
    c.ok(&["task", "resume", "c3"]);
    c.ok(&["task", "kill", "-s", "KILL", "c3"]);
    wait_for("c3 to stop", 5000, || {
        c.ok(&["task", "ls"]).contains("STOPPED")
    });
    c.ok(&["task", "rm", "c3"]);
    c.ok(&["container", "rm", "c3"]);
    assert!(
        cgroup_dirs_named(&c.ns).is_empty(),
        "containerd's cgroups were removed"
    );
}
