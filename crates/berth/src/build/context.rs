//! The build context's `.dockerignore`, and the shell-style patterns it and COPY
//! sources use.

use std::path::Path;

/// `.dockerignore` patterns: `*`, `?`, directory prefixes and `!` exceptions.
pub(super) struct Ignore(Vec<(bool, String)>);

impl Ignore {
    /// The patterns of CONTEXT/.dockerignore (none when it is absent).
    pub(super) fn load(context: &Path) -> Ignore {
        let text = std::fs::read_to_string(context.join(".dockerignore")).unwrap_or_default();
        Ignore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| match l.strip_prefix('!') {
                    Some(p) => (
                        false,
                        p.trim_start_matches("./").trim_end_matches('/').to_string(),
                    ),
                    None => (
                        true,
                        l.trim_start_matches("./").trim_end_matches('/').to_string(),
                    ),
                })
                .collect(),
        )
    }

    /// Whether the context path `rel` is left out of the build.
    pub(super) fn ignored(&self, rel: &str) -> bool {
        let mut ignored = false;
        for (exclude, pat) in &self.0 {
            // A pattern matches the path or any of its parent directories.
            let mut p = Path::new(rel);
            let mut hit = false;
            loop {
                if glob(pat, &p.to_string_lossy()) {
                    hit = true;
                    break;
                }
                match p.parent() {
                    Some(q) if !q.as_os_str().is_empty() => p = q,
                    _ => break,
                }
            }
            if hit {
                ignored = *exclude;
            }
        }
        ignored
    }
}

/// Shell-style matching of `*` (not across `/`, except `**`) and `?`.
pub(super) fn glob(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                (0..=s.len()).any(|i| go(&p[2..], &s[i..]))
            }
            (Some(b'*'), _) => (0..=s.len())
                .take_while(|i| *i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_exceptions() {
        assert!(glob("*.log", "a.log") && !glob("*.log", "d/a.log") && glob("**/*.log", "d/a.log"));
        let i = Ignore(vec![(true, "logs".into()), (false, "logs/keep.log".into())]);
        assert!(i.ignored("logs/a.log") && !i.ignored("logs/keep.log") && !i.ignored("src/a"));
    }
}
