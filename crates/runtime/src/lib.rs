//! berth-runtime: a runc-compatible OCI runtime.
//!
//! The library holds everything the `berth-runtime` binary does, so the engine and the
//! tests can drive it directly: [`container`] has the operations (create, start, exec,
//! kill, delete...), the other modules the kernel interfaces they use.

pub mod capabilities;
pub mod cgroups;
pub mod console;
pub mod container;
pub mod error;
pub mod features;
pub mod hooks;
pub mod logging;
pub mod namespaces;
pub mod process;
pub mod protect;
pub mod reaper;
pub mod rootfs;
pub mod rootless;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sync;
pub mod sys;

pub use error::{Error, Result};
