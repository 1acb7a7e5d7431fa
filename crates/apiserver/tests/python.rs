//! The Python kubernetes client (from PyPI, in a virtualenv kept under target/)
//! against berth's API server.

mod common;

#[test]
fn python_client_lists_creates_patches_watches_deletes() {
    let s = common::Server::start();
    common::pyvenv::run(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/client.py"),
        &s.kubeconfig,
    );
}
