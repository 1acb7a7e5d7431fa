//! The subordinate ids a user may map (/etc/subuid and /etc/subgid, as shadow's
//! newuidmap and newgidmap read them): lines `USER:START:COUNT`, where USER is a name
//! or a numeric uid. Parsed by hand: six lines of format, and no maintained crate reads it.

use std::path::Path;

/// One range of subordinate ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// The first host id of the range.
    pub start: u32,
    /// How many ids it has.
    pub count: u32,
}

/// The first range given to the user named `name` (or with uid `id`) in `file`'s
/// text: podman also maps a single range.
pub fn find(text: &str, name: &str, id: u32) -> Option<Range> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let r = Range {
            start: start.trim().parse().ok()?,
            count: count.trim().parse().ok()?,
        };
        (r.count > 0).then_some(r)
    })
}

/// The user's range in `path` (/etc/subuid or /etc/subgid), or None.
pub fn lookup(path: &Path, name: &str, id: u32) -> Option<Range> {
    find(&std::fs::read_to_string(path).ok()?, name, id)
}

/// The name of host user `uid` from /etc/passwd, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_id_and_bad_lines_skipped() {
        let text = "# a comment\nalice:100000:65536\nbob:x:5\n1001:200000:1000\ncarol:300000:0\n";
        assert_eq!(
            find(text, "alice", 1000),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            find(text, "dave", 1001),
            Some(Range {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(find(text, "bob", 7), None);
        assert_eq!(find(text, "carol", 8), None);
        assert_eq!(find(text, "erin", 9), None);
    }
}
