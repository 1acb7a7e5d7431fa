//! The /proc view (berth-procview, what lxcfs does) through the `berth` CLI: inside a
//! container with limits, /proc/meminfo, cpuinfo, stat, uptime, swaps and the online CPU
//! list tell the container's truth — the same numbers as Debian's lxcfs reading for the
//! same container — `--procview=false` gives the host's, and a dead server makes reads
//! fail at once instead of hanging.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn field_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn limits_show_inside_and_match_lxcfs() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // lxcfs, Debian's, on a mount of this test's own, read from the same container.
    let lx = env.path("lxcfs");
    std::fs::create_dir_all(&lx).unwrap();
    let mut lxcfs = Command::new("lxcfs")
        .arg("-f")
        .arg("-p")
        .arg(env.path("lxcfs.pid"))
        .arg(&lx)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lxcfs is installed");
    let end = Instant::now() + Duration::from_secs(5);
    while !lx.join("proc/meminfo").exists() {
        assert!(Instant::now() < end, "lxcfs did not mount");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lx_mount = format!("{}:/lxcfs:ro", lx.join("proc").display());
    let out = env.ok(&[
        "run",
        "--rm",
        "-m",
        "256m",
        "--cpus",
        "1",
        "-v",
        &lx_mount,
        "busybox:1",
        "sh",
        "-c",
        "cat /proc/meminfo; echo ===; cat /lxcfs/meminfo; echo ===; grep -c ^processor /proc/cpuinfo; \
         cat /sys/devices/system/cpu/online; cat /proc/uptime; echo ===; top -bn1 | head -1",
    ]);
    let _ = lxcfs.kill();
    let _ = lxcfs.wait();
    let _ = Command::new("umount").arg("-l").arg(&lx).status();
    let parts: Vec<&str> = out.split("===\n").collect();
    assert_eq!(parts.len(), 4, "{out}");
    let (ours, theirs) = (parts[0], parts[1]);
    assert_eq!(field_kib(ours, "MemTotal:"), 262144, "{ours}");
    assert_eq!(
        field_kib(ours, "MemTotal:"),
        field_kib(theirs, "MemTotal:"),
        "berth:\n{ours}\nlxcfs:\n{theirs}"
    );
    // Free memory moves between two reads; the two views agree within a few MiB.
    let (a, b) = (field_kib(ours, "MemFree:"), field_kib(theirs, "MemFree:"));
    assert!(a.abs_diff(b) < 8 * 1024, "MemFree berth {a} lxcfs {b}");
    let mut rest = parts[2].lines();
    assert_eq!(rest.next(), Some("1"), "{out}");
    assert_eq!(rest.next(), Some("0"), "{out}");
    let up: f64 = rest
        .next()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap();
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        up < 30.0 && up < host_up,
        "container uptime {up}, host {host_up}"
    );
    // busybox top's memory line adds up to the limit.
    let top = parts[3];
    let used: u64 = top
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.trim_end_matches('K').parse().ok())
        .unwrap();
    let free: u64 = top
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.trim_end_matches('K').parse().ok())
        .unwrap();
    assert_eq!(used + free, 262144, "{top}");
    // A cpuset shows as the CPUs there are.
    let o = env.ok(&[
        "run",
        "--rm",
        "--cpuset-cpus",
        "0",
        "busybox:1",
        "sh",
        "-c",
        "grep -c ^processor /proc/cpuinfo; head -2 /proc/stat | cut -d' ' -f1",
    ]);
    assert_eq!(o, "1\ncpu\ncpu0\n");
    // Opting out: the host's /proc.
    let o = env.ok(&[
        "run",
        "--rm",
        "-m",
        "256m",
        "--procview=false",
        "busybox:1",
        "head",
        "-1",
        "/proc/meminfo",
    ]);
    let host = std::fs::read_to_string("/proc/meminfo").unwrap();
    assert_eq!(field_kib(&o, "MemTotal:"), field_kib(&host, "MemTotal:"));
}

