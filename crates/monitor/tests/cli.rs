//! The berth-monitor binary as the engine starts it, on inputs the engine never sends.
//! (This integration test also makes `cargo test --workspace` build the binary that
//! berth's own tests start.)

use std::process::Command;

fn monitor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth-monitor"))
}

#[test]
fn without_arguments_it_prints_its_usage() {
    let o = monitor().output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("usage: berth-monitor DIR"), "{err}");
}

#[test]
fn a_container_without_instructions_is_reported_to_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let o = monitor()
        .arg(dir.path())
        .env("BERTH_RUNTIME", "/nonexistent/berth-runtime")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out,
        format!("error {} has no supervise.json\n", dir.path().display())
    );
}
