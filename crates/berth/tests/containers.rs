//! Containers through the `berth` CLI, checked against what the kernel applied: cgroup
//! files, the OOM killer, a fork bomb under a pids limit, a syscall the default seccomp
//! profile refuses, bind mounts; and faults — a killed monitor, a killed CLI, bad flags,
//! rapid run/rm cycles — with nothing left behind.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// What a container may leave behind: mounts under the root, berth cgroups of these
/// containers, monitor processes of this root, container directories.
fn leftovers(env: &Env, ids: &[String]) -> Vec<String> {
    let root = env.root().to_string_lossy().into_owned();
    let mut out = Vec::new();
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        // Mounts below the root (a test may mount the root itself).
        if l.split(' ')
            .nth(4)
            .is_some_and(|p| p.starts_with(&root) && p != root)
        {
            out.push(format!("mount {l}"));
        }
    }
    let mut bases = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    bases.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path()),
    );
    for id in ids {
        for base in &bases {
            let p = base.join("berth").join(id);
            if p.exists() {
                out.push(format!("cgroup {}", p.display()));
            }
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("berth-monitor") && cmd.contains(&root) {
                out.push(format!("process {} {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(env.root().join("containers")) {
        for e in rd.flatten() {
            out.push(format!("state dir {}", e.path().display()));
        }
    }
    out
}

fn inspect(env: &Env, name: &str) -> Value {
    let v: Value =
        serde_json::from_str(&env.ok(&["inspect", "--type", "container", name])).unwrap();
    v[0].clone()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn foreground_output_and_exit_codes() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let o = env.run(&[
        "run",
        "--rm",
        "busybox:1",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let o = env.run(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-h",
        "boxy",
        "busybox:1",
        "sh",
        "-c",
        "echo $A $(pwd) $(hostname) $(id -u)",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1 /tmp boxy 0\n");
    // Every line reaches the CLI, even the last ones of a --rm container that is removed
    // at once.
    let o = env.run(&["run", "--rm", "busybox:1", "seq", "1", "3000"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.lines().count(), 3000);
    assert!(out.ends_with("3000\n"));
    let o = env.run(&["run", "--rm", "-u", "65534:65534", "busybox:1", "id"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("uid=65534"),
        "{o:?}"
    );
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn init_reaps_orphans_and_forwards_signals() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // pid 1 is berth's init, the program its child; an orphan (the backgrounded sleep
    // whose subshell exited) is reaped by pid 1 rather than left a zombie.
    let o = env.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox:1",
        "sh",
        "-c",
        "(sleep 0.2 &); sleep 0.6; ps -o pid,stat,args",
    ]);
    assert!(o.contains("1 S    berth-init -- sh -c"), "{o}");
    assert!(!o.contains(" Z "), "a zombie was left: {o}");
    // The program's status is the container's, 128+N when a signal killed it.
    let code = |args: &[&str]| env.run(args).status.code();
    assert_eq!(
        code(&["run", "--rm", "--init", "busybox:1", "sh", "-c", "exit 7"]),
        Some(7)
    );
    assert_eq!(
        code(&[
            "run",
            "--rm",
            "--init",
            "busybox:1",
            "sh",
            "-c",
            "kill -9 $$"
        ]),
        Some(137)
    );
    // Without --init, sleep as pid 1 ignores SIGTERM and `stop` has to wait for its
    // timeout; with it, SIGTERM is forwarded and sleep ends at once.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "in",
        "--init",
        "busybox:1",
        "sleep",
        "100",
    ]);
    let t = Instant::now();
    env.ok(&["stop", "-t", "20", "in"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.State.ExitCode}}", "in"])
            .trim(),
        "143"
    );
    env.ok(&["rm", "in"]);
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn detached_lifecycle_logs_stop_rm() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let id = env
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "busybox:1",
            "sh",
            "-c",
            "echo ready; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    wait_for("the log", Duration::from_secs(10), || {
        env.ok(&["logs", "web"]).contains("ready")
    });
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    assert_eq!(env.ok(&["ps", "-q"]).trim(), &id[..12]);
    let info = inspect(&env, "web");
    assert_eq!(info["State"]["Status"], "running");
    let pid = info["State"]["Pid"].as_i64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The monitor holds the container, not the CLI that started it.
    let ppid: i64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    let parent_cmd = std::fs::read_to_string(format!("/proc/{ppid}/cmdline")).unwrap();
    assert!(parent_cmd.contains("berth-monitor"), "{parent_cmd}");
    let e = env.fails(&["rm", "web"]);
    assert!(e.contains("is running") && e.contains("-f"), "{e}");
    env.ok(&["stop", "web"]);
    let info = inspect(&env, "web");
    assert_eq!(info["State"]["Status"], "exited");
    assert_eq!(info["State"]["ExitCode"], 0, "the trap ran");
    assert!(env.ok(&["logs", "web"]).contains("bye"));
    let ts = env.ok(&["logs", "-t", "--tail", "1", "web"]);
    assert!(ts.starts_with("20") && ts.contains("bye"), "{ts}");
    assert!(env.ok(&["ps"]).lines().count() == 1);
    assert!(env.ok(&["ps", "-a"]).contains("Exited (0)"));
    env.ok(&["start", "web"]);
    wait_for("running again", Duration::from_secs(10), || {
        inspect(&env, "web")["State"]["Status"] == "running"
    });
    env.ok(&["rm", "-f", "web"]);
    assert!(
        leftovers(&env, std::slice::from_ref(&id)).is_empty(),
        "{:?}",
        leftovers(&env, &[id])
    );
}

#[test]
fn resource_flags_reach_the_kernel() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let id = env
        .ok(&[
            "run",
            "-d",
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "20",
            "--cpu-shares",
            "512",
            "busybox:1",
            "sleep",
            "60",
        ])
        .trim()
        .to_string();
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").exists();
    if v1 {
        let read = |p: &str| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/{p}"))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(
            read(&format!("memory/berth/{id}/memory.limit_in_bytes")),
            "67108864"
        );
        let cpu = if std::path::Path::new("/sys/fs/cgroup/cpu,cpuacct").exists() {
            "cpu,cpuacct"
        } else {
            "cpu"
        };
        assert_eq!(read(&format!("{cpu}/berth/{id}/cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&format!("{cpu}/berth/{id}/cpu.shares")), "512");
        assert_eq!(read(&format!("pids/berth/{id}/pids.max")), "20");
    }
    let st: Value = serde_json::from_str(
        env.ok(&["stats", "--no-stream", "--format", "json", &id[..12]])
            .trim(),
    )
    .unwrap();
    assert!(
        st["MemUsage"].as_str().unwrap().ends_with("/ 64.00MiB"),
        "{st}"
    );
    assert_eq!(st["PIDs"], 1);
    // Without --no-stream, a new sample every second until interrupted.
    let mut c = env
        .cmd(&["stats", "--format", "{{.ID}} {{.PIDs}}", &id[..12]])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2300));
    c.kill().unwrap();
    let o = c.wait_with_output().unwrap();
    let frames = String::from_utf8_lossy(&o.stdout).into_owned();
    let want = format!("{} 1", &id[..12]);
    assert!(
        frames.lines().count() >= 2 && frames.lines().all(|l| l == want),
        "{frames}"
    );
    let info = inspect(&env, &id[..12]);
    assert_eq!(info["HostConfig"]["Memory"], 67108864);
    assert_eq!(info["HostConfig"]["NanoCpus"], 500_000_000i64);
    env.ok(&["rm", "-f", &id[..12]]);
    assert!(
        leftovers(&env, std::slice::from_ref(&id)).is_empty(),
        "{:?}",
        leftovers(&env, &[id])
    );
}

