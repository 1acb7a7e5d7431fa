//! Attached sessions (`run -it`, `start -ai`, `attach`): our terminal in raw mode, our
//! stdin to the container and its output to our stdout through the monitor's attach
//! socket; terminal size changes passed on; docker's detach keys (ctrl-p ctrl-q) leave
//! the container running.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use berth_engine::docker::Container as ContainerRecord;
use berth_engine::Engine;

use crate::container_cmd::engine;
use crate::Ctx;

/// Arguments of `attach`.
#[derive(Args)]
pub struct AttachArgs {
    /// The keys that detach (default ctrl-p,ctrl-q; an empty string turns detaching off).
    #[arg(long)]
    detach_keys: Option<String>,
    /// Container.
    container: String,
}

/// `berth attach`.
pub fn attach(ctx: &Ctx, a: AttachArgs) -> anyhow::Result<i32> {
    let e = engine(ctx)?;
    let rec = e.find(&a.container)?;
    let keys = detach_keys(a.detach_keys.as_deref())?;
    let s = e.attach(&rec, terminal_size())?;
    run(&e, &rec, None, s.stream, &keys)
}

/// Parses docker's `--detach-keys` (`ctrl-p,ctrl-q`, `ctrl-@`, letters, `ctrl-[`...)
/// into the bytes a terminal sends for them.
pub fn detach_keys(spec: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let spec = spec.unwrap_or("ctrl-p,ctrl-q");
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|k| {
            let b = k.as_bytes();
            match (k.strip_prefix("ctrl-").map(str::as_bytes), b.len()) {
                (Some([c]), _) if c.is_ascii_alphabetic() => Ok(c.to_ascii_lowercase() - b'a' + 1),
                (Some([c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')]), _) => Ok(c & 0x1f),
                (None, 1) if b[0].is_ascii_graphic() => Ok(b[0]),
                _ => bail!(
                    "--detach-keys {spec:?}: {k:?} is not a key: use a letter or ctrl-<a-z, @, [, \\, ], ^, _>, comma-separated (e.g. ctrl-p,ctrl-q)"
                ),
            }
        })
        .collect()
}

/// The terminal's size (rows, columns), or 24x80.
pub fn terminal_size() -> (u16, u16) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(w) if w.ws_row > 0 => (w.ws_row, w.ws_col),
        _ => (24, 80),
    }
}

/// Puts the terminal in raw mode for an attached `-t` session; restores it when dropped.
struct RawTerminal(Option<rustix::termios::Termios>);

impl RawTerminal {
    fn enable(tty: bool) -> RawTerminal {
        use std::io::IsTerminal;
        if !tty || !std::io::stdin().is_terminal() {
            return RawTerminal(None);
        }
        let Ok(old) = rustix::termios::tcgetattr(std::io::stdin()) else {
            return RawTerminal(None);
        };
        let mut raw = old.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &raw,
        );
        RawTerminal(Some(old))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                old,
            );
        }
    }
}

/// Finds the detach sequence in a stream of input: bytes that may start it are held
/// back until it is clear whether they do.
struct DetachScanner<'a> {
    keys: &'a [u8],
    held: usize,
}

