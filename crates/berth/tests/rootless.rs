//! `berth` as an unprivileged user, as `podman` runs rootless: a clear message for a
//! user without subordinate ids; for one with them, a store and containers of the
//! user's own (a user namespace of its subordinate ids, overlays in the session's
//! mount namespace), builds, published ports through pasta, exec, and nothing left
//! behind. Users are real ones the test makes (useradd), running copies of the binaries.

mod common;
#[path = "../../runtime/tests/support/user.rs"]
mod support_user;

use std::path::PathBuf;
use std::process::Output;

use common::*;
use support_user::TestUser;

/// A test user with copies of berth, berth-runtime and berth-monitor; at the end its
/// containers are removed and its session's pause process ended (by its pid).
struct Rootless {
    user: TestUser,
    berth: PathBuf,
}

impl Rootless {
    fn new(subids: bool) -> Rootless {
        let user = TestUser::new(subids);
        let berth = user.copy_binary(std::path::Path::new(bin()), "berth");
        user.copy_binary(&runtime_bin(), "berth-runtime");
        user.copy_binary(&monitor_bin(), "berth-monitor");
        Rootless { user, berth }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.user
            .cmd(&self.berth)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "berth {args:?} as {} failed ({}):\nstdout: {}\nstderr: {}",
            self.user.name,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The user's session directory.
    fn run_dir(&self) -> PathBuf {
        self.user.runtime_dir().join("berth")
    }

    /// The pause process's pid, if the session was started.
    fn pause_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.run_dir().join("pause.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// A file of the user's own (readable by it), holding `data`.
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.user.home.path().join(name);
        std::fs::write(&p, data).unwrap();
        std::os::unix::fs::chown(&p, Some(self.user.uid), Some(self.user.gid)).unwrap();
        p
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        if let Some(pid) = self.pause_pid() {
            let ids = self.run(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            for _ in 0..100 {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn a_user_without_subordinate_ids_is_told_what_to_add() {
    let r = Rootless::new(false);
    for args in [&["images"][..], &["run", "--rm", "x", "true"][..]] {
        let o = r.run(args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{o:?}");
        assert!(
            e.contains("/etc/subuid")
                && e.contains(&format!(
                    "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
                    r.user.name
                ))
                && !e.contains("os error"),
            "{args:?}: {e}"
        );
    }
    // Nothing was started or made for it.
    assert_eq!(r.pause_pid(), None);
    assert!(!r.user.home.path().join(".local/share/berth").exists());
}

#[test]
fn a_user_runs_builds_and_publishes_containers_of_its_own() {
    let r = Rootless::new(true);
    let tgz = r.file("busybox.tgz", &gzip(&busybox_tar()));
    r.ok(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        tgz.to_str().unwrap(),
        "localhost/bb:1",
    ]);
    // Root's state is not the user's to write: said before any permission error.
    let roots = tempfile::Builder::new()
        .prefix("berth-root-owned")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        roots.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = r
        .user
        .cmd(&r.berth)
        .arg("images")
        .env("BERTH_ROOT", roots.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        e.contains("is not yours to write") && !e.contains("os error"),
        "{e}"
    );
    // The store is the user's own, under its home.
    let store = r.user.home.path().join(".local/share/berth/image");
    assert!(store.is_dir(), "{}", store.display());
    assert!(r.ok(&["images"]).contains("localhost/bb"));

    // Root of the container is the user; the rest are its subordinate ids.
    let out = r.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/bb:1",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; echo x > /made; stat -c %u /made",
    ]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"], "{out}");
    assert_eq!(lines[1], ["0", &r.user.uid.to_string(), "1"], "{out}");
    assert_eq!(lines[2], ["1", "200000", "65536"], "{out}");
    assert_eq!(lines[3], ["0"], "{out}");

    // A build: a file of another user, a deleted file (a whiteout) and a replaced
    // directory (opaque), all in the user namespace.
    let ctx = r.user.home.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/bb:1\n\
         RUN mkdir -p /d && touch /d/old && echo owned > /f && chown 1000:1000 /f\n\
         RUN rm /etc/os-release && rm -rf /d && mkdir /d && touch /d/new\n",
    )
    .unwrap();
    support_user::chown_r(&ctx, r.user.uid, r.user.gid);
    r.ok(&["build", "-t", "localhost/built:1", ctx.to_str().unwrap()]);
    let out = r.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/built:1",
        "sh",
        "-c",
        "stat -c %u:%g /f; cat /f; ls /d; test -e /etc/os-release || echo whiteout",
    ]);
    assert_eq!(out, "1000:1000\nowned\nnew\nwhiteout\n");

    // A detached container with a published port, reached from the host through pasta.
    let port = free_port();
    let published = format!("127.0.0.1:{port}:80");
    let id = r.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &published,
        "localhost/bb:1",
        "sh",
        "-c",
        "mkdir -p /www; echo hello-rootless > /www/index.html; exec httpd -f -p 80 -h /www",
    ]);
    let id = id.trim().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut body = Vec::new();
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            body = http_get(&addr, "/");
            if !body.is_empty() {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(String::from_utf8_lossy(&body), "hello-rootless\n");
    assert_eq!(
        r.ok(&["exec", "web", "cat", "/www/index.html"]),
        "hello-rootless\n"
    );
    assert!(r.ok(&["ps"]).contains("web"));
    // A login without XDG_RUNTIME_DIR joins the store's session rather than making a
    // second one beside it: exec works, and no pause starts under /tmp.
    let o = r
        .user
        .cmd(&r.berth)
        .args(["exec", "web", "cat", "/www/index.html"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello-rootless\n",
        "{o:?}"
    );
    let tmp_session = std::path::PathBuf::from(format!("/tmp/berth-run-{}", r.user.uid));
    assert!(!tmp_session.join("pause.pid").exists());
    let _ = std::fs::remove_dir_all(&tmp_session);
    // Without a cgroup there are no stats, said as such.
    let o = r.run(&["stats", "--no-stream", "web"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("delegated to you"), "{e}");
    // Without a cgroup, top lists the container's pid namespace.
    let top = r.ok(&["top", "web"]);
    assert!(top.contains("httpd -f -p 80"), "{top}");
    let pasta_pid: i32 = std::fs::read_dir(r.user.home.path().join(".local/share/berth/sandboxes"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("pasta.pid")).ok())
        .find_map(|s| s.trim().parse().ok())
        .expect("the sandbox's pasta pid");
    // A limit the host cannot give without a delegated cgroup: said, not hidden.
    let limited = r.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-m",
        "64m",
        "localhost/bb:1",
        "true",
    ]);
    let warn = String::from_utf8_lossy(&limited.stderr);
    assert!(limited.status.success(), "{limited:?}");
    assert!(warn.contains("limit"), "{warn}");

    // The session outlives its pause process while a container holds it: a new pause
    // joins it, and the container is still the user's to exec into and remove.
    let first = r.pause_pid().expect("the session's pause process");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while std::path::Path::new(&format!("/proc/{first}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        r.ok(&["exec", "web", "cat", "/www/index.html"]),
        "hello-rootless\n"
    );
    let second = r.pause_pid().expect("a new pause process");
    assert_ne!(first, second);
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let monitor_ns = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.starts_with(
                    r.user
                        .home
                        .path()
                        .join("berth-monitor")
                        .to_str()
                        .unwrap()
                        .as_bytes(),
                )
            })
        })
        .map(ns)
        .expect("the container's monitor");
    assert_eq!(
        ns(second),
        monitor_ns,
        "the new pause is in the session's mount namespace"
    );

    r.ok(&["rm", "-f", "web"]);
    assert!(r.ok(&["ps", "-aq"]).trim().is_empty());
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pasta_pid}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pasta_pid}")).exists(),
        "pasta outlived the container"
    );
    assert!(std::net::TcpStream::connect(&addr).is_err());
    // Nothing of the container is mounted in the session any more, and nothing of the
    // session was ever mounted on the host.
    let pause = r.pause_pid().expect("the session's pause process");
    let session_mounts = std::fs::read_to_string(format!("/proc/{pause}/mounts")).unwrap();
    assert!(!session_mounts.contains(&id), "{session_mounts}");
    let host_mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !host_mounts.contains(r.user.home.path().to_str().unwrap()),
        "{host_mounts}"
    );
}
