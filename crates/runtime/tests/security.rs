//! Security properties, each with a test that fails without the protection:
//! runtime binary overwrite (CVE-2019-5736), leaked descriptors and cwd outside the root
//! (CVE-2024-21626), mount destinations escaping the root (CVE-2021-30465), mounts over
//! /proc (CVE-2019-16884), an impostor /dev/null (CVE-2025-31133), and inheritable or
//! ambient capabilities nobody asked for (CVE-2022-29162).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn the_runtime_binary_cannot_be_overwritten_through_proc_exe() {
    use std::io::Write;
    // A private copy of the binary, so a failure of the protection cannot damage the
    // binary other tests use.
    let bin_dir = tempfile::tempdir().unwrap();
    let copy = bin_dir.path().join("berth-runtime");
    std::fs::copy(bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("exe");
    let rt = |args: &[&str]| {
        Command::new(&copy)
            .arg("--root")
            .arg(root.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
    };
    assert!(rt(&["create", "--bundle", b.path().to_str().unwrap(), &id]).success());
    let state: serde_json::Value = serde_json::from_slice(
        &Command::new(&copy)
            .arg("--root")
            .arg(root.path())
            .args(["state", &id])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pid = state["pid"].as_i64().unwrap();
    // The attack of CVE-2019-5736: hold on to the executable of a runtime process that
    // lives in the container, and write through it once the runtime has moved on.
    let exe = format!("/proc/{pid}/exe");
    let target = std::fs::read_link(&exe).unwrap();
    let held = std::fs::File::open(&exe).unwrap();
    assert!(rt(&["start", &id]).success());
    wait_for("the init to exec sleep", 2000, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    let reopened = std::fs::OpenOptions::new().write(true).open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&held)
    ));
    let wrote = reopened.and_then(|mut f| f.write_all(b"pwned"));
    // Deleted with the pristine binary: the copy may be what the attack damaged.
    let deleted = Command::new(bin())
        .arg("--root")
        .arg(root.path())
        .args(["delete", "--force", &id])
        .status()
        .unwrap();
    assert!(deleted.success());
    let err = wrote.expect_err(&format!(
        "writing the runtime executable ({}) succeeded",
        target.display()
    ));
    // A read-only mount (EROFS) or a sealed copy (EPERM) refuses the write.
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::EPERM)),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the runtime binary was modified"
    );
}

#[test]
fn the_container_cannot_open_the_runtime_executable_during_setup() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let out = tempfile::tempdir().unwrap();
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/out", "type": "bind", "source": out.path(), "options": ["bind"]}));
    // startContainer hooks run in the container while the init (the runtime) waits.
    b.config["hooks"] = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c",
        "cat /proc/1/exe > /dev/null 2>/out/err; echo $? > /out/result"]}]});
    b.sh("true");
    rt.output_of(&b, &unique_id("dumpable"));
    let result = std::fs::read_to_string(out.path().join("result")).unwrap();
    assert_ne!(
        result.trim(),
        "0",
        "the runtime's executable was readable from the container"
    );
}

