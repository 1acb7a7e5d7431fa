//! Images: `AuthConfig` in; `Image` and `FilesystemUsage` out.

use berth_engine::cri as engine;
use k8s_cri::v1 as pb;

/// The engine's pull credentials from CRI's.
pub fn auth(a: pb::AuthConfig) -> engine::AuthConfig {
    engine::AuthConfig {
        username: a.username,
        password: a.password,
        auth: a.auth,
        registry_token: if a.registry_token.is_empty() {
            a.identity_token
        } else {
            a.registry_token
        },
    }
}

/// An image as CRI shows it.
pub fn image(i: &engine::Image) -> pb::Image {
    pb::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid: i.uid.map(|value| pb::Int64Value { value }),
        username: i.username.clone(),
        spec: Some(pb::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// The image store's use as CRI shows it.
pub fn fs_usage(u: &engine::FilesystemUsage) -> pb::FilesystemUsage {
    pb::FilesystemUsage {
        timestamp: u.timestamp,
        fs_id: Some(pb::FilesystemIdentifier {
            mountpoint: u.mountpoint.clone(),
        }),
        used_bytes: Some(pb::UInt64Value {
            value: u.used_bytes,
        }),
        inodes_used: Some(pb::UInt64Value {
            value: u.inodes_used,
        }),
    }
}
