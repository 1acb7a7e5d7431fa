//! `run`: create and start in one go; in the foreground it waits for the container,
//! forwards signals, deletes it afterwards and returns its exit code.

use super::create::{create, CreateOpts};
use super::{foreground, lifecycle};
use crate::error::Result;
use crate::state::Root;

/// Runs a container. Returns its exit code (0 once started with `detach`).
pub fn run(root: &Root, opts: &CreateOpts, detach: bool) -> Result<i32> {
    if detach {
        create(root, opts, false)?;
        if let Err(e) = lifecycle::start(root, &opts.id) {
            let _ = lifecycle::delete(root, &opts.id, true);
            return Err(e);
        }
        return Ok(0);
    }
    let sigfd = foreground::capture_signals()?;
    foreground::become_subreaper();
    let created = create(root, opts, true)?;
    let pid = created.container.record.pid;
    if let Err(e) = lifecycle::start(root, &opts.id) {
        let _ = lifecycle::delete(root, &opts.id, true);
        return Err(e);
    }
    let code = foreground::wait(pid, &sigfd, created.pty_master);
    let deleted = lifecycle::delete(root, &opts.id, true);
    let code = code?;
    deleted?;
    Ok(code)
}
