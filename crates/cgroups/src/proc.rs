//! `/proc/PID/cgroup`: which cgroup a process is in on each hierarchy.

/// One line of /proc/PID/cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCgroup {
    /// The hierarchy ID (0 for cgroup2).
    pub hierarchy: u32,
    /// The v1 controllers of the hierarchy (`name=...` for named ones); empty for
    /// cgroup2.
    pub controllers: Vec<String>,
    /// The cgroup path, from the hierarchy's root as this process's cgroup namespace
    /// shows it.
    pub path: String,
}

impl ProcCgroup {
    /// Whether this is the cgroup2 line.
    pub fn is_unified(&self) -> bool {
        self.controllers.is_empty()
    }
}

/// Parses the text of /proc/PID/cgroup.
pub fn parse(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let ctrls = parts.next()?;
            let path = parts.next()?.to_string();
            Some(ProcCgroup {
                hierarchy,
                controllers: ctrls
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path,
            })
        })
        .collect()
}

/// The cgroups of process `pid` (this process's with None).
pub fn read(pid: Option<i32>) -> std::io::Result<Vec<ProcCgroup>> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/cgroup"),
        None => "/proc/self/cgroup".to_string(),
    };
    std::fs::read_to_string(path).map(|t| parse(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_lines() {
        let c = parse("12:cpu,cpuacct:/berth/x\n1:name=systemd:/init.scope\n0::/berth/x\n");
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(c[0].path, "/berth/x");
        assert!(c[2].is_unified() && c[2].hierarchy == 0);
    }
}
