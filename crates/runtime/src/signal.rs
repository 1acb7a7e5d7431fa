//! Signal names and numbers as `kill` accepts them: `KILL`, `SIGKILL`, `9`, `RTMIN+3`.

use crate::error::{Error, Result};

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// Parses a signal given by name (with or without `SIG`, any case) or number.
pub fn parse(s: &str) -> Result<i32> {
    let bad = || {
        Error::invalid(format!(
            "unknown signal {s:?} (use a name like TERM, SIGKILL, RTMIN+1, or a number from 1 to {SIGRTMAX})"
        ))
    };
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |rest: &str, base: i32, sign: i32| -> Result<i32> {
        let off = if rest.is_empty() {
            0
        } else {
            let op_len = rest.chars().next().map_or(0, char::len_utf8);
            let (op, num) = rest.split_at(op_len);
            let v: i32 = num.parse().map_err(|_| bad())?;
            match (op, sign) {
                ("+", 1) | ("-", -1) => v * sign,
                _ => return Err(bad()),
            }
        };
        let n = base + off;
        if (SIGRTMIN..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(rest, SIGRTMIN, 1);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(rest, SIGRTMAX, -1);
    }
    Err(bad())
}

/// The conventional name of a signal number (for messages), e.g. `SIGTERM`.
pub fn name(sig: i32) -> String {
    NAMES
        .iter()
        .find(|(_, n)| *n == sig)
        .map(|(k, _)| format!("SIG{k}"))
        .unwrap_or_else(|| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("KILL").unwrap(), 9);
        assert_eq!(parse("sigterm").unwrap(), 15);
        assert_eq!(parse("9").unwrap(), 9);
        assert_eq!(parse("RTMIN+2").unwrap(), 36);
        assert_eq!(parse("SIGRTMAX-1").unwrap(), 63);
        for bad in ["", "FOO", "0", "65", "RTMIN+99", "-1", "RTMINÄ", "RTMIN+"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(name(15), "SIGTERM");
    }
}
