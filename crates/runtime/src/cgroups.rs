//! The runtime's cgroups: berth's shared cgroup library (berth-cgroups), which the
//! engine, the monitor and the /proc view use too.

pub use berth_cgroups::*;
