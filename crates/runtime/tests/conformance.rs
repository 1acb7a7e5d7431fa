//! Bundles runc and crun run that berth-runtime once refused or ran differently,
//! each found by an external conformance run or tried as a new user would: the
//! default config of `runc spec` (ambient capabilities that are not inheritable), a
//! seccomp profile that refuses a call the runtime itself used, rlimits applied
//! exactly, SELinux labels on a host without SELinux, and the state hooks read.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

/// The bits of a capability set line of /proc/PID/status ("CapAmb:\t0000...").
fn cap_bits(status: &str, set: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:\t")))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("{set} in {status}"))
}

const CAP_KILL: u64 = 1 << 5;
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_SYS_ADMIN: u64 = 1 << 21;

#[test]
fn the_default_config_of_runc_spec_runs() {
    let Ok(out) = Command::new("runc").arg("--version").output() else {
        panic!("runc is not installed: scripts/deps.sh installs it");
    };
    assert!(out.status.success());
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    // `runc spec` refuses to overwrite a config: the bundle's own goes first.
    std::fs::remove_file(b.path().join("config.json")).unwrap();
    let out = Command::new("runc")
        .arg("spec")
        .current_dir(b.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "runc spec: {out:?}");
    b.config =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
    let caps = &b.config["process"]["capabilities"];
    let ambient = caps["ambient"].to_string();
    assert!(ambient.contains("CAP_KILL"), "{caps}");
    assert!(
        !caps["inheritable"].to_string().contains("CAP_KILL"),
        "runc's default lists CAP_KILL as ambient but not inheritable: {caps}"
    );
    // As written, but without a terminal (the test has none).
    b.config["process"]["terminal"] = json!(false);
    b.sh("grep -E '^Cap(Amb|Prm|Eff)' /proc/self/status");
    let out = rt.output_of(&b, &unique_id("runcspec"));
    // The kernel raises no ambient capability that is not inheritable: none is.
    assert_eq!(cap_bits(&out, "CapAmb"), 0, "{out}");
    assert_ne!(cap_bits(&out, "CapPrm") & CAP_KILL, 0, "{out}");
}

#[test]
fn ambient_capabilities_that_can_be_raised_are() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE", "CAP_KILL"]
    });
    b.sh("grep -E '^CapAmb' /proc/self/status");
    let out = rt.output_of(&b, &unique_id("ambient"));
    assert_eq!(cap_bits(&out, "CapAmb"), CAP_NET_BIND_SERVICE, "{out}");
}

/// A profile that lets everything through but getcwd(2).
fn no_getcwd() -> serde_json::Value {
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
}

#[test]
fn a_seccomp_profile_the_program_survives_the_runtime_survives_too() {
    let rt = Runtime::new();
    for (nnp, uid) in [(false, 1000), (false, 0), (true, 1000)] {
        let mut b = Bundle::busybox();
        b.config["linux"]["seccomp"] = no_getcwd();
        b.config["process"]["noNewPrivileges"] = json!(nnp);
        b.config["process"]["user"] = json!({"uid": uid, "gid": uid});
        b.config["process"]["cwd"] = json!("/tmp");
        // busybox's echo never asks for the working directory; its pwd does.
        b.args(&[
            "sh",
            "-c",
            "echo running; grep -E '^Cap(Prm|Eff)' /proc/self/status; /bin/busybox pwd -P 2>&1 || true",
        ]);
        let id = unique_id("seccomp-last");
        let (code, out, err) = rt.run_container(&b, &id);
        assert_eq!(code, 0, "nnp={nnp} uid={uid}: {out}{err}");
        assert!(
            out.starts_with("running"),
            "nnp={nnp} uid={uid}: {out}{err}"
        );
        // The filter is in force for the program...
        assert!(out.contains("Operation not permitted"), "{out}");
        // ...and the capability the runtime held to load it is gone (a non-root
        // user of the default config has no CAP_SYS_ADMIN).
        if uid != 0 {
            assert_eq!(cap_bits(&out, "CapPrm") & CAP_SYS_ADMIN, 0, "{out}");
            assert_eq!(cap_bits(&out, "CapEff") & CAP_SYS_ADMIN, 0, "{out}");
        }
        assert_no_leaks(&rt, &id, Some(&b));
    }
}