#[test]
fn no_descriptor_leaks_into_the_container() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("ls /proc/self/fd | tr '\\n' ' '");
    let host_dir = tempfile::tempdir().unwrap();
    let id = unique_id("fds");
    let bundle = b.path().to_str().unwrap().to_string();
    // The runtime is started with extra open descriptors (7: a host directory, 8: a
    // file); the container must see only stdio.
    let prefix = format!("exec 7<{} 8<{}", host_dir.path().display(), bin());
    let out = rt.run_after(&prefix, &["run", "--bundle", &bundle, &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `ls` itself holds one descriptor for /proc/self/fd.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0 1 2 3");

    // --preserve-fds passes exactly the descriptors asked for.
    b.sh("cat <&3; ls /proc/self/fd | tr '\\n' ' '");
    let f = host_dir.path().join("passed");
    std::fs::write(&f, "passed-through\n").unwrap();
    let id = unique_id("fds");
    let prefix = format!("exec 3<{f} 4<{f}", f = f.display());
    let out = rt.run_after(
        &prefix,
        &["run", "--preserve-fds", "1", "--bundle", &bundle, &id],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("passed-through\n0 1 2 3 4"), "{text}");
    assert!(!text.contains(" 5"), "only fd 3 was preserved: {text}");
}

#[test]
fn a_cwd_outside_the_root_is_refused() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("host-secret"), "x").unwrap();
    b.config["process"]["cwd"] = json!("/proc/self/fd/7");
    b.sh("ls ..");
    let id = unique_id("cwd");
    let prefix = format!("exec 7<{}", host_dir.path().display());
    let out = rt.run_after(
        &prefix,
        &["run", "--bundle", b.path().to_str().unwrap(), &id],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains("host-secret"));
    assert!(stderr.contains("process.cwd"), "{stderr}");
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn mount_destinations_stay_inside_the_root() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let host_target = tempfile::tempdir().unwrap();
    // Absolute and relative symlinks that would leave the rootfs if followed on the host.
    std::os::unix::fs::symlink(host_target.path(), b.rootfs().join("evil")).unwrap();
    let inside_target = b
        .rootfs()
        .join(host_target.path().strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside_target).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", b.rootfs().join("up")).unwrap();
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/evil/inner", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(json!({"destination": "/up/escaped", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(json!({"destination": "/../../../dotdot", "type": "tmpfs", "source": "tmpfs"}));
    b.sh("grep -c -E ' /(evil|up)' /proc/self/mountinfo; ls -d /dotdot /escaped");
    let id = unique_id("escape");
    let out = rt.output_of(&b, &id);
    assert!(out.contains("/dotdot") && out.contains("/escaped"), "{out}");
    assert_eq!(
        std::fs::read_dir(host_target.path()).unwrap().count(),
        0,
        "nothing was created on the host"
    );
    assert!(!std::path::Path::new("/escaped").exists());
    assert!(!std::path::Path::new("/dotdot").exists());
    let inside = inside_target.join("inner");
    assert!(
        inside.exists(),
        "the symlink was resolved inside the rootfs: {}",
        inside.display()
    );
    assert_no_leaks(&rt, &id, Some(&b));

    // A dangling symlink is not followed out of the root to create its target.
    std::fs::remove_dir_all(&inside_target).unwrap();
    let id = unique_id("escape");
    let (code, _, err) = rt.run_container(&b, &id);
    assert_ne!(code, 0);
    assert!(
        err.contains("mounts[7]") && err.contains("/evil/inner"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(host_target.path()).unwrap().count(), 0);
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn mounts_over_proc_are_refused() {
    let rt = Runtime::new();
    let host = tempfile::tempdir().unwrap();
    let f = host.path().join("fake");
    std::fs::write(&f, "fake\n").unwrap();
    for dest in [
        "/proc/self/attr/exec",
        "/proc/sys/kernel/core_pattern",
        "/proc/self/oom_score_adj",
    ] {
        let mut b = Bundle::busybox();
        b.config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": dest, "type": "bind", "source": f, "options": ["bind"]}));
        b.write();
        let id = unique_id("procmnt");
        let (code, _, err) = rt.run_container(&b, &id);
        assert_ne!(code, 0, "{dest}");
        assert!(err.contains("inside /proc") && err.contains(dest), "{err}");
        assert_no_leaks(&rt, &id, Some(&b));
    }
    // What /proc views (lxcfs) need is allowed.
    let mut b = Bundle::busybox();
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/proc/meminfo", "type": "bind", "source": f, "options": ["bind"]}));
    b.sh("cat /proc/meminfo");
    assert_eq!(rt.output_of(&b, &unique_id("procmnt")), "fake\n");
}

#[test]
fn an_impostor_dev_null_is_not_used_for_masking() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    // The container's /dev comes from a directory where "null" is a symlink to a file
    // that masking would then expose read-write.
    let dev = b.path().join("fakedev");
    std::fs::create_dir(&dev).unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", dev.join("null")).unwrap();
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| !m["destination"].as_str().unwrap().starts_with("/dev"));
    mounts
        .push(json!({"destination": "/dev", "type": "bind", "source": dev, "options": ["rbind"]}));
    b.config["linux"]["maskedPaths"] = json!(["/proc/keys"]);
    b.sh("cat /proc/sys/kernel/core_pattern");
    let id = unique_id("devnull");
    let (code, _, err) = rt.run_container(&b, &id);
    assert_ne!(code, 0);
    assert!(err.contains("/dev/null"), "{err}");
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn inheritable_and_ambient_capabilities_are_empty_unless_asked() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"]});
    b.sh("grep -E '^Cap(Inh|Amb)' /proc/self/status");
    let out = rt.output_of(&b, &unique_id("caps"));
    assert_eq!(
        out,
        "CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\n"
    );
    // A non-root user keeps nothing but what ambient grants.
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.sh("grep -E '^Cap(Eff|Prm)' /proc/self/status");
    let out = rt.output_of(&b, &unique_id("caps"));
    assert_eq!(
        out,
        "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
    );
}
