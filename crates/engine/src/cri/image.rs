//! Images as CRI v1's ImageService describes them.

use serde::{Deserialize, Serialize};

/// Registry credentials for a pull (CRI `AuthConfig`; a pod's imagePullSecrets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// `user:password` in base64, as docker's config.json keeps it (used when the
    /// two above are empty).
    pub auth: String,
    /// A bearer token for the registry.
    pub registry_token: String,
}

/// A stored image (CRI `Image`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image ID (config digest).
    pub id: String,
    /// Names pointing at it (`registry/repo:tag`).
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:...` names.
    pub repo_digests: Vec<String>,
    /// Its size in bytes (compressed layers).
    pub size: u64,
    /// The uid its config's `User` names, when numeric.
    pub uid: Option<i64>,
    /// Its config's `User` when it is a name.
    pub username: String,
}

/// Space used by the image store (CRI `FilesystemUsage`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemUsage {
    /// When read, ns since the epoch.
    pub timestamp: i64,
    /// The store's directory.
    pub mountpoint: String,
    /// Bytes used.
    pub used_bytes: u64,
    /// Inodes used.
    pub inodes_used: u64,
}
