//! A cgroup v2-only host, booted in a VM: Debian's kernel (linux-image-cloud-amd64) with
//! `cgroup_no_v1=all` and an initramfs holding berth-runtime, busybox and a bundle. This
//! host's own layout is hybrid, so this is where the cgroup2 code paths run end to end:
//! controllers enabled down the tree, memory/cpu/pids/cpuset limits, the eBPF device
//! filter, freezing, cgroup.kill, v2 stats and an OOM kill. The root is an initramfs,
//! which also exercises the MS_MOVE fallback for hosts where pivot_root cannot work.

mod common;
#[path = "support/vm.rs"]
mod vm;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run /tmp
R="berth-runtime --root /run/berth"
echo "== mode $(grep -c ' /sys/fs/cgroup cgroup2 ' /proc/mounts) cgroup2, $(grep -c ' cgroup ' /proc/mounts) cgroup v1, root $(stat -f -c %T /)"
$R run --bundle /limits limits > /tmp/out 2>&1; echo "== limits exit=$?"; cat /tmp/out
$R run --detach --bundle /sleeper sleeper; echo "== detached exit=$?"
$R exec sleeper sh -c 'echo exec-ok'
$R pause sleeper; echo "== paused $($R state sleeper | grep -o '"status": "[a-z]*"') $(grep frozen /sys/fs/cgroup/sleeper/cgroup.events)"
$R resume sleeper; echo "== resumed $($R state sleeper | grep -o '"status": "[a-z]*"')"
$R events --stats sleeper | tr -d '\n' | sed 's/.*"pids":{\([^}]*\)}.*/== pids \1\n/'
$R kill --all sleeper KILL; sleep 0.3; echo "== killed $($R state sleeper | grep -o '"status": "[a-z]*"')"
$R delete sleeper; echo "== deleted exit=$? left=$(ls /sys/fs/cgroup | grep -c sleeper)"
$R run --bundle /hog hog > /tmp/hog 2>&1; echo "== hog exit=$?"; cat /tmp/hog
# A subtree delegated to user 1000, as systemd delegates user@1000.service: the user's
# own, with the user's shell in a leaf of it; its rootless container gets its limits there.
echo 'user:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd
# Above it, root's user-1000.slice enables fewer controllers than the root has, and
# only root may enable more there.
U=/sys/fs/cgroup/slice/u1000
mkdir -p $U/session /tmp/rl
echo '+memory +pids' > /sys/fs/cgroup/slice/cgroup.subtree_control
echo '+memory +pids' > $U/cgroup.subtree_control
chown -R 1000:1000 $U /rootless /tmp/rl
echo $$ > $U/session/cgroup.procs
su -s /bin/sh -c 'berth-runtime --root /tmp/rl run --bundle /rootless rl' user > /tmp/rlout 2>&1; echo "== rootless exit=$?"; cat /tmp/rlout
echo "== rootless left=$(ls $U/ctr | grep -c rl)"
echo "== done"
poweroff -f
"#;

#[test]
fn cgroup2_only_host_in_a_vm() {
    let vm = vm::Initramfs::new();
    let root = vm.root.clone();
    vm::copy_with_libs(Path::new(bin()), &root, "/usr/bin/berth-runtime");
    vm.init(INIT);

    // Three bundles, sharing one busybox rootfs image each (copied).
    let mut limits = Bundle::busybox();
    limits.config["linux"]["resources"] = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"limit": 64 << 20, "swap": 64 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 20}
    });
    for set in ["bounding", "effective", "permitted"] {
        limits.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
    }
    limits.sh(
        "cat /proc/self/cgroup; cd /sys/fs/cgroup; for f in memory.max memory.swap.max cpu.max cpu.weight pids.max cpuset.cpus.effective; do echo \"$f=$(cat $f)\"; done; \
         mknod /tmp/kmsg c 1 11 && (head -c1 /tmp/kmsg >/dev/null 2>&1 && echo kmsg-open || echo kmsg-denied); \
         head -c1 /dev/urandom >/dev/null && echo urandom-ok",
    );
    let mut sleeper = Bundle::busybox();
    sleeper.sh("sleep 1000 & sleep 1000");
    let mut hog = Bundle::busybox();
    hog.config["linux"]["resources"] = json!({"memory": {"limit": 16 << 20, "swap": 16 << 20}});
    hog.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
    hog.sh("head -c 200000000 /dev/zero | tail > /dev/null; echo tail=$?; cat /sys/fs/cgroup/memory.events | grep oom_kill");
    // What `spec --rootless` writes, for user 1000, in a cgroup of its delegated subtree.
    let mut rootless = Bundle::busybox();
    std::fs::remove_file(rootless.path().join("config.json")).unwrap();
    let st = Command::new(bin())
        .args(["spec", "--rootless", "--bundle"])
        .arg(rootless.path())
        .status()
        .unwrap();
    assert!(st.success());
    rootless.config =
        serde_json::from_slice(&std::fs::read(rootless.path().join("config.json")).unwrap())
            .unwrap();
    for ids in ["uidMappings", "gidMappings"] {
        rootless.config["linux"][ids] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    }
    rootless.config["linux"]["cgroupsPath"] = json!("/slice/u1000/ctr/rl");
    // Without a cgroup namespace, /proc/self/cgroup names the cgroup from the root.
    rootless.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "cgroup");
    rootless.config["linux"]["resources"] =
        json!({"memory": {"limit": 32 << 20}, "pids": {"limit": 10}});
    rootless.config["process"]["terminal"] = json!(false);
    rootless.config["root"]["readonly"] = json!(false);
    rootless.sh(
        "cg=$(sed -n 's/^0:://p' /proc/self/cgroup); echo \"rl-cgroup=$cg\"; \
         d=/sys/fs/cgroup$cg; [ -f $d/memory.max ] || d=/sys/fs/cgroup; \
         echo \"rl-memory.max=$(cat $d/memory.max) rl-pids.max=$(cat $d/pids.max)\"",
    );
    for (name, b) in [
        ("limits", &limits),
        ("sleeper", &sleeper),
        ("hog", &hog),
        ("rootless", &rootless),
    ] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(b.path())
            .arg(root.join(name))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let text = vm.boot(512);
    let has = |s: &str| {
        assert!(
            text.contains(s),
            "missing {s:?} in the VM's output:\n{text}"
        )
    };
    has("== mode 1 cgroup2, 0 cgroup v1, root tmpfs");
    has("== limits exit=0");
    has("0::/\n");
    has("memory.max=67108864");
    has("memory.swap.max=0");
    has("cpu.max=50000 100000");
    has("cpu.weight=20");
    has("pids.max=20");
    has("cpuset.cpus.effective=0");
    has("kmsg-denied");
    has("urandom-ok");
    has("== detached exit=0");
    has("exec-ok");
    has("== paused \"status\": \"paused\" frozen 1");
    has("== resumed \"status\": \"running\"");
    has("== pids \"current\":2");
    has("== killed \"status\": \"stopped\"");
    has("== deleted exit=0 left=0");
    has("== hog exit=0");
    has("tail=137");
    assert!(
        text.lines()
            .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"),
        "the OOM killer struck:\n{text}"
    );
    has("== rootless exit=0");
    has("rl-cgroup=/slice/u1000/ctr/rl\n");
    has("rl-memory.max=33554432 rl-pids.max=10");
    has("== rootless left=0");
    has("== done");
}
