//! berth's one cgroup library (what youki's libcgroups is to youki): the host's cgroup
//! layout and mount table, where containers and pods get their cgroups, and creating,
//! limiting, freezing, reading and removing them, on cgroup v1, v2 and hybrid hosts.
//! The runtime, the monitor, the engine and the /proc view all use it, so each fact
//! (a path, a file name, a v1/v2 difference) is written once.
//!
//! Written against the cgroupfs files rather than with a cgroup crate: every failed
//! write must be reported with the OCI field it came from, hybrid hosts handled, and no
//! threads or D-Bus used; the file protocol itself is small.
#![deny(unsafe_code)]

pub mod bpf_devices;
pub mod devices;
pub mod error;
pub mod layout;
pub mod mountinfo;
pub mod naming;
pub mod paths;
pub mod proc;
pub mod resources;
pub mod stats;
pub mod sys;

pub use error::{Context, Error, Result};
pub use layout::{Layout, Mode};
pub use paths::{write_file, CgroupJoin, CgroupPaths};
pub use resources::apply;
