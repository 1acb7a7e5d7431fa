//! berth's container engine: pod sandboxes and containers behind CRI-shaped traits
//! ([`cri`]), implemented by the [`core`] over a state root — containers run by
//! berth-runtime, each watched by its own small monitor process (what conmon does for
//! podman) that holds its output, writes its log, records its exit and applies its
//! restart policy. Containers outlive every caller; their state is read back from the
//! kernel and the monitors' records. The docker-shaped [`docker::Engine`] behind
//! `berth run` is one client of the core; the node agent is another.
#![deny(unsafe_code)]

pub mod cdi;
pub mod core;
pub mod cri;
pub mod dns;
pub mod docker;
pub mod error;
pub mod events;
pub mod exec;
pub mod explain;
pub mod helper;
pub mod procview;
pub mod rootless;

pub use berth_monitor::{log, monitor, record};

pub use crate::core::Core;
pub use docker::Engine;
pub use error::{Error, Result};
