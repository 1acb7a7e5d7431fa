//! `/proc/PID/mountinfo`: one parser for every part of berth that reads the mount table
//! (the cgroup layout, the /proc view, `inspect --explain`).

use std::path::PathBuf;

/// One line of mountinfo (see proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount's ID.
    pub id: u32,
    /// Its parent's ID.
    pub parent: u32,
    /// `major:minor` of the filesystem's device.
    pub device: String,
    /// The path within the filesystem that is mounted here (not "/" for bind mounts
    /// of a subdirectory, or a cgroup seen from a cgroup namespace).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// Optional fields: propagation (`shared:N`, `master:N`, `unbindable`).
    pub optional: Vec<String>,
    /// The filesystem type.
    pub fstype: String,
    /// The source (device, or what was given to mount).
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountInfo {
    /// Parses one line; None if it is not a mountinfo line.
    pub fn parse_line(line: &str) -> Option<MountInfo> {
        let (pre, post) = line.split_once(" - ")?;
        let mut pre = pre.split(' ');
        let id = pre.next()?.parse().ok()?;
        let parent = pre.next()?.parse().ok()?;
        let device = pre.next()?.to_string();
        let root = unescape(pre.next()?);
        let mount_point = PathBuf::from(unescape(pre.next()?));
        let options = pre.next()?.to_string();
        let optional = pre.filter(|f| !f.is_empty()).map(str::to_string).collect();
        let mut post = post.split(' ');
        let fstype = post.next()?.to_string();
        let source = unescape(post.next().unwrap_or(""));
        let super_options = post.next().unwrap_or("").to_string();
        Some(MountInfo {
            id,
            parent,
            device,
            root,
            mount_point,
            options,
            optional,
            fstype,
            source,
            super_options,
        })
    }

    /// Whether a per-mount or superblock option is set (`ro`, `memory`, ...).
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.split(',').any(|o| o == opt) || self.super_options.split(',').any(|o| o == opt)
    }
}

/// Parses a whole mountinfo text, skipping lines that are not mount lines.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(MountInfo::parse_line).collect()
}

/// Reads the mount table of process `pid` (this process's with None).
pub fn read(pid: Option<i32>) -> std::io::Result<Vec<MountInfo>> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/mountinfo"),
        None => "/proc/self/mountinfo".to_string(),
    };
    std::fs::read_to_string(path).map(|t| parse(&t))
}

/// This process's mount points at or under `dir`, deepest first (the order to unmount
/// them in).
pub fn points_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = read(None)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points
}

/// Detaches every mount at or under `dir` (lazily: a busy one goes when released).
pub fn unmount_under(dir: &std::path::Path) {
    for p in points_under(dir) {
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_with_optional_fields_and_escapes() {
        let m = MountInfo::parse_line(
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!((m.id, m.parent), (36, 35));
        assert_eq!(m.root, "/mnt1");
        assert_eq!(m.mount_point, PathBuf::from("/mnt two"));
        assert_eq!(m.optional, ["master:1", "shared:2"]);
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert!(m.has_option("noatime") && m.has_option("errors=continue"));
        let none =
            MountInfo::parse_line("31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu")
                .unwrap();
        assert!(none.optional.is_empty());
        assert!(none.has_option("cpu"));
        assert!(MountInfo::parse_line("garbage").is_none());
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
