//! Terminals: the pty master handed over --console-socket (as conmon and the
//! containerd shim receive it), and the foreground `run` proxying the pty itself.

mod common;

use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;

use common::*;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use serde_json::json;

/// Accepts one connection and receives the descriptor sent on it.
fn receive_master(listener: &UnixListener) -> (OwnedFd, String) {
    let (conn, _) = listener.accept().unwrap();
    let mut space = [MaybeUninit::<u8>::uninit(); 64];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 256];
    let msg = rustix::net::recvmsg(
        conn.as_fd(),
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::empty(),
    )
    .unwrap();
    let name = String::from_utf8_lossy(&buf[..msg.bytes]).into_owned();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m {
            return (fds.next().unwrap(), name);
        }
    }
    panic!("no descriptor received");
}

fn read_until(master: &mut std::fs::File, needle: &str) -> String {
    let mut out = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while !out.contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {needle:?} in {out:?}"
        );
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn console_socket_receives_a_working_pty() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    b.sh("tty; stty size; test -t 0 && echo stdin-is-tty; read line; echo got:$line");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let id = unique_id("tty");
    let _g = Guard {
        rt: &rt,
        id: id.clone(),
    };
    let create = {
        let rt_cmd = rt.cmd();
        let mut c = rt_cmd;
        c.args([
            "create",
            "--bundle",
            b.path().to_str().unwrap(),
            "--console-socket",
            sock.to_str().unwrap(),
            &id,
        ]);
        c.spawn().unwrap()
    };
    let (master, name) = receive_master(&listener);
    assert_eq!(name, "/dev/console");
    let st = create.wait_with_output().unwrap();
    assert!(st.status.success());
    rt.ok(&["start", &id]);
    let mut master = std::fs::File::from(master);
    let out = read_until(&mut master, "stdin-is-tty");
    assert!(
        out.contains("/dev/pts/0") || out.contains("/dev/console"),
        "{out}"
    );
    assert!(out.contains("30 100"), "console size applied: {out}");
    master.write_all(b"hello\n").unwrap();
    let out = read_until(&mut master, "got:hello");
    assert!(out.contains("got:hello"), "{out}");
    wait_for("the container to stop", 3000, || {
        rt.status(&id) == "stopped"
    });
}

#[test]
fn terminal_without_console_socket_is_refused_for_create() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["terminal"] = json!(true);
    b.write();
    let id = unique_id("notty");
    let err = rt.fail(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("--console-socket"), "{err}");
    assert_no_leaks(&rt, &id, Some(&b));
    b.config["process"]["terminal"] = json!(false);
    b.write();
    let err = rt.fail(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--console-socket",
        "/tmp/x.sock",
        &id,
    ]);
    assert!(err.contains("terminal is false"), "{err}");
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn foreground_run_proxies_the_pty() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["terminal"] = json!(true);
    b.sh("test -t 1 && echo on-a-tty; exit 4");
    let id = unique_id("fgtty");
    let (code, out, _) = rt.run_container(&b, &id);
    assert_eq!(code, 4);
    assert!(
        out.contains("on-a-tty\r\n"),
        "a pty turns \\n into \\r\\n: {out:?}"
    );
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn exec_with_a_tty_through_a_console_socket() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("exectty");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut c = rt.cmd();
    c.args([
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "tty; echo exec-tty-ok",
    ]);
    let child = c.spawn().unwrap();
    let (master, name) = receive_master(&listener);
    assert!(
        name.starts_with("/dev/pts/"),
        "runc sends the pty's name: {name}"
    );
    assert!(child.wait_with_output().unwrap().status.success());
    let mut master = std::fs::File::from(master);
    let out = read_until(&mut master, "exec-tty-ok");
    assert!(out.contains("/dev/pts/"), "{out}");
    // Foreground exec with a tty proxies it like run does.
    let out = rt.ok(&["exec", "--tty", &id, "sh", "-c", "test -t 0 && echo fg-tty"]);
    assert!(out.contains("fg-tty\r\n"), "{out:?}");
}