impl DetachScanner<'_> {
    /// The bytes of `input` to pass on, and whether the sequence is complete (then
    /// nothing after it is passed on).
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            // Not the sequence after all: what was held goes through, and this byte may
            // start it again.
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Runs an attached session until the container ends or the user detaches; returns the
/// container's exit code (0 after a detach, as docker does).
pub fn run(
    e: &Engine,
    rec: &ContainerRecord,
    child: Option<std::process::Child>,
    conn: UnixStream,
    keys: &[u8],
) -> anyhow::Result<i32> {
    // Raw input only when our input goes in: a -t session without -i reads nothing.
    let raw = RawTerminal::enable(rec.config.tty && rec.config.interactive);
    let detached = Arc::new(AtomicBool::new(false));
    if rec.config.interactive {
        let mut to = conn.try_clone()?;
        let keys = keys.to_vec();
        let detached = detached.clone();
        std::thread::spawn(move || {
            let mut scan = DetachScanner {
                keys: &keys,
                held: 0,
            };
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 8192];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let (pass, detach) = scan.feed(&buf[..n]);
                        if to.write_all(&pass).is_err() {
                            return;
                        }
                        if detach {
                            detached.store(true, Ordering::SeqCst);
                            // Ends the output loop below; the container goes on.
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
    if rec.config.tty {
        watch_resizes(e, rec);
    }
    let mut from = conn;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
        }
    }
    drop(raw);
    if detached.load(Ordering::SeqCst) {
        // The monitor of a foreground run goes on with the container.
        drop(child);
        return Ok(0);
    }
    // The monitor of a foreground run exits with the container's code (and may have
    // removed a --rm container already).
    if let Some(mut c) = child {
        if let Some(code) = c.wait().ok().and_then(|s| s.code()) {
            return Ok(code);
        }
    }
    Ok(e.wait(rec).unwrap_or(-1))
}

/// Gives a terminal (an exec's) our terminal's size.
fn size_to_ours(t: &std::fs::File) {
    let (rows, cols) = terminal_size();
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(t, ws);
}

/// Runs a process started with `exec` on our stdio — its terminal in raw mode (our
/// size passed on as it changes), or its pipes — until it ends; returns its exit code.
pub fn run_exec(
    mut s: berth_engine::exec::ExecSession,
    tty: bool,
    interactive: bool,
) -> anyhow::Result<i32> {
    if let Some(term) = s.terminal.take() {
        let raw = RawTerminal::enable(tty && interactive);
        size_to_ours(&term);
        {
            use std::io::IsTerminal;
            let resize_to = term.try_clone()?;
            if std::io::stdout().is_terminal() {
                if let Ok(mut signals) =
                    signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
                {
                    std::thread::spawn(move || {
                        for _ in signals.forever() {
                            size_to_ours(&resize_to);
                        }
                    });
                }
            }
        }
        if interactive {
            let mut to = term.try_clone()?;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
            });
        }
        // Reading the master fails (EIO) once the process and its children closed the
        // terminal.
        let mut from = term;
        let mut out = std::io::stdout().lock();
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
        drop(raw);
        return Ok(s.wait()?);
    }
    if let (true, Some(mut to)) = (interactive, s.stdin.take()) {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
        });
    }
    let out = s.stdout.take().map(|mut r| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut r, &mut std::io::stdout());
        })
    });
    let err = s.stderr.take().map(|mut r| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut r, &mut std::io::stderr());
        })
    });
    let code = s.wait()?;
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    Ok(code)
}

/// Passes our terminal's new size to the container whenever it changes (SIGWINCH), for
/// as long as this process lives.
fn watch_resizes(e: &Engine, rec: &ContainerRecord) {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return;
    }
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
    else {
        return;
    };
    let e = e.clone();
    let rec = rec.clone();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            let _ = e.resize(&rec, terminal_size());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_dockers() {
        assert_eq!(detach_keys(None).unwrap(), vec![0x10, 0x11]);
        assert_eq!(detach_keys(Some("ctrl-a,x")).unwrap(), vec![1, b'x']);
        assert_eq!(detach_keys(Some("ctrl-@,ctrl-[")).unwrap(), vec![0, 0x1b]);
        assert!(detach_keys(Some("")).unwrap().is_empty());
        let err = detach_keys(Some("ctrl-p,meta-q")).unwrap_err().to_string();
        assert!(err.contains("\"meta-q\" is not a key"), "{err}");
    }

    #[test]
    fn the_scanner_holds_back_only_what_may_be_the_sequence() {
        let keys = [0x10, 0x11];
        let mut s = DetachScanner {
            keys: &keys,
            held: 0,
        };
        assert_eq!(s.feed(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(s.feed(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(s.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(s.feed(b"\x11rest"), (Vec::new(), true));
    }
}