#[test]
fn exec_survives_a_profile_its_program_survives() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["seccomp"] = no_getcwd();
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.args(&["sleep", "1000"]);
    let id = unique_id("seccomp-exec");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo from-exec; grep CapPrm /proc/self/status",
    ]);
    assert!(out.starts_with("from-exec"), "{out}");
    assert_eq!(cap_bits(&out, "CapPrm") & CAP_SYS_ADMIN, 0, "{out}");
}

#[test]
fn rlimits_are_applied_exactly_as_configured() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "hard": 4000, "soft": 3000},
        {"type": "RLIMIT_AS", "hard": 8_589_934_592u64, "soft": 4_294_967_296u64},
        {"type": "RLIMIT_CORE", "hard": 2_097_152, "soft": 1_048_576},
        {"type": "RLIMIT_DATA", "hard": 8_589_934_592u64, "soft": 4_294_967_296u64},
        {"type": "RLIMIT_FSIZE", "hard": 1_073_741_824, "soft": 536_870_912},
        {"type": "RLIMIT_STACK", "hard": 16_777_216, "soft": 8_388_608},
        {"type": "RLIMIT_CPU", "hard": 7200, "soft": 3600},
    ]);
    b.sh("cat /proc/self/limits");
    let out = rt.output_of(&b, &unique_id("rlimits"));
    check_limits(&out);
    // And for a process run by `exec --process` in a running container.
    let limits = b.config["process"]["rlimits"].clone();
    b.args(&["sleep", "1000"]);
    let id = unique_id("rlimits-exec");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let p = b.path().join("process.json");
    std::fs::write(
        &p,
        json!({"args": ["cat", "/proc/self/limits"], "env": ["PATH=/bin"], "cwd": "/",
               "user": {"uid": 0, "gid": 0}, "rlimits": limits})
        .to_string(),
    )
    .unwrap();
    check_limits(&rt.ok(&["exec", "--process", p.to_str().unwrap(), &id]));
}

/// Checks /proc/self/limits shows what `rlimits_are_applied_exactly_as_configured`
/// configures.
fn check_limits(out: &str) {
    let limit = |name: &str| -> (String, String) {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {out}"));
        let f: Vec<&str> = line[name.len()..].split_whitespace().collect();
        (f[0].to_string(), f[1].to_string())
    };
    for (name, soft, hard) in [
        ("Max open files", "3000", "4000"),
        ("Max address space", "4294967296", "8589934592"),
        ("Max core file size", "1048576", "2097152"),
        ("Max data size", "4294967296", "8589934592"),
        ("Max file size", "536870912", "1073741824"),
        ("Max stack size", "8388608", "16777216"),
        ("Max cpu time", "3600", "7200"),
    ] {
        assert_eq!(
            limit(name),
            (soft.to_string(), hard.to_string()),
            "{name}: {out}"
        );
    }
}

#[test]
fn selinux_labels_are_accepted_on_a_host_without_selinux() {
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        eprintln!("SKIPPED: SELinux is enabled on this host; the labels would be applied");
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0:c1,c2");
    b.config["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0:c1,c2");
    b.args(&["echo", "labelled"]);
    assert_eq!(rt.output_of(&b, &unique_id("selinux")).trim(), "labelled");
}

#[test]
fn hooks_read_the_state_runtime_tools_expects() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let out = tempfile::tempdir().unwrap();
    let hook = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("cat > {}/{name}", out.path().display())]})
    };
    b.config["annotations"] = json!({"org.opencontainers.runtime-tools": "hook stdin test"});
    b.config["hooks"] = json!({"prestart": [hook("prestart")], "poststart": [hook("poststart")],
                               "poststop": [hook("poststop")]});
    b.args(&["true"]);
    let id = unique_id("hookstate");
    let g = rt.create(&b, &id);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["start", &id]);
    wait_for("the container stopped", 5000, || {
        rt.status(&id) == "stopped"
    });
    drop(g);
    let bundle = std::fs::canonicalize(b.path()).unwrap();
    for (name, status) in [
        ("prestart", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join(name)).unwrap()).unwrap();
        assert_eq!(st["id"], id.as_str(), "{name}: {st}");
        assert_eq!(st["status"], status, "{name}: {st}");
        assert_eq!(st["bundle"], bundle.to_str().unwrap(), "{name}: {st}");
        assert_eq!(
            st["annotations"],
            json!({"org.opencontainers.runtime-tools": "hook stdin test"}),
            "{name}: {st}"
        );
        if name != "poststop" {
            assert_eq!(st["pid"].as_i64(), Some(pid), "{name}: {st}");
        }
    }
}

