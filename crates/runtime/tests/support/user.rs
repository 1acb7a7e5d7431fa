//! A real unprivileged user made for one test (removed with its subordinate ids after),
//! with a home and an XDG_RUNTIME_DIR of its own — for the tests of rootless
//! berth-runtime and rootless berth.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The user.
pub struct TestUser {
    /// Its name (`brt…`).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home (also holds its runtime directory and copies of binaries).
    pub home: tempfile::TempDir,
}

impl TestUser {
    /// A new user; with `subids`, subordinate uids and gids 200000-265535.
    pub fn new(subids: bool) -> TestUser {
        static N: AtomicU32 = AtomicU32::new(0);
        // The clock too: a user left by a killed run of a process with this pid.
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_micros());
        let name = format!(
            "brt{}x{}t{micros}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let home = tempfile::Builder::new()
            .prefix("berth-user")
            .tempdir()
            .unwrap();
        // useradd takes a lock on /etc/passwd: tests running at once retry.
        let mut tries = 0;
        loop {
            // No subordinate ids unless the test asks (useradd would allocate some).
            let out = Command::new("useradd")
                .args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"])
                .args(["-M", "-s", "/bin/sh", "-d"])
                .arg(home.path())
                .arg(&name)
                .output()
                .expect("useradd (passwd package) is installed");
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(tries < 50, "useradd {name}: {out:?}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let id = |flag: &str| -> u32 {
            String::from_utf8_lossy(
                &Command::new("id")
                    .arg(flag)
                    .arg(&name)
                    .output()
                    .unwrap()
                    .stdout,
            )
            .trim()
            .parse()
            .unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let u = TestUser {
            name,
            uid,
            gid,
            home,
        };
        if subids {
            let mut tries = 0;
            while !Command::new("usermod")
                .args([
                    "--add-subuids",
                    "200000-265535",
                    "--add-subgids",
                    "200000-265535",
                ])
                .arg(&u.name)
                .status()
                .unwrap()
                .success()
            {
                tries += 1;
                assert!(tries < 50, "usermod --add-subuids {}", u.name);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        std::fs::create_dir_all(u.runtime_dir()).unwrap();
        chown_r(u.home.path(), u.uid, u.gid);
        std::fs::set_permissions(
            u.runtime_dir(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        u
    }

    /// Copies `binary` into the user's home as `name` (the binary under test may sit
    /// where the user cannot reach: a checkout in /root); its path.
    pub fn copy_binary(&self, binary: &Path, name: &str) -> PathBuf {
        let to = self.home.path().join(name);
        std::fs::copy(binary, &to).unwrap();
        std::os::unix::fs::chown(&to, Some(self.uid), Some(self.gid)).unwrap();
        to
    }

    /// Its XDG_RUNTIME_DIR.
    pub fn runtime_dir(&self) -> PathBuf {
        self.home.path().join("run")
    }

    /// A command run as this user (no supplementary groups, its own environment).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.home.path())
            .env("USER", &self.name)
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .current_dir(self.home.path());
        c
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for tries in 0..50 {
            let ok = Command::new("userdel")
                .arg(&self.name)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if tries == 49 {
                eprintln!("userdel {} failed 50 times: the user is left", self.name);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// `chown -R uid:gid p`.
pub fn chown_r(p: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}
