//! Which xattrs overlayfs reads for the store's layers. Root's store uses the
//! `trusted.overlay.` namespace; in a user namespace (rootless berth) trusted xattrs
//! cannot be written, so the store marks opaque directories with `user.overlay.` and
//! mounts with `userxattr`, as the kernel's overlayfs documentation says for
//! unprivileged mounts. A store is only ever used from one of the two.

use std::sync::OnceLock;

fn in_user_namespace() -> bool {
    static IN: OnceLock<bool> = OnceLock::new();
    *IN.get_or_init(berth_hostdirs::in_user_namespace)
}

/// The xattr that marks a directory opaque (it hides the layers below).
pub fn opaque_xattr() -> &'static str {
    if in_user_namespace() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// The mount option the store's overlays need (empty for root's store).
pub fn mount_option() -> &'static str {
    if in_user_namespace() {
        ",userxattr"
    } else {
        ""
    }
}

/// Whether xattr `name` is overlayfs's own (never part of a layer).
pub fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}
