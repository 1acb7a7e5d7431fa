//! RUN's flags as BuildKit takes them: `--mount=type=cache` (a directory kept between
//! builds, shared, locked or private), `--mount=type=secret` (a file given with
//! `berth build --secret`, never in the image or the cache key), `--mount=type=tmpfs`,
//! and `--network=default|none` (host is refused: a Dockerfile must not reach the
//! host's network).

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use berth_engine::docker::config::MountSpec;
use berth_image::Digest;

/// What RUN's flags ask for, held until the step is done.
#[derive(Default)]
pub(super) struct RunFlags {
    /// Mounts for the step's container.
    pub(super) mounts: Vec<MountSpec>,
    /// The network, when one is named.
    pub(super) network: Option<String>,
    /// Exclusive locks of `sharing=locked` caches.
    locks: Vec<std::fs::File>,
    /// Directories of `sharing=private` caches in use by this step alone.
    private: Vec<tempfile::TempDir>,
}

/// Splits RUN's leading flags from its command.
pub(super) fn split(rest: &str) -> (Vec<&str>, &str) {
    let mut flags = Vec::new();
    let mut left = rest.trim_start();
    while left.starts_with("--") {
        let end = left.find(char::is_whitespace).unwrap_or(left.len());
        flags.push(&left[..end]);
        left = left[end..].trim_start();
    }
    (flags, left)
}

impl RunFlags {
    /// Reads RUN's flags (`line` for messages); `root` holds the caches, `secrets`
    /// are `--secret` ids and their files.
    pub(super) fn read(
        flags: &[&str],
        line: usize,
        root: &Path,
        secrets: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<RunFlags> {
        let mut out = RunFlags::default();
        for f in flags {
            match f.split_once('=') {
                Some(("--mount", spec)) => out.mount(spec, line, root, secrets)?,
                Some(("--network", n)) => {
                    out.network = Some(match n {
                        "default" => berth_net::network::DEFAULT.to_string(),
                        "none" => n.to_string(),
                        // The host's network namespace would reach its loopback services
                        // and abstract sockets from any Dockerfile (or base image trigger).
                        "host" => bail!(
                            "Dockerfile line {line}: RUN --network=host is not allowed: a build step does not get the host's network"
                        ),
                        other => bail!(
                            "Dockerfile line {line}: RUN --network={other}: use default or none"
                        ),
                    })
                }
                _ => bail!(
                    "Dockerfile line {line}: RUN {f} is not supported (--mount=type=cache|secret|tmpfs,..., --network=...)"
                ),
            }
        }
        Ok(out)
    }

    fn mount(
        &mut self,
        spec: &str,
        line: usize,
        root: &Path,
        secrets: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<()> {
        let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').unwrap_or((part, "true"));
            kv.insert(k, v);
        }
        let target = kv
            .get("target")
            .or(kv.get("dst"))
            .or(kv.get("destination"))
            .copied();
        let need_target = || {
            target.filter(|t| t.starts_with('/')).with_context(|| {
                format!(
                    "Dockerfile line {line}: RUN --mount={spec}: target=/ABSOLUTE/PATH is needed"
                )
            })
        };
        match kv.get("type").copied().unwrap_or("bind") {
            "cache" => {
                let target = need_target()?;
                let id = kv.get("id").copied().unwrap_or(target);
                let dir = root
                    .join("build-cache-mounts")
                    .join(&Digest::of(id.as_bytes()).hex()[..16]);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("the cache directory {}", dir.display()))?;
                let source = match kv.get("sharing").copied().unwrap_or("shared") {
                    "shared" => dir,
                    "locked" => {
                        // Held until the step ends: a second step using it waits.
                        let lock = std::fs::File::create(dir.with_extension("lock"))?;
                        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
                            .context("lock the cache directory")?;
                        self.locks.push(lock);
                        dir
                    }
                    "private" => {
                        let t = tempfile::Builder::new()
                            .prefix("private-")
                            .tempdir_in(root.join("build-cache-mounts"))?;
                        let p = t.path().to_path_buf();
                        self.private.push(t);
                        p
                    }
                    other => bail!(
                        "Dockerfile line {line}: RUN --mount sharing={other}: use shared, locked or private"
                    ),
                };
                self.mounts.push(MountSpec {
                    kind: "bind".into(),
                    source: source.display().to_string(),
                    destination: target.into(),
                    readonly: false,
                    options: Vec::new(),
                });
            }
            "secret" => {
                let id = kv.get("id").copied().with_context(|| {
                    format!("Dockerfile line {line}: RUN --mount=type=secret needs id=NAME")
                })?;
                let target = target
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("/run/secrets/{id}"));
                let required = kv.get("required").is_some_and(|r| *r == "true");
                match secrets.get(id) {
                    Some(src) => self.mounts.push(MountSpec {
                        kind: "bind".into(),
                        source: src.display().to_string(),
                        destination: target,
                        readonly: true,
                        options: Vec::new(),
                    }),
                    None if required => bail!(
                        "Dockerfile line {line}: RUN needs the secret {id:?}: give it with --secret id={id},src=FILE"
                    ),
                    // As BuildKit: an optional secret that was not given is not mounted.
                    None => {}
                }
            }
            "tmpfs" => self.mounts.push(MountSpec {
                kind: "tmpfs".into(),
                source: String::new(),
                destination: need_target()?.into(),
                readonly: false,
                options: kv
                    .get("size")
                    .map(|s| vec![format!("size={s}")])
                    .unwrap_or_default(),
            }),
            other => bail!(
                "Dockerfile line {line}: RUN --mount type={other} is not supported (cache, secret, tmpfs)"
            ),
        }
        Ok(())
    }
}

