//! Container logs in the CRI format the kubelet reads (`<RFC3339Nano> <stream> <P|F>
//! <content>`): one line per output line, `P` for a piece of a line longer than the
//! buffer, `F` for the piece that ends it.

use std::io::Write;

use crate::record::now_rfc3339_nanos;

/// Longest piece written as one log line.
const MAX_LINE: usize = 16 * 1024;

/// Writes a container's output to its log.
pub struct LogWriter<W: Write> {
    out: W,
    pending: [Vec<u8>; 2],
    /// Set once a write failed (disk full): output is then dropped, never blocking the
    /// container, until the log is reopened; the monitor reports the first failure.
    pub failed: Option<std::io::Error>,
    /// The first failure, kept across reopens.
    pub first_failure: Option<String>,
}

/// Which stream a piece came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout = 0,
    /// stderr.
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl<W: Write> LogWriter<W> {
    /// A writer appending to `out`.
    pub fn new(out: W) -> Self {
        LogWriter {
            out,
            pending: [Vec::new(), Vec::new()],
            failed: None,
            first_failure: None,
        }
    }

    /// Continues in a new file (the old one was rotated away); writing resumes if it
    /// had failed.
    pub fn reopen(&mut self, out: W) {
        let _ = self.out.flush();
        self.out = out;
        self.failed = None;
    }

    fn emit(&mut self, s: Stream, tag: &str, content: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(now_rfc3339_nanos().as_bytes());
        line.push(b' ');
        line.extend_from_slice(s.name().as_bytes());
        line.push(b' ');
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(content);
        line.push(b'\n');
        if let Err(e) = self.out.write_all(&line) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        if self.first_failure.is_none() {
            self.first_failure = Some(e.to_string());
        }
        self.failed = Some(e);
    }

    /// Adds output of a stream.
    pub fn write(&mut self, s: Stream, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.pending[s as usize]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + i;
            let mut piece_start = start;
            while end - piece_start > MAX_LINE {
                self.emit(s, "P", &buf[piece_start..piece_start + MAX_LINE]);
                piece_start += MAX_LINE;
            }
            self.emit(s, "F", &buf[piece_start..end]);
            start = end + 1;
        }
        let mut rest = buf.split_off(start);
        while rest.len() > MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.emit(s, "P", &rest);
            rest = tail;
        }
        self.pending[s as usize] = rest;
    }

    /// Pushes what was written to the file (after each batch of output, so that `logs`
    /// sees it at once).
    pub fn flush(&mut self) {
        if self.failed.is_none() {
            if let Err(e) = self.out.flush() {
                self.fail(e);
            }
        }
    }

    /// Writes what is left of unfinished lines (the container ended).
    pub fn finish(&mut self) {
        for s in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[s as usize]);
            if !rest.is_empty() {
                self.emit(s, "F", &rest);
            }
        }
        let _ = self.out.flush();
    }
}

/// One parsed log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Timestamp (RFC 3339 with nanoseconds).
    pub time: &'a str,
    /// stdout or stderr.
    pub stderr: bool,
    /// Whether the line ends here (F) or continues (P).
    pub full: bool,
    /// The content.
    pub content: &'a [u8],
}

/// Parses a CRI log line (without its newline).
pub fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    Some(Entry {
        time,
        stderr: stream == b"stderr",
        full: tag == b"F",
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partials_and_parse() {
        let mut w = LogWriter::new(Vec::new());
        w.write(Stream::Stdout, b"hello\nwor");
        w.write(Stream::Stderr, b"oops\n");
        w.write(Stream::Stdout, b"ld\n");
        w.write(Stream::Stdout, b"tail");
        w.finish();
        let text = String::from_utf8(w.out.clone()).unwrap();
        let lines: Vec<Entry> = text.lines().map(|l| parse(l.as_bytes()).unwrap()).collect();
        let got: Vec<(bool, &[u8])> = lines.iter().map(|e| (e.stderr, e.content)).collect();
        assert_eq!(
            got,
            vec![
                (false, &b"hello"[..]),
                (true, b"oops"),
                (false, b"world"),
                (false, b"tail")
            ]
        );
        assert!(lines.iter().all(|e| e.full && e.time.ends_with('Z')));
        let mut w = LogWriter::new(Vec::new());
        w.write(Stream::Stdout, &vec![b'x'; MAX_LINE + 10]);
        w.write(Stream::Stdout, b"\n");
        let text = String::from_utf8(w.out).unwrap();
        let tags: Vec<bool> = text
            .lines()
            .map(|l| parse(l.as_bytes()).unwrap().full)
            .collect();
        assert_eq!(tags, vec![false, true]);
    }
}
