//! config.json fields, each checked from inside the container against what the kernel
//! applied: namespaces, root filesystem, mounts, /dev, process settings.

mod common;

use common::*;
use serde_json::json;

fn ns_inode(pid: &str, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn namespaces_isolate_what_the_process_sees() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["hostname"] = json!("berth-box");
    b.config["domainname"] = json!("berth.test");
    b.write();
    b.sh("echo pid=$$; hostname; cat /proc/sys/kernel/domainname; ip -o link | wc -l; ls /proc | grep -c '^[0-9]'; \
          for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done");
    let out = rt.output_of(&b, &unique_id("ns"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "berth-box");
    assert_eq!(lines[2], "berth.test");
    assert_eq!(lines[3], "1", "only lo in a new network namespace: {out}");
    // Only the shell and the processes it runs are visible.
    assert!(lines[4].parse::<u32>().unwrap() <= 3, "{out}");
    for (i, n) in ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
        .iter()
        .enumerate()
    {
        assert_ne!(
            lines[5 + i],
            ns_inode("self", n),
            "{n} namespace must be new"
        );
    }
}

#[test]
fn cgroup_namespace_shows_the_container_cgroup_as_root() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("cat /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max; cat /sys/fs/cgroup/pids/cgroup.procs | wc -l");
    b.config["linux"]["resources"]["pids"] = json!({"limit": 42});
    b.write();
    let out = rt.output_of(&b, &unique_id("cgns"));
    for line in out.lines().take_while(|l| l.contains(':')) {
        assert!(
            line.ends_with(":/"),
            "cgroup namespace root must be the container's cgroup: {out}"
        );
    }
    assert!(
        out.contains("\n42\n"),
        "the pids hierarchy mounted in the container is its own: {out}"
    );
}

#[test]
fn joining_another_containers_namespaces_by_path() {
    let rt = Runtime::new();
    let mut infra = Bundle::busybox();
    infra.args(&["sleep", "1000"]);
    infra.config["hostname"] = json!("pod-host");
    infra.write();
    let infra_id = unique_id("infra");
    let _g = rt.create(&infra, &infra_id);
    rt.ok(&["start", &infra_id]);
    let pid = rt.state(&infra_id)["pid"].as_i64().unwrap().to_string();

    let mut member = Bundle::busybox();
    let ns = member.config["linux"]["namespaces"].as_array_mut().unwrap();
    for n in ns.iter_mut() {
        let t = n["type"].as_str().unwrap().to_string();
        let proc_name = match t.as_str() {
            "network" => "net",
            "ipc" => "ipc",
            "uts" => "uts",
            _ => continue,
        };
        n["path"] = json!(format!("/proc/{pid}/ns/{proc_name}"));
    }
    member.config.as_object_mut().unwrap().remove("hostname");
    member.write();
    member.sh("hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/uts; readlink /proc/self/ns/pid");
    let out = rt.output_of(&member, &unique_id("member"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pod-host");
    assert_eq!(lines[1], ns_inode(&pid, "net"));
    assert_eq!(lines[2], ns_inode(&pid, "uts"));
    assert_ne!(
        lines[3],
        ns_inode(&pid, "pid"),
        "the pid namespace was not shared"
    );
}

#[test]
fn user_namespace_with_mappings() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // Files created in the rootfs belong to the mapped root.
    let rootfs = b.rootfs();
    std::os::unix::fs::chown(&rootfs, Some(100000), Some(100000)).unwrap();
    std::os::unix::fs::chown(rootfs.join("tmp"), Some(100000), Some(100000)).unwrap();
    b.sh("cat /proc/self/uid_map; id -u; touch /tmp/owned; ls /dev/null >/dev/null && echo devok");
    let out = rt.output_of(&b, &unique_id("userns"));
    let map: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    assert!(out.contains("\n0\n"), "{out}");
    assert!(out.contains("devok"), "{out}");
    let meta = std::fs::metadata(rootfs.join("tmp/owned")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 100000);
    // exec joins the user namespace first, then the others, and is root inside it.
    b.args(&["sleep", "1000"]);
    let id = unique_id("userns");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let out = rt.ok(&["exec", &id, "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    assert!(out.starts_with("0\n") && out.contains("100000"), "{out}");
}

#[test]
fn time_namespace_offsets() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 86400 * 400, "nanosecs": 0}});
    b.sh("cut -d. -f1 /proc/uptime");
    let out = rt.output_of(&b, &unique_id("timens"));
    let up: u64 = out.trim().parse().unwrap();
    assert!(
        up >= 86400 * 400,
        "uptime must include the boottime offset: {up}"
    );
}

