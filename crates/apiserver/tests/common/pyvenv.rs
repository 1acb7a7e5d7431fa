//! A virtualenv with the Python kubernetes client from PyPI, kept under target/ and
//! shared by the API server's and the agent's tests (this file is included by both).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A virtualenv with the `kubernetes` package, made once and reused.
pub fn venv() -> PathBuf {
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

/// Runs a Python script of the tests with KUBECONFIG set; it must succeed and print
/// "ok" last.
pub fn run(script: &str, kubeconfig: &Path) {
    let o = Command::new(venv())
        .arg(script)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.trim_end().ends_with("ok"),
        "{script}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
