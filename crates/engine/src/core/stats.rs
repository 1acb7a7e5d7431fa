//! A container's resource use, read from its cgroup (CRI ContainerStats).

use berth_cgroups::naming;

use crate::cri::ContainerStats;

use super::records::ContainerRecord;
use super::Core;

impl Core {
    /// Resource use of container `rec` now.
    pub fn stats_of(&self, rec: &ContainerRecord) -> ContainerStats {
        let data = naming::paths_of(berth_cgroups::Layout::shared(), &rec.cgroup)
            .map(|p| berth_cgroups::stats::collect(&p))
            .unwrap_or_default();
        let n = |p: &str| data.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
        let usage = n("/memory/usage/usage");
        // The kubelet's working set: usage less inactive file pages.
        let inactive = n("/memory/raw/total_inactive_file").max(n("/memory/raw/inactive_file"));
        let limit = n("/memory/usage/limit");
        let (upper, _, _) = self.images().container_paths(&rec.id);
        ContainerStats {
            id: rec.id.clone(),
            timestamp: berth_monitor::supervise::now_nanos(),
            cpu_usage_ns: n("/cpu/usage/total"),
            memory_working_set: usage.saturating_sub(inactive),
            memory_usage: usage,
            memory_limit: (limit > 0 && limit < (1 << 62)).then_some(limit),
            pids: n("/pids/current"),
            writable_layer_bytes: berth_image::gc::dir_size(&upper),
        }
    }
}