#[test]
fn oom_fork_bomb_seccomp_and_privileges() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // A memory hog is killed by the OOM killer, and berth says so.
    let o = env.run(&[
        "run",
        "--name",
        "hog",
        "-m",
        "16m",
        "--memory-swap",
        "16m",
        "busybox:1",
        "sh",
        "-c",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(o.status.code(), Some(137), "{o:?}");
    let info = inspect(&env, "hog");
    assert_eq!(info["State"]["OOMKilled"], true);
    env.ok(&["rm", "hog"]);
    // A fork bomb stops at the pids limit.
    let o = env.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "5",
        "busybox:1",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("can't fork"),
        "{o:?}"
    );
    // unshare(CLONE_NEWUSER) needs no capability; the default seccomp profile refuses it.
    let o = env.run(&["run", "--rm", "busybox:1", "unshare", "-U", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "{o:?}"
    );
    let o = env.run(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox:1",
        "unshare",
        "-U",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // Docker's capability set: no CAP_SYS_ADMIN (mount fails) unless added or privileged.
    let o = env.run(&[
        "run",
        "--rm",
        "busybox:1",
        "mount",
        "-t",
        "tmpfs",
        "t",
        "/tmp",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("denied")
            || String::from_utf8_lossy(&o.stderr).contains("not permitted"),
        "{o:?}"
    );
    let o = env.run(&[
        "run",
        "--rm",
        "--privileged",
        "busybox:1",
        "mount",
        "-t",
        "tmpfs",
        "t",
        "/tmp",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let caps = env.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "busybox:1",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(
        caps.contains("0000000000001000"),
        "only CAP_NET_ADMIN (bit 12): {caps}"
    );
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn volumes_tmpfs_read_only() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let host = env.path("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let missing = env.path("created-by-v");
    let out = env.ok(&[
        "run", "--rm", "-v", &format!("{}:/data", host.display()), "-v", &format!("{}:/new", missing.display()),
        "-v", "named:/vol", "--tmpfs", "/scratch", "--read-only", "busybox:1",
        "sh", "-c", "cat /data/in; echo hi > /data/out; echo v > /vol/f; echo t > /scratch/t && cat /scratch/t; touch /rootfile 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "from host\nt\nro\n");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "hi\n");
    assert!(
        missing.is_dir(),
        "-v creates a missing host directory, as docker does"
    );
    assert_eq!(
        std::fs::read_to_string(env.root().join("volumes/named/_data/f")).unwrap(),
        "v\n"
    );
    let o = env.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data:ro", host.display()),
        "busybox:1",
        "sh",
        "-c",
        "echo x > /data/nope",
    ]);
    assert_ne!(o.status.code(), Some(0));
}

#[test]
fn restart_policy_and_bad_input() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox:1",
        "sh",
        "-c",
        "echo try; exit 1",
    ]);
    wait_for("two restarts", Duration::from_secs(20), || {
        let i = inspect(&env, "flaky");
        i["RestartCount"] == 2 && i["State"]["Status"] == "exited"
    });
    assert_eq!(env.ok(&["logs", "flaky"]).matches("try").count(), 3);
    assert_eq!(inspect(&env, "flaky")["State"]["ExitCode"], 1);
    let e = env.fails(&["run", "--name", "flaky", "busybox:1", "true"]);
    assert!(e.contains("already in use"), "{e}");
    env.ok(&["rm", "flaky"]);
    for (args, want) in [
        (
            vec!["run", "--pull=never", "nosuchimage:1", "true"],
            "not in the store",
        ),
        (vec!["run", "-m", "lots", "busybox:1", "true"], "not a size"),
        (vec!["run", "--cpus", "0", "busybox:1", "true"], "--cpus"),
        (
            vec!["run", "--restart", "sometimes", "busybox:1", "true"],
            "--restart",
        ),
        (
            vec!["run", "--cap-add", "FLY", "busybox:1", "true"],
            "unknown capability",
        ),
        (
            vec!["run", "-v", "/x:relative", "busybox:1", "true"],
            "absolute",
        ),
        (
            vec!["run", "--name", "bad name", "busybox:1", "true"],
            "invalid container name",
        ),
        (
            vec!["run", "--rm", "busybox:1", "/no/such/program"],
            "no/such/program",
        ),
        (vec!["logs", "ghost"], "no such container"),
    ] {
        let e = env.fails(&args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn killed_monitor_and_killed_cli() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // The CLI of a foreground run is killed: the container goes on and ends recorded.
    let mut cli = env
        .cmd(&[
            "run",
            "--name",
            "fg",
            "busybox:1",
            "sh",
            "-c",
            "sleep 1; echo finished",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the container to run", Duration::from_secs(10), || {
        env.ok(&["ps", "-q"]).trim().len() == 12
    });
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert!(env.ok(&["ps"]).contains("fg"));
    assert_eq!(env.ok(&["wait", "fg"]).trim(), "0");
    assert!(env.ok(&["logs", "fg"]).contains("finished"));
    env.ok(&["rm", "fg"]);

    // The monitor is killed: berth says what it finds, and stop/rm still clean up.
    let id = env
        .ok(&["run", "-d", "--name", "orphan", "busybox:1", "sleep", "60"])
        .trim()
        .to_string();
    let mon: Value = serde_json::from_slice(
        &std::fs::read(env.root().join("containers").join(&id).join("monitor.pid")).unwrap(),
    )
    .unwrap();
    let mpid = mon["pid"].as_i64().unwrap() as i32;
    assert!(std::process::Command::new("kill")
        .args(["-9", &mpid.to_string()])
        .status()
        .unwrap()
        .success());
    wait_for("the monitor to go", Duration::from_secs(5), || {
        env.ok(&["ps"]).contains("monitor lost")
    });
    let note = String::from_utf8_lossy(&env.run(&["ps"]).stderr).into_owned();
    assert!(note.contains("the monitor of orphan is gone"), "{note}");
    env.ok(&["rm", "-f", "orphan"]);
    assert!(
        leftovers(&env, std::slice::from_ref(&id)).is_empty(),
        "{:?}",
        leftovers(&env, &[id])
    );
}

#[test]
fn rapid_run_rm_cycles_leave_nothing() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // The issue's 1000 cycles: a minute or so of test time.
    for i in 0..1000 {
        let o = env.run(&["run", "--rm", "busybox:1", "true"]);
        assert!(o.status.success(), "cycle {i}: {o:?}");
    }
    for i in 0..20 {
        let name = format!("c{i}");
        env.ok(&["run", "-d", "--name", &name, "busybox:1", "true"]);
        env.ok(&["wait", &name]);
        env.ok(&["rm", &name]);
    }
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
    let rt = env.root().join("runtime");
    // The runtime's seccomp cache (a dot directory) stays; no container state does.
    let left: Vec<_> = std::fs::read_dir(&rt)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "runtime state left: {left:?}");
}

#[test]
fn exec_top_diff_pause_commit_rename_volumes() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "w",
        "busybox:1",
        "sh",
        "-c",
        "echo hi > /etc/greeting; rm /etc/os-release; mkdir /newdir; sleep 60",
    ]);
    wait_for("the changes", Duration::from_secs(10), || {
        env.ok(&["diff", "w"]).contains("/newdir")
    });
    let o = env.run(&[
        "exec",
        "-e",
        "X=1",
        "w",
        "sh",
        "-c",
        "echo $X $(cat /etc/greeting) $(id -u); exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1 hi 0\n");
    assert_eq!(env.ok(&["exec", "-u", "65534", "w", "id", "-u"]), "65534\n");
    let top = env.ok(&["top", "w"]);
    assert!(top.starts_with("UID") && top.contains("sleep 60"), "{top}");
    let diff = env.ok(&["diff", "w"]);
    for want in [
        "C /etc",
        "A /etc/greeting",
        "D /etc/os-release",
        "A /newdir",
    ] {
        assert!(
            diff.lines().any(|l| l == want),
            "{want} missing from {diff}"
        );
    }
    assert!(
        !diff.contains("hostname"),
        "init files are not changes: {diff}"
    );
    env.ok(&["pause", "w"]);
    assert_eq!(inspect(&env, "w")["State"]["Status"], "paused");
    env.ok(&["unpause", "w"]);
    assert_eq!(inspect(&env, "w")["State"]["Status"], "running");
    let id = env
        .ok(&["commit", "-m", "snap", "w", "localhost/snap:1"])
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"));
    let out = env.ok(&[
        "run",
        "--rm",
        "snap:1",
        "sh",
        "-c",
        "cat /etc/greeting; ls /etc/os-release 2>&1 || true",
    ]);
    assert!(
        out.starts_with("hi\n") && out.contains("No such file"),
        "{out}"
    );
    env.ok(&["rename", "w", "w2"]);
    assert!(env.ok(&["ps", "--format", "{{.Names}}"]).contains("w2"));
    env.ok(&["volume", "create", "vol1"]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "vol1:/v",
        "busybox:1",
        "sleep",
        "60",
    ]);
    let e = env.fails(&["volume", "rm", "vol1"]);
    assert!(e.contains("in use"), "{e}");
    env.ok(&["rm", "-f", "w2", "user"]);
    env.ok(&["volume", "rm", "vol1"]);
    assert!(!env.ok(&["volume", "ls", "-q"]).contains("vol1"));
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn inspect_explain_reads_the_kernel() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let host = env.path("hostdata");
    std::fs::create_dir_all(&host).unwrap();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "-m",
        "64m",
        "--pids-limit",
        "30",
        "-v",
        &format!("{}:/data:ro", host.display()),
        "busybox:1",
        "sh",
        "-c",
        "rm /etc/os-release; sleep 60",
    ]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--net",
        "container:a",
        "--pid",
        "host",
        "busybox:1",
        "sleep",
        "60",
    ]);
    wait_for("the whiteout", Duration::from_secs(10), || {
        env.ok(&["diff", "a"]).contains("D /etc/os-release")
    });
    let v: Value =
        serde_json::from_str(&env.ok(&["inspect", "--explain", "--format", "json", "b"])).unwrap();
    let ns = |t: &str| {
        v["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == t)
            .unwrap()["shared_with"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(ns("net"), "container a");
    assert_eq!(ns("pid"), "the host");
    assert_eq!(ns("mnt"), "");
    let v: Value =
        serde_json::from_str(&env.ok(&["inspect", "--explain", "--format", "json", "a"])).unwrap();
    let mem = v["cgroups"].as_array().unwrap().iter().find_map(|c| {
        c["files"]["memory.limit_in_bytes"]
            .as_str()
            .map(String::from)
            .or_else(|| c["files"]["memory.max"].as_str().map(String::from))
    });
    assert_eq!(mem.as_deref(), Some("67108864"));
    assert_eq!(v["rootfs"]["type"], "overlay");
    assert_eq!(v["rootfs"]["upper"]["whiteouts"][0], "/etc/os-release");
    let layers = v["rootfs"]["layers"].as_array().unwrap();
    assert!(layers[0]["role"]
        .as_str()
        .unwrap()
        .starts_with("init layer"));
    assert!(layers[1]["diff_id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let data = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap()
        .clone();
    assert_eq!(data["bind_of"], host.to_str().unwrap());
    assert!(data["options"].as_str().unwrap().starts_with("ro"));
    assert_eq!(v["security"]["seccomp"], "filter");
    assert_eq!(
        v["security"]["capabilities_effective"]
            .as_array()
            .unwrap()
            .len(),
        14
    );
    assert_eq!(v["root_switch"]["method"], "pivot_root");
    assert_eq!(v["sandbox"]["kind"], "the container's own");
    let shares: Vec<&str> = v["sandbox"]["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(shares, ["net", "ipc", "uts"], "{v}");
    let served = v["proc_view"]["served"].as_array().unwrap();
    assert!(served.iter().any(|p| p == "/proc/meminfo"), "{served:?}");
    let text = env.ok(&["inspect", "--explain", "a"]);
    for want in [
        "whiteout: /etc/os-release",
        "bind mount of the host's",
        "switched with pivot_root(2)",
        "chroot(2) alone would only",
        "berth's /proc view",
        "It runs in its own sandbox",
        "it shares its net, ipc, uts namespaces with the sandbox",
    ] {
        assert!(text.contains(want), "{want:?} is not in:\n{text}");
    }
    // The calls the filter refuses, with the answer each gets.
    let refused = text
        .lines()
        .find(|l| l.contains("with EPERM (Operation not permitted):"))
        .unwrap_or_else(|| panic!("{text}"));
    for call in ["mount", "unshare", "keyctl", "ptrace", "bpf"] {
        assert!(
            refused.split([' ', ',']).any(|w| w == call),
            "{call}: {refused}"
        );
    }
    assert!(
        text.contains("with ENOSYS (Function not implemented): clone3"),
        "{text}"
    );
    // Without the view, /proc is the kernel's, and it says so.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        "--procview=false",
        "busybox:1",
        "sleep",
        "60",
    ]);
    let text = env.ok(&["inspect", "--explain", "plain"]);
    assert!(text.contains("/proc inside is the kernel's own"), "{text}");
    env.ok(&["rm", "-f", "plain"]);
    env.ok(&["rm", "-f", "a", "b"]);
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn interactive_terminal_and_attach() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // -i: our stdin is the container's; its end is the container's end of input.
    let mut c = env
        .cmd(&[
            "run",
            "--rm",
            "-i",
            "busybox:1",
            "sh",
            "-c",
            "cat; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(c.stdin.as_mut().unwrap(), b"hello stdin\n").unwrap();
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello stdin\ndone\n");
    // -it under a real terminal (script(1) gives us one): a pty inside, the exit code out.
    let line = format!(
        "{} run --rm -it busybox:1 sh -c 'tty; echo \"typed: $(head -n1)\"; exit 4'",
        bin()
    );
    let mut s = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("BERTH_ROOT", env.root())
        .env("BERTH_RUNTIME", runtime_bin())
        .env("BERTH_MONITOR", monitor_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::io::Write::write_all(s.stdin.as_mut().unwrap(), b"words\n").unwrap();
    let o = s.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("/dev/pts/0") && out.contains("typed: words"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(4), "{out}");
    // exec -it: a terminal for the new process too.
    env.ok(&["run", "-d", "--name", "ex", "busybox:1", "sleep", "60"]);
    let line = format!("{} exec -it ex sh -c 'tty; exit 6'", bin());
    let o = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("BERTH_ROOT", env.root())
        .env("BERTH_RUNTIME", runtime_bin())
        .env("BERTH_MONITOR", monitor_bin())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("/dev/pts/"),
        "{o:?}"
    );
    assert_eq!(o.status.code(), Some(6));
    env.ok(&["rm", "-f", "ex"]);
    // attach to a detached -it container.
    env.ok(&["run", "-dit", "--name", "it", "busybox:1", "sh"]);
    let mut a = env
        .cmd(&["attach", "it"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        a.stdin.as_mut().unwrap(),
        b"echo attached $((40+2)); exit 3\n",
    )
    .unwrap();
    let o = a.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("attached 42"),
        "{o:?}"
    );
    assert_eq!(o.status.code(), Some(3));
    let e = env.fails(&["attach", "it"]);
    assert!(e.contains("not running"), "{e}");
    env.ok(&["rm", "it"]);
    // Under a terminal: ctrl-p ctrl-q detach and leave the container running, and
    // --detach-keys chooses other keys; input typed before them still arrives.
    let under_terminal = |line: String, input: &[(u64, &[u8])]| {
        let mut c = std::process::Command::new("timeout")
            .args(["20", "script", "-qec", &line, "/dev/null"])
            .env("BERTH_ROOT", env.root())
            .env("BERTH_RUNTIME", runtime_bin())
            .env("BERTH_MONITOR", monitor_bin())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        for (pause, bytes) in input {
            std::thread::sleep(Duration::from_millis(*pause));
            std::io::Write::write_all(c.stdin.as_mut().unwrap(), bytes).unwrap();
        }
        let o = c.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).replace('\r', ""),
        )
    };
    let (code, out) = under_terminal(
        format!("{} run -it --name dk busybox:1 sh", bin()),
        &[(700, b"echo first $((1+1))\n"), (500, b"\x10\x11")],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("first 2"), "{out}");
    let status = |n: &str| env.ok(&["inspect", "-f", "{{.State.Status}}", n]);
    assert_eq!(status("dk").trim(), "running");
    let (code, out) = under_terminal(
        format!("{} attach --detach-keys ctrl-a,x dk", bin()),
        &[(700, b"echo second $((2+2))\n"), (500, b"\x01x")],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("second 4"), "{out}");
    assert_eq!(status("dk").trim(), "running");
    let e = env.fails(&["attach", "--detach-keys", "meta-x", "dk"]);
    assert!(e.contains("\"meta-x\" is not a key"), "{e}");
    env.ok(&["rm", "-f", "dk"]);
    // A new terminal size reaches the program after it started (SIGWINCH to the CLI).
    env.ok(&[
        "run",
        "-dt",
        "--name",
        "rz",
        "busybox:1",
        "sh",
        "-c",
        "while :; do stty size; sleep 0.2; done",
    ]);
    let (_, out) = under_terminal(
        format!(
            "sh -c '{} attach rz & sleep 1; stty rows 33 cols 77; kill -WINCH $!; sleep 1; kill $!'",
            bin()
        ),
        &[],
    );
    assert!(out.contains("33 77"), "{out}");
    env.ok(&["rm", "-f", "rz"]);
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn cp_in_and_out_stays_inside_the_container() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "busybox:1",
        "sh",
        "-c",
        &format!(
            "mkdir -p /d/sub; echo one > /d/a; echo two > /d/sub/b; ln -s {} /escape; sleep 60",
            outside.display()
        ),
    ]);
    wait_for("the files", Duration::from_secs(10), || {
        env.ok(&["diff", "c"]).contains("/escape")
    });
    // Out: a file, and a directory into an existing host directory.
    let host = env.path("host");
    std::fs::create_dir_all(&host).unwrap();
    env.ok(&["cp", "c:/d/a", host.join("a.txt").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("a.txt")).unwrap(),
        "one\n"
    );
    env.ok(&["cp", "c:/d", host.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("d/sub/b")).unwrap(),
        "two\n"
    );
    // In: a file and a directory.
    std::fs::write(host.join("in.txt"), "into the container\n").unwrap();
    env.ok(&["cp", host.join("in.txt").to_str().unwrap(), "c:/tmp/"]);
    env.ok(&["cp", host.join("d").to_str().unwrap(), "c:/copied"]);
    assert_eq!(
        env.ok(&["exec", "c", "cat", "/tmp/in.txt", "/copied/sub/b"]),
        "into the container\ntwo\n"
    );
    // A symlink in the container pointing at a host path leads nowhere on the host.
    env.ok(&["cp", host.join("in.txt").to_str().unwrap(), "c:/escape/"]);
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written outside"
    );
    let e = env.fails(&["cp", "c:/no/such/file", host.to_str().unwrap()]);
    assert!(e.contains("/no/such/file"), "{e}");
    env.ok(&["rm", "-f", "c"]);
}

