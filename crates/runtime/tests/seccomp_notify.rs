//! Seccomp user notification (SCMP_ACT_NOTIFY with `linux.seccomp.listenerPath`, the
//! OCI seccomp agent protocol): the runtime sends each process's listener with its
//! container process state to the agent, which answers the notified calls; an agent
//! that lets go makes the calls fail rather than hang; a listener nobody serves is a
//! clear error at create.

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use serde_json::json;

/// The total RAM the test's agent reports: 7 MiB.
const AGENT_TOTALRAM: u64 = 7 << 20;

fn notify_sysinfo(listener: &std::path::Path) -> serde_json::Value {
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "listenerPath": listener, "listenerMetadata": "meta-1",
           "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}]})
}

/// What the agent saw of one connection: the state, and how many calls it answered.
type Seen = std::sync::mpsc::Receiver<berth_seccomp_listener::ContainerProcessState>;

/// A seccomp agent on a thread: for each connection it reports the state and answers
/// sysinfo with 7 MiB of RAM (writing the 64-bit struct's totalram and mem_unit into
/// the caller's buffer), or — with `drop_listener` — closes the listener at once.
fn agent(path: &std::path::Path, drop_listener: bool) -> Seen {
    let l = UnixListener::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let (state, fds) = berth_seccomp_listener::recv(conn.as_fd()).unwrap();
            let fd = berth_seccomp_listener::seccomp_fd(&state, fds).unwrap();
            let _ = tx.send(state);
            if drop_listener {
                continue;
            }
            std::thread::spawn(move || answer(fd));
        }
    });
    rx
}

fn answer(fd: OwnedFd) {
    let raw = fd.as_raw_fd();
    while let Ok(req) = ScmpNotifReq::receive(raw) {
        let mut buf = [0u8; 112];
        buf[32..40].copy_from_slice(&AGENT_TOTALRAM.to_ne_bytes());
        buf[104..108].copy_from_slice(&1u32.to_ne_bytes());
        let mem = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{}/mem", req.pid))
            .unwrap();
        libseccomp::notify_id_valid(raw, req.id).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&mem, &buf, req.data.args[0]).unwrap();
        ScmpNotifResp::new_val(req.id, 0, ScmpNotifRespFlags::empty())
            .respond(raw)
            .unwrap();
    }
}

/// Whether busybox `free -k` printed the agent's total. (Its "used" column is total
/// less free less the host's page cache from /proc/meminfo, negative here: the
/// columns can run together, so only the start of the line is read.)
fn shows_agent_total(out: &str) -> bool {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .unwrap_or_else(|| panic!("no Mem: line in {out:?}"));
    line.trim_start()
        .starts_with(&(AGENT_TOTALRAM / 1024).to_string())
}

#[test]
fn the_agent_gets_the_listener_and_answers_for_init_and_exec() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let seen = agent(&sock, false);
    let mut b = Bundle::busybox();
    b.config["linux"]["seccomp"] = notify_sysinfo(&sock);
    // Without no_new_privs (and without CAP_SYS_ADMIN in the bundle's sets) the runtime
    // holds CAP_SYS_ADMIN for the load; the listener goes out after it.
    b.config["process"]["noNewPrivileges"] = json!(false);
    assert!(!b.config["process"]["capabilities"]["effective"]
        .to_string()
        .contains("CAP_SYS_ADMIN"));
    b.sh("free -k > /tmp/init-free; sleep 1000");
    let id = unique_id("notify");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let st = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    let init_pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;
    assert_eq!(*st.pid(), init_pid);
    assert_eq!(st.fds(), &vec!["seccompFd".to_string()]);
    assert_eq!(st.metadata().as_deref(), Some("meta-1"));
    assert_eq!(st.state().id(), &id);
    assert_eq!(st.state().pid(), &Some(init_pid));
    assert_eq!(st.state().status().to_string(), "created");
    // The init's program asked, the agent answered.
    wait_for("the init's free", 10_000, || {
        rt.run(&["exec", &id, "cat", "/tmp/init-free"])
            .stdout
            .starts_with(b" ")
    });
    let out = rt.ok(&["exec", &id, "cat", "/tmp/init-free"]);
    assert!(shows_agent_total(&out), "{out}");
    // Each exec (the cats above too) has a filter and listener of its own.
    while seen.try_recv().is_ok() {}
    let out = rt.ok(&["exec", &id, "free", "-k"]);
    assert!(shows_agent_total(&out), "{out}");
    let st = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_ne!(*st.pid(), init_pid);
    assert!(*st.pid() > 0);
    assert_eq!(st.state().pid(), &Some(init_pid));
    assert_eq!(st.state().status().to_string(), "running");
}

#[test]
fn an_agent_that_lets_go_makes_calls_fail_not_hang() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let seen = agent(&sock, true);
    let mut b = Bundle::busybox();
    b.config["linux"]["seccomp"] = notify_sysinfo(&sock);
    b.sh("free -k; echo done");
    let id = unique_id("notify-gone");
    let t = Instant::now();
    let (code, out, err) = rt.run_container(&b, &id);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(seen.try_recv().is_ok(), "the agent never got the listener");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("done"), "{out}{err}");
    // The kernel refused the call (ENOSYS) instead of answering it: not the agent's 7 MiB.
    assert!(!shows_agent_total(&out), "{out}");
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn a_listener_without_a_notifying_rule_is_ignored() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["seccomp"] =
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nobody/listens/here"});
    b.sh("echo ran");
    assert_eq!(rt.output_of(&b, &unique_id("notify-unused")), "ran\n");
}

#[test]
fn a_listener_nobody_serves_is_a_clear_error() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let mut b = Bundle::busybox();
    b.config["linux"]["seccomp"] = notify_sysinfo(&dir.path().join("nobody.sock"));
    b.sh("true");
    b.write();
    let id = unique_id("notify-none");
    let err = rt.fail(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("listenerPath") && err.contains("is the seccomp agent listening"),
        "{err}"
    );
    assert_no_leaks(&rt, &id, Some(&b));
}
