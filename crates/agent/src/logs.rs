//! Container logs as the kubelet reads them: CRI-format files (`<RFC3339Nano>
//! <stream> <P|F> <content>`), one per container attempt.

use std::path::Path;

/// One line of a CRI log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The timestamp as written.
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether the line ends here (`F`) or continues in the next (`P`).
    pub full: bool,
    /// The content.
    pub content: &'a str,
}

/// Parses one CRI log line.
pub fn parse(line: &str) -> Option<LogLine<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let content = it.next().unwrap_or("");
    Some(LogLine {
        time,
        stream,
        full: !tag.starts_with('P'),
        content,
    })
}

/// The last `lines` lines (at most `bytes` bytes) of a log's content, for a
/// termination message that falls back to the log.
pub fn tail_message(path: &Path, lines: usize, bytes: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut out = String::new();
    for l in text.lines().filter_map(parse) {
        out.push_str(l.content);
        if l.full {
            out.push('\n');
        }
    }
    let all: Vec<&str> = out.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut msg = all[start..].join("\n");
    if msg.len() > bytes {
        let mut cut = msg.len() - bytes;
        while !msg.is_char_boundary(cut) {
            cut += 1;
        }
        msg = msg[cut..].to_string();
    }
    (!msg.is_empty()).then_some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_parse_and_join() {
        let l = parse("2026-12-04T10:00:00.123456789Z stdout F hello world").unwrap();
        assert_eq!(
            (l.stream, l.full, l.content),
            ("stdout", true, "hello world")
        );
        let p = parse("2026-12-04T10:00:00Z stderr P part").unwrap();
        assert!(!p.full);
        assert!(parse("garbage").is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("0.log");
        std::fs::write(
            &f,
            "t stdout F one\nt stderr P tw\nt stderr F o\nt stdout F three\n",
        )
        .unwrap();
        assert_eq!(tail_message(&f, 2, 100).unwrap(), "two\nthree");
        assert_eq!(tail_message(&f, 80, 5).unwrap(), "three");
    }
}