#[test]
fn build_from_a_dockerfile_with_cache() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(ctx.join("app")).unwrap();
    std::fs::create_dir_all(ctx.join("secret")).unwrap();
    std::fs::write(ctx.join("app/hello.txt"), "hello from COPY\n").unwrap();
    std::fs::write(ctx.join("app/debug.log"), "noise\n").unwrap();
    std::fs::write(ctx.join("secret/key"), "do not ship\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret\n**/*.log\n").unwrap();
    let mut t = tar::Builder::new(Vec::new());
    file(&mut t, "t/inside.txt", b"from tar\n", 0o644);
    std::fs::write(ctx.join("bundle.tgz"), gzip(&t.into_inner().unwrap())).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM busybox:1
ARG GREETING=hi
ENV APP_HOME=/srv/app \
    MODE=test
WORKDIR $APP_HOME
COPY app/ ./
ADD bundle.tgz /opt/
RUN echo "$GREETING from RUN" > built.txt && ls /opt/t
LABEL org.example.k="v"
EXPOSE 8080
USER 65534
CMD ["sh", "-c", "cat hello.txt built.txt /opt/t/inside.txt; id -u; echo $MODE; ls"]
"#,
    )
    .unwrap();
    let out = env.ok(&[
        "build",
        "-t",
        "localhost/built:1",
        "--build-arg",
        "GREETING=hey",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        out.contains("STEP 11/11") && out.contains("Successfully tagged localhost/built:1"),
        "{out}"
    );
    assert!(out.contains("inside.txt"), "RUN output is shown: {out}");
    let run = env.ok(&["run", "--rm", "built:1"]);
    assert_eq!(
        run,
        "hello from COPY\nhey from RUN\nfrom tar\n65534\ntest\nbuilt.txt\nhello.txt\n"
    );
    let cfg: Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "-f", "{{json .Config}}", "built:1"]))
            .unwrap();
    assert_eq!(cfg["WorkingDir"], "/srv/app");
    assert_eq!(cfg["Labels"]["org.example.k"], "v");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());
    assert!(cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "MODE=test"));
    // Unchanged: every step from the cache. A changed file: COPY and what follows rebuilt.
    let again = env.ok(&[
        "build",
        "-t",
        "localhost/built:1",
        "--build-arg",
        "GREETING=hey",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(again.matches("Using cache").count(), 10, "{again}");
    std::fs::write(ctx.join("app/hello.txt"), "changed\n").unwrap();
    let third = env.ok(&[
        "build",
        "-t",
        "localhost/built:2",
        "--build-arg",
        "GREETING=hey",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(third.matches("Using cache").count(), 3, "{third}");
    assert!(env.ok(&["run", "--rm", "built:2"]).starts_with("changed\n"));
    // A failing RUN stops the build with its exit code and leaves no container.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:1\nRUN exit 3\n").unwrap();
    let e = env.fails(&["build", ctx.to_str().unwrap()]);
    assert!(
        e.contains("non-zero code: 3") && e.contains("line 2"),
        "{e}"
    );
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:1\nVERSION 2\n").unwrap();
    let e = env.fails(&["build", ctx.to_str().unwrap()]);
    assert!(e.contains("VERSION is not supported"), "{e}");
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
}

#[test]
fn a_full_disk_while_logging_never_blocks_the_container() {
    let env = Env::new();
    std::fs::create_dir_all(env.root()).unwrap();
    assert!(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m", "berth-test-logfull"])
        .arg(env.root())
        .status()
        .unwrap()
        .success());
    env.busybox_image("localhost/busybox:1");
    // 32 MiB of output into a log on a disk with a few MiB left.
    let o = env.run(&[
        "run",
        "--name",
        "loud",
        "busybox:1",
        "sh",
        "-c",
        "head -c 33554432 /dev/zero | tr '\\0' x | fold -w 100; echo end",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the container ran to its end: {:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let state = inspect(&env, "loud")["State"].clone();
    assert_eq!(state["ExitCode"], 0);
    assert!(
        state["LogError"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{state}"
    );
    env.ok(&["rm", "loud"]);
    assert!(
        leftovers(&env, &[]).is_empty(),
        "{:?}",
        leftovers(&env, &[])
    );
    // Env's drop unmounts the tmpfs.
}
