//! berth's image store.
//!
//! - [`store::Store`]: content-addressed blobs, image names, snapshots, container rootfs;
//! - [`image`]: names and IDs resolved to one platform's manifest, config and layers;
//! - [`unpack`] and [`diff`]: layer tar ↔ directory, safely, with overlay whiteouts;
//! - [`snapshot`]: layers unpacked once, overlay (or copied) container root filesystems;
//! - [`archive`]: OCI layouts and docker archives, in and out;
//! - [`registry`]: the OCI distribution protocol (pull, push, auth, TLS);
//! - [`commit`], [`gc`], [`inspect`]: new images from containers, pruning, reports.

pub mod archive;
pub mod commit;
pub mod compress;
pub mod diff;
pub mod digest;
pub mod download;
pub mod error;
pub mod gc;
pub mod image;
pub mod inroot;
pub mod inspect;
pub mod oci;
pub mod overlay;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
mod sys;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use image::ResolvedImage;
pub use reference::Reference;
pub use store::Store;
