//! Objects being made. Before a sandbox or container is made, `creating/ID` is
//! written (saying which kind) while its maker holds the object's lock; it is removed
//! once the object is whole. A marker whose lock nobody holds is a maker that died
//! (killed, or the machine went down): whatever it made is undone, so nothing half
//! made survives. Every open of the engine sweeps (the directory is almost always
//! empty, so this costs one readdir).

use crate::error::{Context, Result};

use super::lock::Lock;
use super::Core;

/// What a marker is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Making {
    /// A sandbox.
    Sandbox,
    /// A container.
    Container,
    /// A made sandbox being brought up (undone by releasing it; its record stays).
    Readying,
}

impl Making {
    fn word(self) -> &'static str {
        match self {
            Making::Sandbox => "sandbox",
            Making::Container => "container",
            Making::Readying => "readying",
        }
    }
}

/// Marks `id` as being made (the caller holds its lock).
pub fn begin(core: &Core, id: &str, kind: Making) -> Result<()> {
    let p = core.dirs().creating().join(id);
    std::fs::write(&p, kind.word()).ctx(|| format!("write {}", p.display()))
}

/// `id` is whole.
pub fn done(core: &Core, id: &str) {
    let _ = std::fs::remove_file(core.dirs().creating().join(id));
}

/// Whether `id` is being made by a maker that is alive.
pub fn in_progress(core: &Core, id: &str) -> bool {
    core.dirs().creating().join(id).exists()
        && matches!(Lock::try_take(&core.dirs().locks(), id), Ok(None))
}

/// Undoes every object whose maker died.
pub fn sweep(core: &Core) {
    let Ok(rd) = std::fs::read_dir(core.dirs().creating()) else {
        return;
    };
    for e in rd.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let Ok(Some(lock)) = Lock::try_take(&core.dirs().locks(), &id) else {
            continue;
        };
        let kind = std::fs::read_to_string(e.path()).unwrap_or_default();
        match kind.as_str() {
            "sandbox" => super::sandbox::undo(core, &id),
            "readying" => {
                // A lean sandbox whose container was not made (or was undone) goes
                // altogether; otherwise it is released, for its container's start.
                let has_container = core
                    .container_records()
                    .is_ok_and(|all| all.iter().any(|c| c.sandbox_id == id));
                if has_container {
                    super::sandbox::unready(core, &id);
                } else {
                    super::sandbox::undo(core, &id);
                }
            }
            _ => {
                let sandbox =
                    super::records::ContainerRecord::load(&core.dirs().container(&id).dir)
                        .ok()
                        .flatten()
                        .map(|c| c.sandbox_id);
                super::container::undo(core, &id);
                // A lean sandbox is its container's alone: it goes with it.
                if let Some(sb) = sandbox {
                    let lean = super::records::SandboxRecord::load(&core.dirs().sandbox(&sb))
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.lean());
                    if lean {
                        super::sandbox::undo(core, &sb);
                    }
                }
            }
        }
        let _ = std::fs::remove_file(e.path());
        lock.remove_file();
    }
}
