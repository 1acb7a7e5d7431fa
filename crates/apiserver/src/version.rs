//! The Kubernetes version berth's API serves, as /version answers it.

use serde_json::json;

/// The Kubernetes version the API serves.
pub const VERSION: &str = "v1.32.0+berth";

/// /version.
pub fn version_info() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": VERSION,
        "gitCommit": "berth",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}
