//! The runtime's log: lines in logrus' text or JSON shape, because conmon and the
//! containerd shim read the `--log` file that way to show the runtime's errors.
//!
//! Written by hand rather than with `tracing`: the runtime is a short-lived, lean process
//! and needs exactly one line format that its callers already parse.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

/// Severity of a log line.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    /// Details shown only with --debug.
    Debug,
    /// Normal progress.
    Info,
    /// Something was skipped or degraded.
    Warn,
    /// The operation failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

/// Output format of the log.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// `time="..." level=... msg="..."`
    Text,
    /// `{"level":"...","msg":"...","time":"..."}`
    Json,
}

struct Logger {
    file: Option<File>,
    format: Format,
    min: Level,
}

static LOGGER: Mutex<Option<Logger>> = Mutex::new(None);

/// Configures the log: a file to append to (stderr when none), its format, and whether
/// debug lines are written.
pub fn init(path: Option<&std::path::Path>, format: Format, debug: bool) -> std::io::Result<()> {
    let file = match path {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => None,
    };
    let min = if debug { Level::Debug } else { Level::Warn };
    *LOGGER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Logger { file, format, min });
    Ok(())
}

/// Whether a log file was configured (then errors go there as well as to stderr).
pub fn has_file() -> bool {
    LOGGER
        .lock()
        .map(|l| l.as_ref().is_some_and(|l| l.file.is_some()))
        .unwrap_or(false)
}

/// Formats one line in the configured format.
fn line(format: Format, level: Level, msg: &str) -> String {
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    match format {
        Format::Json => {
            let v = serde_json::json!({"level": level.as_str(), "msg": msg, "time": time});
            format!("{v}\n")
        }
        Format::Text => format!("time={:?} level={} msg={:?}\n", time, level.as_str(), msg),
    }
}

/// Writes a line at `level` if the configured minimum allows it.
pub fn log(level: Level, msg: &str) {
    let mut guard = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(logger) = guard.as_mut() else {
        if level >= Level::Warn {
            let _ = std::io::stderr().write_all(line(Format::Text, level, msg).as_bytes());
        }
        return;
    };
    if level < logger.min {
        return;
    }
    let text = line(logger.format, level, msg);
    match logger.file.as_mut() {
        Some(f) => {
            let _ = f.write_all(text.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks the start of the operation that [`phase`] measures against.
pub fn start_clock() {
    let _ = START.set(std::time::Instant::now());
}

/// Logs (at debug level) how far into the operation a phase was reached, so `--debug`
/// shows where the time of a create goes.
pub fn phase(name: &str) {
    let enabled = LOGGER
        .lock()
        .map(|l| l.as_ref().is_some_and(|l| l.min == Level::Debug))
        .unwrap_or(false);
    if enabled {
        let at = START.get().map(|s| s.elapsed().as_micros()).unwrap_or(0);
        log(
            Level::Debug,
            &format!("phase {name} at {at}us (pid {})", std::process::id()),
        );
    }
}

/// Logs at debug level.
pub fn debug(msg: impl AsRef<str>) {
    log(Level::Debug, msg.as_ref());
}

/// Logs at warning level.
pub fn warn(msg: impl AsRef<str>) {
    log(Level::Warn, msg.as_ref());
}

/// Logs at error level.
pub fn error(msg: impl AsRef<str>) {
    log(Level::Error, msg.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_is_logrus_shaped() {
        let l = line(Format::Json, Level::Error, "boom \"x\"");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "boom \"x\"");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_line_quotes_message() {
        let l = line(Format::Text, Level::Warn, "a b");
        assert!(l.contains("level=warning msg=\"a b\""), "{l}");
    }
}
