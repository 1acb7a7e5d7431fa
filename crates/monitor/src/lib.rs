//! The pieces of berth's engine that the per-container monitor needs, kept small so that
//! the monitor — one process per container, alive as long as the container — costs
//! little memory: the container records, the CRI log writer and the monitor itself.
#![deny(unsafe_code)]

pub mod config;
pub mod error;
pub mod log;
pub mod monitor;
pub mod network;
pub mod record;
pub mod sys;

pub use error::{Error, Result};
