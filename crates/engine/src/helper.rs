//! Starting one of berth's per-host helper processes (the /proc view server, the
//! network helper) from the berth binary — the running one, or `$BERTH_BIN` when the
//! engine runs in another program (its tests) — detached, and waited for until it is
//! ready.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};

/// Starts `berth system SUBCOMMAND` detached and waits up to `wait` for `ready`;
/// `what` names the helper in errors, `hint` says what to do when it fails. A helper
/// that exits while another instance became ready (two starts at once) is fine.
pub fn start(
    subcommand: &str,
    what: &str,
    hint: &str,
    wait: Duration,
    ready: impl Fn() -> bool,
) -> Result<()> {
    let exe = match std::env::var_os("BERTH_BIN") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe().ctx(|| "find the berth binary")?,
    };
    let mut cmd = Command::new(&exe);
    cmd.args(["system", subcommand])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .ctx(|| format!("start {what} ({})", exe.display()))?;
    let end = Instant::now() + wait;
    while !ready() {
        if let Ok(Some(st)) = child.try_wait() {
            if ready() {
                break;
            }
            return Err(Error::Runtime(format!(
                "{what} exited ({st}) before it was ready{hint}"
            )));
        }
        if Instant::now() > end {
            return Err(Error::Runtime(format!(
                "{what} was not ready within {} s{hint}",
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
