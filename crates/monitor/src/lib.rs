//! The pieces of berth's engine that the per-container monitor needs, kept small so that
//! the monitor — one process per container, alive as long as the container — costs
//! little memory: the engine's instructions to it, the records it keeps, the CRI log
//! writer, the release of a sandbox's network and namespaces, and the monitor itself.
#![deny(unsafe_code)]

pub mod error;
pub mod log;
pub mod monitor;
pub mod record;
pub mod sandbox;
pub mod seccomp_relay;
pub mod supervise;
pub mod sys;

pub use error::{Error, Result};