#[test]
fn mounts_binds_tmpfs_and_recursive_read_only() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from-host").unwrap();
    std::fs::create_dir(host.path().join("sub")).unwrap();
    // A submount under the bind source, to tell ro from rro apart.
    let sub = host.path().join("sub");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", sub.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let unmount = Unmount(sub.clone());
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/data/ro", "type": "bind", "source": host.path(), "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/data/rro", "type": "bind", "source": host.path(), "options": ["rbind", "rro"]}));
    mounts.push(json!({"destination": "/data/rw", "type": "bind", "source": host.path(), "options": ["bind", "rw", "nosuid", "noexec"]}));
    mounts.push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=700"]}));
    mounts.push(json!({"destination": "/etc/hostfile", "type": "bind", "source": host.path().join("f"), "options": ["bind", "ro"]}));
    b.sh("cat /data/ro/f; echo; \
          touch /data/ro/x 2>/dev/null && echo ro-writable || echo ro-readonly; \
          touch /data/ro/sub/x 2>/dev/null && echo ro-sub-writable || echo ro-sub-readonly; \
          touch /data/rro/sub/y 2>/dev/null && echo rro-sub-writable || echo rro-sub-readonly; \
          touch /data/rw/z && echo rw-ok; \
          stat -c %a /scratch; grep ' /scratch ' /proc/mounts; cat /etc/hostfile; echo; \
          grep ' /data/rw ' /proc/mounts");
    let out = rt.output_of(&b, &unique_id("mounts"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from-host");
    assert_eq!(lines[1], "ro-readonly");
    assert_eq!(
        lines[2], "ro-sub-writable",
        "ro applies to the top mount only"
    );
    assert_eq!(lines[3], "rro-sub-readonly", "rro applies to submounts too");
    assert_eq!(lines[4], "rw-ok");
    assert_eq!(lines[5], "700");
    assert!(lines[6].contains("size=1024k"), "{out}");
    assert_eq!(lines[7], "from-host");
    assert!(
        lines[8].contains("nosuid") && lines[8].contains("noexec"),
        "{out}"
    );
    assert!(host.path().join("z").exists());
    drop(unmount);
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn readonly_root_masked_and_readonly_paths() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["root"]["readonly"] = json!(true);
    b.sh("touch /x 2>/dev/null && echo root-writable || echo root-readonly; \
          cat /proc/keys 2>&1 | wc -c; ls /sys/firmware | wc -l; \
          echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable || echo sys-readonly; \
          touch /dev/shm/ok && echo shm-writable");
    let out = rt.output_of(&b, &unique_id("ro"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "root-readonly");
    assert_eq!(lines[1], "0", "/proc/keys is masked with /dev/null");
    assert_eq!(lines[2], "0", "/sys/firmware is masked with an empty tmpfs");
    assert_eq!(lines[3], "sys-readonly");
    assert_eq!(lines[4], "shm-writable");
}

#[test]
fn dev_has_default_devices_and_linux_devices() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["devices"] = json!([
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o620, "uid": 0, "gid": 0},
        {"path": "/dev/myfifo", "type": "p", "major": 0, "minor": 0}
    ]);
    b.sh("for d in null zero full random urandom tty ptmx fuse; do stat -c '%n %t:%T %F' /dev/$d; done; \
          readlink /dev/ptmx; readlink /dev/fd; readlink /dev/stdin; stat -c '%a %F' /dev/fuse /dev/myfifo; \
          head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok");
    let out = rt.output_of(&b, &unique_id("dev"));
    assert!(
        out.contains("/dev/null 1:3 character special file"),
        "{out}"
    );
    assert!(
        out.contains("/dev/urandom 1:9 character special file"),
        "{out}"
    );
    assert!(
        out.contains("/dev/fuse a:e5 character special file"),
        "{out}"
    );
    assert!(
        out.contains("pts/ptmx\n/proc/self/fd\n/proc/self/fd/0"),
        "{out}"
    );
    assert!(out.contains("620 character special file"), "{out}");
    assert!(out.contains("fifo"), "{out}");
    assert!(out.contains("\n4\nnull-ok"), "{out}");
}

#[test]
fn device_cgroup_denies_what_is_not_allowed() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 9, "access": "r"}
    ]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
    }
    b.write();
    // /dev/urandom is in the default allow list, which runc appends after the spec's
    // rules; a host device that is not allowed cannot be created or opened.
    b.sh("mknod /tmp/sda b 8 0 2>&1 && (head -c1 /tmp/sda >/dev/null 2>&1 && echo read-ok || echo read-denied); \
          mknod /tmp/kmsg c 1 11 && (cat /tmp/kmsg >/dev/null 2>&1 && echo kmsg-ok || echo kmsg-denied)");
    let out = rt.output_of(&b, &unique_id("devcg"));
    assert!(out.contains("read-denied"), "{out}");
    assert!(out.contains("kmsg-denied"), "{out}");
}

