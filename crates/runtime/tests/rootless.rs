//! berth-runtime without root, as a real unprivileged user the test makes: the
//! rootless shape of `spec --rootless` (a user namespace mapping the user's own id),
//! subordinate ids through newuidmap and newgidmap, a clear message for a user without
//! them, limits without a cgroup as a warning, and podman's rootless mode driving
//! berth-runtime as its OCI runtime.

mod common;
#[path = "support/user.rs"]
mod support_user;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::json;
use support_user::chown_r;

/// The test's user, with its own copy of berth-runtime.
struct User {
    user: support_user::TestUser,
}

impl std::ops::Deref for User {
    type Target = support_user::TestUser;
    fn deref(&self) -> &support_user::TestUser {
        &self.user
    }
}

impl User {
    /// A new user; with `subids`, subordinate uids and gids 200000-265535.
    fn new(subids: bool) -> User {
        let user = support_user::TestUser::new(subids);
        user.copy_binary(Path::new(bin()), "berth-runtime");
        User { user }
    }

    /// The user's copy of berth-runtime.
    fn runtime(&self) -> PathBuf {
        self.home.path().join("berth-runtime")
    }

    /// berth-runtime run of `bundle` as this user (default state root).
    fn run(&self, bundle: &Path, id: &str, extra: &[&str]) -> Output {
        let mut c = self.cmd(self.runtime());
        c.args(extra).args(["run", "--bundle"]).arg(bundle).arg(id);
        c.output().unwrap()
    }
}

/// A busybox bundle owned by `user`, with the config `spec --rootless` writes for it
/// and `script` as the process.
fn rootless_bundle(user: &User, script: &str) -> Bundle {
    let mut b = Bundle::busybox();
    chown_r(b.path(), user.uid, user.gid);
    std::fs::remove_file(b.path().join("config.json")).unwrap();
    let out = user
        .cmd(user.runtime())
        .args(["spec", "--rootless", "--bundle"])
        .arg(b.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "spec --rootless: {out:?}");
    b.config =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
    b.config["process"]["terminal"] = json!(false);
    b.config["root"]["readonly"] = json!(false);
    b.sh(script);
    b.write();
    chown_r(b.path(), user.uid, user.gid);
    b
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_user_runs_the_rootless_spec_as_root_of_its_own_namespace() {
    let user = User::new(false);
    let b = rootless_bundle(&user, "id -u; cat /proc/self/uid_map; echo made > /tmp/f");
    let id = unique_id("rl");
    let o = user.run(b.path(), &id, &[]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "{out}");
    // What root in the container wrote belongs to the user on the host.
    let meta = std::fs::metadata(b.rootfs().join("tmp/f")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), user.uid);
    // State under the user's XDG_RUNTIME_DIR, gone after the run; no cgroup made.
    assert!(!user.runtime_dir().join("berth-runtime").join(&id).exists());
    assert!(cgroup_dirs_named(&id).is_empty());
}

#[test]
fn subordinate_ids_are_mapped_through_newuidmap() {
    let user = User::new(true);
    let mut b = rootless_bundle(
        &user,
        "cat /proc/self/uid_map /proc/self/gid_map; touch /tmp/g; chown 1000:1000 /tmp/g",
    );
    let maps = json!([{"containerID": 0, "hostID": user.uid, "size": 1},
                      {"containerID": 1, "hostID": 200000, "size": 65536}]);
    let gmaps = json!([{"containerID": 0, "hostID": user.gid, "size": 1},
                       {"containerID": 1, "hostID": 200000, "size": 65536}]);
    b.config["linux"]["uidMappings"] = maps;
    b.config["linux"]["gidMappings"] = gmaps;
    let caps = json!(["CAP_CHOWN", "CAP_KILL"]);
    b.config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    b.write();
    let id = unique_id("rlsub");
    let o = user.run(b.path(), &id, &[]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("1     200000      65536"), "{o:?}");
    // Container uid 1000 is host uid 200999.
    let meta = std::fs::metadata(b.rootfs().join("tmp/g")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 200999);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 200999);

    // A user without subordinate ids is told what to add.
    let other = User::new(false);
    let mut b = rootless_bundle(&other, "true");
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": other.uid, "size": 1},
                                               {"containerID": 1, "hostID": 200000, "size": 65536}]);
    b.write();
    let o = other.run(b.path(), &unique_id("rlnosub"), &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    assert!(e.contains("newuidmap") && e.contains("/etc/subuid"), "{e}");
}

#[test]
fn limits_without_a_delegated_cgroup_are_a_warning() {
    let user = User::new(false);
    let mut b = rootless_bundle(&user, "echo ran");
    b.config["linux"]["resources"] = json!({"memory": {"limit": 67108864}});
    b.write();
    let log = user.home.path().join("runtime.log");
    let o = user.run(
        b.path(),
        &unique_id("rllim"),
        &["--log", log.to_str().unwrap()],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "ran\n");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("rootless") && text.contains("not applied"),
        "{text}"
    );
}

#[test]
fn podman_rootless_runs_its_containers_with_berth_runtime() {
    let user = User::new(true);
    let tar = rootfs_tar(user.home.path());
    chown_r(user.home.path(), user.uid, user.gid);
    // podman keeps the user's storage under $HOME; this host's cgroups are v1, which
    // rootless podman uses without limits (cgroupfs, no delegation).
    let podman = |args: &[&str]| -> Output {
        let mut c = user.cmd("podman");
        c.args(["--cgroup-manager=cgroupfs", "--runtime"])
            .arg(user.runtime())
            .args(args);
        c.output().expect("podman is installed")
    };
    let o = podman(&["import", tar.to_str().unwrap(), "localhost/bb:1"]);
    assert!(o.status.success(), "{o:?}");
    let o = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/bb:1",
        "sh",
        "-c",
        "echo in-container; cat /proc/self/uid_map",
    ]);
    let out = stdout(&o);
    // podman maps the user's own id to 0 and its subordinate ids above.
    assert!(o.status.success(), "{o:?}");
    assert!(out.starts_with("in-container\n"), "{out}");
    assert!(
        out.contains(&format!("0       {}          1", user.uid)),
        "{out}"
    );
    assert!(out.contains("1     200000      65536"), "{out}");
    // With its default rootless network (slirp4netns), detached, exec'd into, stopped.
    let o = podman(&[
        "run",
        "-d",
        "--name",
        "rl",
        "localhost/bb:1",
        "sleep",
        "100",
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = podman(&["exec", "rl", "sh", "-c", "echo from-exec"]);
    assert_eq!(stdout(&o), "from-exec\n", "{o:?}");
    let o = podman(&["rm", "-f", "-t", "0", "rl"]);
    assert!(o.status.success(), "{o:?}");
    // podman's pause process holds the user's namespace: it goes with the user.
    let pause = user.runtime_dir().join("libpod/tmp/pause.pid");
    if let Ok(pid) = std::fs::read_to_string(&pause) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}
