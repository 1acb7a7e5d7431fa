//! Rootless berth where the host delegates a cgroup v2 subtree to the user, as systemd
//! does with user@UID.service: booted in a cgroup v2-only VM (this host is hybrid), an
//! unprivileged user's container gets its limits in the user's subtree — no warning —
//! and nothing of it is left there after `rm`.

mod common;
#[path = "../../runtime/tests/support/vm.rs"]
mod vm;

use std::path::Path;
use std::process::Command;

use common::*;

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
chmod 1777 /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Root's slice enables memory and pids; the user's subtree below it is the user's own,
# its shell in a leaf, as systemd leaves user@1000.service.
C=/sys/fs/cgroup/slice
mkdir -p $C/u1000/session
echo '+memory +pids' > /sys/fs/cgroup/cgroup.subtree_control
echo '+memory +pids' > $C/cgroup.subtree_control
echo '+memory +pids' > $C/u1000/cgroup.subtree_control
chown -R 1000:1000 $C/u1000 /home/user
echo $$ > $C/u1000/session/cgroup.procs
as_user() { su -s /bin/sh -c "cd; $1" user > /tmp/out 2>&1; echo "== $2 exit=$?"; cat /tmp/out; }
as_user 'berth import bb.tgz localhost/bb:1' import
as_user 'berth run -d --name lim --network none -m 32m --pids-limit 10 localhost/bb:1 sleep 1000' run
for d in $C/u1000/berth/*/; do
  echo "== cgroup ${d#$C} memory.max=$(cat ${d}memory.max) pids.max=$(cat ${d}pids.max) procs=$(cat ${d}cgroup.procs | wc -l)"
done
as_user 'berth exec lim cat /sys/fs/cgroup/memory.max' exec
as_user 'berth rm -f lim' rm
echo "== left $(ls -d $C/u1000/berth/*/ 2>/dev/null | wc -l)"
echo "== done"
poweroff -f
"#;

/// Copies `binary` without its debug sections (a debug build's are most of it).
fn stripped(binary: &Path, root: &Path, dest: &str) {
    let tmp = root.join("stripped.tmp");
    let st = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&tmp)
        .status()
        .expect("objcopy (binutils)");
    assert!(st.success());
    vm::copy_with_libs(&tmp, root, dest);
    std::fs::remove_file(&tmp).unwrap();
}

#[test]
fn a_rootless_container_is_limited_in_the_users_delegated_cgroup() {
    let vm = vm::Initramfs::new();
    let root = &vm.root;
    stripped(Path::new(bin()), root, "/usr/bin/berth");
    stripped(&runtime_bin(), root, "/usr/bin/berth-runtime");
    stripped(&monitor_bin(), root, "/usr/bin/berth-monitor");
    for helper in ["/usr/bin/newuidmap", "/usr/bin/newgidmap"] {
        // Set-user-ID root, as installed (the initramfs keeps owner and mode).
        vm::copy_with_libs(Path::new(helper), root, helper);
    }
    let etc = root.join("etc");
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    for f in ["subuid", "subgid"] {
        std::fs::write(etc.join(f), "user:100000:65536\n").unwrap();
    }
    std::fs::copy("/etc/login.defs", etc.join("login.defs")).unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 10.0.2.3\n").unwrap();
    std::fs::create_dir_all(root.join("home/user")).unwrap();
    std::fs::write(root.join("home/user/bb.tgz"), gzip(&busybox_tar())).unwrap();
    vm.init(INIT);

    let text = vm.boot(1024);
    let has = |s: &str| {
        assert!(
            text.contains(s),
            "missing {s:?} in the VM's output:\n{text}"
        )
    };
    has("== import exit=0");
    has("== run exit=0");
    assert!(!text.contains("WARNING"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("== cgroup /u1000/berth/"))
        .unwrap_or_else(|| panic!("no container cgroup in the user's subtree:\n{text}"));
    assert!(
        line.ends_with(" memory.max=33554432 pids.max=10 procs=1"),
        "{line}\n{text}"
    );
    has("== exec exit=0\n33554432\n");
    has("== rm exit=0");
    has("== left 0");
    has("== done");
}
