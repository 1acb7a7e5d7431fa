//! The Python kubernetes client (from PyPI, in a virtualenv kept under target/)
//! against berth's API server.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// A virtualenv with the `kubernetes` package, made once and reused.
fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("py-kubernetes");
    let py = dir.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let lock = std::fs::File::create(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("py-kubernetes.lock"),
        )
        .unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let ok = Command::new(&py)
            .args(["-c", "import kubernetes"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let s = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&dir)
                .status()
                .expect("python3 (apt-get install python3-venv)");
            assert!(s.success(), "python3 -m venv failed");
            let o = Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "kubernetes"])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "pip install kubernetes: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    py
}

#[test]
fn python_client_lists_creates_patches_watches_deletes() {
    let s = common::Server::start();
    let py = venv();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/client.py");
    let o = Command::new(py)
        .arg(script)
        .env("KUBECONFIG", &s.kubeconfig)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
}
