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
}

impl Making {
    fn word(self) -> &'static str {
        match self {
            Making::Sandbox => "sandbox",
            Making::Container => "container",
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
            _ => super::container::undo(core, &id),
        }
        let _ = std::fs::remove_file(e.path());
        lock.remove_file();
    }
}