#[test]
fn process_settings() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let p = &mut b.config["process"];
    p["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [2000, 2001], "umask": 0o077});
    p["cwd"] = json!("/tmp");
    p["env"] = json!(["PATH=/bin", "GREETING=hi there"]);
    p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512}, {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]);
    p["noNewPrivileges"] = json!(true);
    p["oomScoreAdj"] = json!(500);
    p["capabilities"] = json!({
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "effective": ["CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]
    });
    b.write();
    b.sh("id -u; id -g; id -G; pwd; echo $GREETING; ulimit -n; ulimit -H -n; umask; \
          grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status; cat /proc/self/oom_score_adj; \
          touch /tmp/u && stat -c %a /tmp/u");
    std::fs::set_permissions(
        b.rootfs().join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let out = rt.output_of(&b, &unique_id("proc"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..8],
        [
            "1000",
            "1001",
            "1001 2000 2001",
            "/tmp",
            "hi there",
            "256",
            "512",
            "0077"
        ],
        "{out}"
    );
    let bit = |c: u32| format!("{:016x}", 1u64 << c);
    assert_eq!(lines[8], format!("CapInh:\t{}", bit(10)));
    assert_eq!(lines[9], format!("CapPrm:\t{}", bit(10)));
    assert_eq!(lines[10], format!("CapEff:\t{}", bit(10)));
    assert_eq!(
        lines[11],
        format!("CapBnd:\t{:016x}", (1u64 << 10) | (1u64 << 5))
    );
    assert_eq!(lines[12], format!("CapAmb:\t{}", bit(10)));
    assert_eq!(lines[13], "NoNewPrivs:\t1");
    assert_eq!(lines[14], "500");
    assert_eq!(lines[15], "600", "umask 077 applies");
}

#[test]
fn sysctl_personality_and_io_priority() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"});
    b.config["linux"]["personality"] = json!({"domain": "LINUX32"});
    b.config["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    b.write();
    b.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax; uname -m");
    let out = rt.output_of(&b, &unique_id("sysctl"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1");
    assert_eq!(lines[1], "123456789");
    assert_eq!(lines[2], "i686", "LINUX32 personality");
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax")
            .unwrap()
            .trim(),
        "123456789",
        "the host's IPC namespace is untouched"
    );
}

#[test]
fn seccomp_filters_syscalls() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            // (persona & 0xff) == PER_LINUX32, as the MASKED_EQ rules of Docker's profile
            // are written: value is the mask, valueTwo the expected result.
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
    b.config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_ADMIN"));
    b.config["process"]["capabilities"]["effective"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_ADMIN"));
    b.config["process"]["capabilities"]["permitted"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_ADMIN"));
    b.write();
    b.sh("mkdir /tmp/d 2>&1; hostname foo 2>&1; grep Seccomp: /proc/self/status; touch /tmp/ok && echo touch-ok; \
          linux32 true 2>/dev/null && echo linux32-allowed || echo linux32-denied; linux64 true && echo linux64-ok");
    let out = rt.output_of(&b, &unique_id("seccomp"));
    assert!(
        out.contains("Operation not permitted"),
        "mkdir gets EPERM: {out}"
    );
    assert!(
        out.contains("Function not implemented") || out.contains("not implemented"),
        "errnoRet 38 is ENOSYS: {out}"
    );
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("touch-ok"), "{out}");
    assert!(
        out.contains("linux32-denied") && out.contains("linux64-ok"),
        "{out}"
    );
    // Also without no_new_privs (the filter is then loaded while the runtime still has
    // CAP_SYS_ADMIN).
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.write();
    let out = rt.output_of(&b, &unique_id("seccomp2"));
    assert!(
        out.contains("Operation not permitted") && out.contains("Seccomp:\t2"),
        "{out}"
    );
}

#[test]
fn no_pivot_uses_move_and_chroot() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("ls / | tr '\\n' ' '; cat /proc/self/mountinfo | wc -l");
    let id = unique_id("nopivot");
    let out = rt.ok(&[
        "run",
        "--no-pivot",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(out.contains("bin") && out.contains("proc"), "{out}");
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn rootfs_propagation() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("awk '$5 == \"/\" {print $7}' /proc/self/mountinfo");
    // Default: at most a slave of the host (master:N when the host's / is shared), so
    // nothing flows out.
    let out = rt.output_of(&b, &unique_id("prop"));
    assert!(!out.contains("shared:"), "{out}");
    b.config["linux"]["rootfsPropagation"] = json!("rprivate");
    b.write();
    let out = rt.output_of(&b, &unique_id("prop"));
    assert!(
        !out.contains("master:") && !out.contains("shared:"),
        "{out}"
    );
    b.config["linux"]["rootfsPropagation"] = json!("rshared");
    b.write();
    let out = rt.output_of(&b, &unique_id("prop"));
    assert!(out.contains("shared:"), "{out}");
    b.config["linux"]["rootfsPropagation"] = json!("sideways");
    b.write();
    let (code, _, err) = rt.run_container(&b, &unique_id("prop"));
    assert_ne!(code, 0);
    assert!(
        err.contains("rootfsPropagation") && err.contains("sideways"),
        "{err}"
    );
}