/// The paths (deepest first) that the mounts' destinations need and `rootfs` does
/// not have: the runtime makes them to mount on.
pub(super) fn missing_mount_points(rootfs: &Path, mounts: &[MountSpec]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mounts {
        let dest = Path::new(m.destination.trim_start_matches('/'));
        let mut missing: Vec<PathBuf> = dest
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .take_while(|p| {
                crate::in_root::open_in_root(rootfs, &p.to_string_lossy(), rustix::fs::OFlags::PATH)
                    .is_err()
            })
            .map(Path::to_path_buf)
            .collect();
        out.append(&mut missing);
    }
    // Deepest first, each once.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Removes the mount points `missing_mount_points` found, if they are still empty
/// files or directories: resolved inside `rootfs`, so a step that replaced a parent
/// with a symlink cannot lead the removal out of it.
pub(super) fn remove_stubs(rootfs: &Path, stubs: &[PathBuf]) {
    use rustix::fs::{AtFlags, OFlags};
    for p in stubs {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            continue;
        };
        let Ok(dir) = crate::in_root::open_in_root(
            rootfs,
            &parent.to_string_lossy(),
            OFlags::PATH | OFlags::DIRECTORY,
        ) else {
            continue;
        };
        let is_dir = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        });
        let empty_file = !is_dir
            && rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_size == 0);
        if is_dir {
            // Only if empty: what the step wrote there stays.
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
        } else if empty_file {
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
        }
    }
}

/// `--secret id=NAME,src=FILE` values of `berth build`.
pub(super) fn secrets(given: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for s in given {
        let mut id = None;
        let mut src = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                _ => bail!("--secret {s:?}: use id=NAME,src=FILE"),
            }
        }
        let (Some(id), Some(src)) = (id, src) else {
            bail!("--secret {s:?}: use id=NAME,src=FILE");
        };
        let src = std::fs::canonicalize(&src)
            .with_context(|| format!("--secret {s:?}: {}", src.display()))?;
        out.insert(id, src);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split_from_the_command_and_bad_ones_say_why() {
        let (f, cmd) = split("--mount=type=cache,target=/c --network=none make all");
        assert_eq!(f, ["--mount=type=cache,target=/c", "--network=none"]);
        assert_eq!(cmd, "make all");
        let dir = tempfile::tempdir().unwrap();
        let none = BTreeMap::new();
        let read = |flags: &[&str]| RunFlags::read(flags, 4, dir.path(), &none);
        let ok = read(&["--mount=type=cache,target=/c,id=x", "--network=none"]).unwrap();
        assert_eq!(ok.mounts[0].destination, "/c");
        assert_eq!(ok.network.as_deref(), Some("none"));
        // An optional secret that was not given is simply not there.
        assert!(read(&["--mount=type=secret,id=s"])
            .unwrap()
            .mounts
            .is_empty());
        for (flags, why) in [
            (&["--mount=type=cache"][..], "target=/ABSOLUTE/PATH"),
            (
                &["--mount=type=secret,id=s,required"],
                "--secret id=s,src=FILE",
            ),
            (
                &["--mount=type=bind,target=/x"],
                "type=bind is not supported",
            ),
            (
                &["--mount=type=cache,target=/c,sharing=wide"],
                "shared, locked or private",
            ),
            (&["--network=bridge0"], "default or none"),
            (&["--network=host"], "not allowed"),
            (&["--security=insecure"], "not supported"),
        ] {
            let e = read(flags).err().unwrap().to_string();
            assert!(e.contains(why) && e.contains("line 4"), "{flags:?}: {e}");
        }
    }
}
