//! IDs and names. A name is reserved by creating `names/NAME` exclusively (holding the
//! owner's ID), so two creates of one name at once cannot both win; a reservation left
//! by a maker that died is found by its owner having neither a record nor a live maker.

use std::path::Path;

use crate::error::{Context, Error, Result};

/// Reserves `name` for `id` in `dir`. `owner_alive` tells whether the ID that holds a
/// name already is a real object (or one still being made); a stale reservation is
/// taken over. On a clash: who holds it.
pub fn reserve(
    dir: &Path,
    name: &str,
    id: &str,
    owner_alive: &dyn Fn(&str) -> bool,
) -> Result<std::result::Result<(), String>> {
    let path = dir.join(name);
    // Written whole, then linked into place: a reservation is never seen half-made.
    let tmp = dir.join(format!(".{id}.{name}"));
    std::fs::write(&tmp, id).ctx(|| format!("write {}", tmp.display()))?;
    let result = (|| {
        for _ in 0..3 {
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => return Ok(Ok(())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    if holder == id {
                        return Ok(Ok(()));
                    }
                    if !owner_alive(&holder) {
                        // The holder died before it had a record: take the name over.
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    return Ok(Err(holder));
                }
                Err(e) => return Err(Error::io(format!("reserve the name {name}"), e)),
            }
        }
        Err(Error::Conflict(format!(
            "the name {name:?} keeps being taken and released: try again"
        )))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Releases `name` if `id` holds it.
pub fn release(dir: &Path, name: &str, id: &str) {
    let path = dir.join(name);
    if std::fs::read_to_string(&path).is_ok_and(|h| h == id) {
        let _ = std::fs::remove_file(path);
    }
}

/// Who holds `name`, if anyone.
pub fn holder(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .filter(|h| !h.is_empty())
}

/// A new random container ID (64 hex characters, as docker's).
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks a container name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::Invalid(format!(
            "invalid container name {name:?}: use letters, digits, '_', '.', '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// A docker-style generated name (adjective_noun), unique among `taken`.
pub fn generate_name(id: &str, taken: &dyn Fn(&str) -> bool) -> String {
    const A: &[&str] = &[
        "brave", "calm", "eager", "fond", "keen", "lucid", "merry", "noble", "quiet", "swift",
        "tidy", "vivid",
    ];
    const N: &[&str] = &[
        "anchor", "buoy", "cove", "dock", "ferry", "harbor", "jetty", "keel", "mooring", "pier",
        "quay", "wharf",
    ];
    let seed = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
    for i in 0..1000u64 {
        let x = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut n = format!(
            "{}_{}",
            A[(x % A.len() as u64) as usize],
            N[((x >> 8) % N.len() as u64) as usize]
        );
        if i > 0 {
            n.push_str(&format!("{}", i));
        }
        if !taken(&n) {
            return n;
        }
    }
    format!("c_{}", &id[..12])
}
