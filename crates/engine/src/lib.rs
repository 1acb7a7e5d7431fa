//! berth's container engine: containers made from images and run by berth-runtime,
//! each watched by its own small monitor process (what conmon does for podman) that
//! holds its output, writes its log, records its exit and applies its restart policy.
//! Containers outlive the CLI; their state is read back from the kernel and the
//! monitor's records.
#![forbid(unsafe_code)]

pub mod dns;
pub mod engine;
pub mod error;
pub mod explain;
pub mod helper;
pub mod network;
pub mod procview;
pub mod spec;

pub use berth_monitor::{config, log, monitor, record};

pub use engine::Engine;
pub use error::{Error, Result};
