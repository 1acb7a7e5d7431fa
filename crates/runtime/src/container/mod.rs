//! The runtime's operations on containers, one module per group of commands.

pub mod create;
pub mod exec;
pub mod foreground;
pub mod inspect;
pub mod lifecycle;
pub mod run;
pub mod spawn;

pub use create::{create, CreateOpts};
pub use exec::{exec, ExecOpts};
pub use inspect::{events, ps, update, UpdateFlags};
pub use lifecycle::{delete, kill, list, pause, resume, start, state};
pub use run::run;
