//! The step cache: the image each step made, under a key of its parent image, its
//! instruction and what it copied, shared by the stages built at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The cache: key → image manifest digest, kept in ROOT/build-cache.json.
pub(super) struct Cache {
    path: PathBuf,
    map: Mutex<HashMap<String, String>>,
}

impl Cache {
    /// The cache of the state under `root`.
    pub(super) fn load(root: &Path) -> Cache {
        let path = root.join("build-cache.json");
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Cache {
            path,
            map: Mutex::new(map),
        }
    }

    /// The image a step made before.
    pub(super) fn get(&self, key: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Remembers what a step made, on disk at once.
    pub(super) fn put(&self, key: String, digest: String) {
        // Written under the lock: stages built at once never interleave their writes.
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(key, digest);
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, serde_json::to_vec(&*m).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}