#[test]
fn a_dead_server_fails_reads_at_once_and_is_replaced() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // A server of this test's own, so that killing it touches no other test.
    let dir = env.path("procview");
    let run = |args: &[&str]| {
        env.cmd(args)
            .env("BERTH_PROCVIEW_DIR", &dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = run(&[
        "run",
        "-d",
        "--name",
        "pv",
        "-m",
        "64m",
        "busybox:1",
        "sleep",
        "60",
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = env.ok(&["exec", "pv", "head", "-1", "/proc/meminfo"]);
    assert_eq!(field_kib(&o, "MemTotal:"), 65536, "{o}");
    // Find our server and kill it.
    for pid in procview_servers(&dir) {
        Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let o = env.run(&["exec", "pv", "cat", "/proc/meminfo"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not connected"),
        "{o:?}"
    );
    // The next container gets a new server.
    let o = run(&[
        "run",
        "--rm",
        "-m",
        "32m",
        "busybox:1",
        "head",
        "-1",
        "/proc/meminfo",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        field_kib(&String::from_utf8_lossy(&o.stdout), "MemTotal:"),
        32768
    );
    env.ok(&["rm", "-f", "pv"]);
    // Told to stop (SIGTERM), a server unmounts its view before it goes.
    let servers = procview_servers(&dir);
    assert!(!servers.is_empty(), "the new server runs");
    for pid in &servers {
        Command::new("kill").arg(pid.to_string()).status().unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    while !procview_server_pids(&dir).is_empty() {
        assert!(Instant::now() < end, "the server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "the view is still mounted at {}",
        dir.display()
    );
}

/// The total-memory column of busybox `free -k` (which asks sysinfo(2)).
fn free_total_kib(out: &str) -> u64 {
    field_kib(out, "Mem:")
}

#[test]
fn sysinfo_answers_from_the_container_cgroup() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let host_kib = rustix::system::sysinfo().totalram as u64 / 1024;
    // busybox free and uptime ask the kernel, not /proc: the seccomp agent answers.
    let o = env.ok(&[
        "run",
        "--rm",
        "-m",
        "256m",
        "busybox:1",
        "sh",
        "-c",
        "free -k; echo ===; uptime",
    ]);
    let (free, up) = o.split_once("===\n").unwrap();
    assert_eq!(free_total_kib(free), 262144, "{o}");
    // The columns add up: used (total - free - buff/cache) is within the limit.
    let used: u64 = free
        .lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(used < 262144, "{o}");
    assert!(up.contains("up 0 min"), "{o}");
    // Without the view, the host's.
    let o = env.ok(&[
        "run",
        "--rm",
        "-m",
        "256m",
        "--procview=false",
        "busybox:1",
        "free",
        "-k",
    ]);
    assert_eq!(free_total_kib(&o), host_kib, "{o}");
    // No memory limit: the host's memory (but the container's age).
    let o = env.ok(&["run", "--rm", "busybox:1", "free", "-k"]);
    assert_eq!(free_total_kib(&o), host_kib, "{o}");
    // Processes started by exec have their own filter and listener.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "si",
        "-m",
        "128m",
        "busybox:1",
        "sleep",
        "60",
    ]);
    let o = env.ok(&["exec", "si", "free", "-k"]);
    assert_eq!(free_total_kib(&o), 131072, "{o}");
    env.ok(&["rm", "-f", "si"]);
}

#[test]
fn a_dead_agent_leaves_sysinfo_to_the_kernel() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let dir = env.path("procview");
    let host_up = rustix::system::sysinfo().uptime;
    assert!(
        host_up > 120,
        "the host must be up for 2 minutes ({host_up} s) to tell its uptime from a container's"
    );
    // busybox uptime asks sysinfo(2) only (free also reads /proc/meminfo, which fails
    // with the view's server dead). The container's own processes ask every 100 ms.
    let o = env
        .cmd(&[
            "run",
            "-d",
            "--name",
            "ag",
            "-m",
            "64m",
            "busybox:1",
            "sh",
            "-c",
            "while :; do uptime > /tmp/u.new && mv /tmp/u.new /tmp/u; sleep 0.1; done",
        ])
        .env("BERTH_PROCVIEW_DIR", &dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let read = || {
        let o = env.run(&["exec", "ag", "cat", "/tmp/u"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !read().contains(" up ") {
        assert!(Instant::now() < end, "the container's uptime never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(read().contains("up 0 min"), "{}", read());
    for pid in procview_servers(&dir) {
        Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()
            .unwrap();
    }
    // The monitor takes over: the kernel answers (the host's uptime), nothing waits.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let u = read();
        if u.contains(" up ") && !u.contains("up 0 min") {
            break;
        }
        assert!(
            Instant::now() < end,
            "sysinfo never fell back to the kernel: {u}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A process started after the agent died is answered by the kernel too, at once.
    let t = Instant::now();
    let o = env.ok(&["exec", "ag", "uptime"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(o.contains(" up ") && !o.contains("up 0 min"), "{o}");
    env.ok(&["rm", "-f", "ag"]);
}

/// The processes of the procview server of this test's own view directory (at
/// least one).
fn procview_servers(dir: &std::path::Path) -> Vec<i32> {
    let found = procview_server_pids(dir);
    assert!(
        !found.is_empty(),
        "no procview server for {}",
        dir.display()
    );
    found
}

/// The processes of the procview server of this test's own view directory.
fn procview_server_pids(dir: &std::path::Path) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains("procview-serve")
            && String::from_utf8_lossy(&environ).contains(&*dir.to_string_lossy())
        {
            found.push(e.file_name().to_string_lossy().parse().unwrap());
        }
    }
    found
}
