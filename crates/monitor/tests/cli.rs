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
    assert!(err.contains("usage: berth-monitor ROOT ID"), "{err}");
}

#[test]
fn a_container_without_a_record_is_reported_to_the_cli() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("containers/c1")).unwrap();
    let o = monitor()
        .arg(root.path())
        .arg("c1")
        .env("BERTH_RUNTIME", "/nonexistent/berth-runtime")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out, "error container c1 has no record\n");
}