/// The mount points below `dir` in this (the test's, the host's) mount namespace.
fn mounts_below(dir: &std::path::Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| std::path::Path::new(p).starts_with(&dir))
        .collect()
}

#[test]
fn without_a_mount_namespace_the_container_shares_the_callers_and_leaves_no_mounts() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "mount");
    b.sh("readlink /proc/self/ns/mnt; ls /; cat /proc/self/mountinfo | wc -l");
    let rootfs = b.rootfs();
    let id = unique_id("nomntns");
    let out = rt.output_of(&b, &id);
    let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], own.to_str().unwrap(), "{out}");
    // Jailed in its rootfs all the same.
    assert!(lines.contains(&"bin") && !lines.contains(&"usr"), "{out}");
    // What was mounted for it in this namespace went with it.
    assert_eq!(mounts_below(&rootfs), Vec::<String>::new());
    assert_no_leaks(&rt, &id, Some(&b));

    // A process exec'd into it is jailed the same way.
    b.args(&["sleep", "1000"]);
    let id = unique_id("nomntns-exec");
    let g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    assert!(
        !mounts_below(&rootfs).is_empty(),
        "its mounts live in our table"
    );
    let ls = rt.ok(&["exec", &id, "ls", "/"]);
    assert!(
        ls.lines().any(|l| l == "bin") && !ls.lines().any(|l| l == "usr"),
        "{ls}"
    );
    drop(g);
    assert_eq!(mounts_below(&rootfs), Vec::<String>::new());

    // A mount that was below the rootfs before the container stays after it.
    let pre = rootfs.join("tmp");
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "berth-test-premounted"])
        .arg(&pre)
        .status()
        .unwrap()
        .success());
    b.args(&["true"]);
    rt.output_of(&b, &unique_id("nomntns-kept"));
    let left = mounts_below(&rootfs);
    let _ = Command::new("umount").arg(&pre).status();
    assert_eq!(
        left,
        vec![pre.to_str().unwrap().to_string()],
        "only the earlier mount is left"
    );

    // chroot alone does not hold a process with CAP_SYS_CHROOT or CAP_SYS_ADMIN.
    let caps = b.config["process"]["capabilities"].clone();
    b.config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_CHROOT"));
    b.write();
    let err = rt.fail(&[
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &unique_id("nomntns-chroot"),
    ]);
    assert!(err.contains("CAP_SYS_CHROOT escapes"), "{err}");
    b.config["process"]["capabilities"] = caps;

    // A read-only root needs a namespace of its own to remount in.
    b.config["root"]["readonly"] = json!(true);
    b.write();
    let err = rt.fail(&[
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &unique_id("nomntns-ro"),
    ]);
    assert!(
        err.contains("root.readonly needs a mount namespace"),
        "{err}"
    );
    assert_eq!(mounts_below(&rootfs), Vec::<String>::new());
}

#[test]
fn a_mount_namespace_joined_by_path_is_seen_as_it_is() {
    let rt = Runtime::new();
    let mut a = Bundle::busybox();
    std::fs::write(a.rootfs().join("marker"), "in a's root\n").unwrap();
    a.args(&["sleep", "1000"]);
    let a_id = unique_id("mntns-owner");
    let _ga = rt.create(&a, &a_id);
    rt.ok(&["start", &a_id]);
    let pid = rt.state(&a_id)["pid"].as_i64().unwrap();

    let mut b = Bundle::busybox();
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "mount");
    ns.push(json!({"type": "mount", "path": format!("/proc/{pid}/ns/mnt")}));
    b.args(&["cat", "/marker"]);
    let b_id = unique_id("mntns-joiner");
    assert_eq!(rt.output_of(&b, &b_id), "in a's root\n");
    // Nothing was mounted for it, here or in a's namespace.
    assert_eq!(mounts_below(&b.rootfs()), Vec::<String>::new());
    assert_no_leaks(&rt, &b_id, Some(&b));
}
