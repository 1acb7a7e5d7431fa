//! `berth cp`: files and directories in and out of a container, every container path
//! resolved beneath its root.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use crate::container_cmd::engine;
use crate::in_root::{fd_path, open_in_root};
use crate::Ctx;

/// Arguments of `cp`.
#[derive(Args)]
pub struct CpArgs {
    /// CONTAINER:PATH or a host path.
    source: String,
    /// CONTAINER:PATH or a host path.
    destination: String,
}

/// `berth cp`: files and directories in and out of a container, every container path
/// resolved beneath its root.
pub fn cp(ctx: &Ctx, a: CpArgs) -> anyhow::Result<()> {
    use rustix::fs::OFlags;
    let e = engine(ctx)?;
    let split = |s: &str| -> Option<(String, String)> {
        let (c, p) = s.split_once(':')?;
        if c.contains('/') || c.is_empty() {
            return None;
        }
        Some((c.to_string(), p.to_string()))
    };
    match (split(&a.source), split(&a.destination)) {
        (Some((c, path)), None) => {
            let rec = e.find(&c)?;
            let src = open_in_root(std::path::Path::new(&rec.rootfs), &path, OFlags::PATH)?;
            let name = std::path::Path::new(path.trim_end_matches('/'))
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "root".into());
            let dest = PathBuf::from(&a.destination);
            let dest = if dest.is_dir() {
                dest.join(&name)
            } else {
                dest
            };
            let meta = std::fs::metadata(fd_path(&src))?;
            if meta.is_dir() {
                // A tar of the directory (symlinks kept as links), unpacked on the host.
                let mut b = tar::Builder::new(Vec::new());
                b.follow_symlinks(false);
                b.append_dir_all(".", fd_path(&src))?;
                let data = b.into_inner()?;
                std::fs::create_dir_all(&dest)?;
                let mut ar = tar::Archive::new(&data[..]);
                ar.set_preserve_permissions(true);
                ar.unpack(&dest)
                    .with_context(|| format!("write {}", dest.display()))?;
            } else {
                let f = open_in_root(std::path::Path::new(&rec.rootfs), &path, OFlags::RDONLY)?;
                let mut r = std::fs::File::from(f);
                let mut w = std::fs::File::create(&dest)
                    .with_context(|| format!("create {}", dest.display()))?;
                std::io::copy(&mut r, &mut w)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    &dest,
                    std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
                )?;
            }
        }
        (None, Some((c, path))) => {
            let rec = e.find(&c)?;
            let src = PathBuf::from(&a.source);
            let meta =
                std::fs::symlink_metadata(&src).with_context(|| format!("{}", src.display()))?;
            let root = std::path::Path::new(&rec.rootfs);
            // Into an existing directory under the source's name, or as the given name.
            let (dir, name) = match open_in_root(root, &path, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(d) => (
                    d,
                    src.file_name()
                        .map(|n| n.to_os_string())
                        .unwrap_or_else(|| ".".into()),
                ),
                Err(_) => {
                    let p = std::path::Path::new(path.trim_end_matches('/'));
                    let parent = p
                        .parent()
                        .map(|x| x.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "/".into());
                    let d = open_in_root(root, &parent, OFlags::PATH | OFlags::DIRECTORY)
                        .with_context(|| {
                            format!("the directory {parent} does not exist in the container")
                        })?;
                    (
                        d,
                        p.file_name()
                            .map(|n| n.to_os_string())
                            .unwrap_or_else(|| ".".into()),
                    )
                }
            };
            let mut b = tar::Builder::new(Vec::new());
            b.follow_symlinks(false);
            if meta.is_dir() {
                b.append_dir_all(&name, &src)?;
            } else {
                b.append_path_with_name(&src, &name)?;
            }
            let data = b.into_inner()?;
            let mut u = berth_image::unpack::Unpacker::new(
                &fd_path(&dir),
                berth_image::unpack::Whiteouts::Apply,
            )?;
            u.apply(&data[..])?;
        }
        (Some(_), Some(_)) => {
            bail!("cp: copying between two containers is not supported; copy through the host")
        }
        (None, None) => bail!("cp: one side must be CONTAINER:PATH"),
    }
    Ok(())
}
