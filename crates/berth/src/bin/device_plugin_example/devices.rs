//! Which loop devices there are and whether each is usable.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use berth_deviceplugin::v1beta1::Device;

/// Whether `name` is a loop device's node name (`loop` and a number).
fn is_loop_name(name: &str) -> bool {
    name.strip_prefix("loop")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The number in a loop device's name, for ordering (loop2 before loop10).
pub fn number(name: &str) -> u64 {
    name.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(u64::MAX)
}

/// Whether `dir/name` is a block device node now.
pub fn healthy(dir: &Path, name: &str) -> bool {
    std::fs::metadata(dir.join(name)).is_ok_and(|m| m.file_type().is_block_device())
}

/// The loopN block devices in `dir` now.
pub fn discover(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_loop_name(n) && healthy(dir, n))
                .collect()
        })
        .unwrap_or_default()
}

/// The devices `names` in `dir`, in number order, each with its health.
pub fn list(dir: &Path, names: &[String]) -> Vec<Device> {
    let mut names = names.to_vec();
    names.sort_by_key(|n| (number(n), n.clone()));
    names.dedup();
    names
        .into_iter()
        .map(|n| Device {
            health: if healthy(dir, &n) {
                berth_deviceplugin::HEALTHY
            } else {
                berth_deviceplugin::UNHEALTHY
            }
            .into(),
            id: n,
            topology: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_names_are_recognised_and_ordered_by_number() {
        assert!(is_loop_name("loop0") && is_loop_name("loop12"));
        assert!(!is_loop_name("loop") && !is_loop_name("loop-control") && !is_loop_name("sda"));
        let mut v = vec!["loop10", "loop2", "loop1"];
        v.sort_by_key(|n| number(n));
        assert_eq!(v, ["loop1", "loop2", "loop10"]);
    }

    #[test]
    fn a_named_device_without_a_node_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let l = list(dir.path(), &["loop7".into()]);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].health, "Unhealthy");
        assert!(discover(dir.path()).is_empty());
    }
}
