//! Turning a directory of changes (an overlay upper directory) into a layer tar: added and
//! changed files as they are, overlay whiteouts as `.wh.NAME`, opaque directories as
//! `.wh..wh..opq`, hard links kept as links, extended attributes as PAX records.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};

/// Writes the changes under `dir` as a tar layer to `out`, leaving out the paths in
/// `exclude` (relative, like `etc/hosts`).
pub fn write_layer<W: Write>(dir: &Path, exclude: &[&str], out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut w = Walker {
        root: dir.to_path_buf(),
        exclude: exclude.iter().map(PathBuf::from).collect(),
        links: HashMap::new(),
    };
    w.walk(&mut b, Path::new(""))?;
    b.into_inner().ctx(|| "finish the layer tar")
}

struct Walker {
    root: PathBuf,
    exclude: Vec<PathBuf>,
    links: HashMap<(u64, u64), PathBuf>,
}

fn header_for(meta: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

/// A PAX extended header entry carrying `records` (key, value).
fn pax_entry<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    records: &[(String, Vec<u8>)],
) -> Result<()> {
    let mut data = Vec::new();
    for (k, v) in records {
        // "<len> <key>=<value>\n", where <len> counts the whole record, itself included.
        let body = k.len() + v.len() + 3;
        let mut len = body + body.to_string().len();
        if len.to_string().len() != body.to_string().len() {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    let name = format!(
        "PaxHeaders.0/{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let name: String = name.chars().take(99).collect();
    h.set_path(&name).ctx(|| "PAX header name")?;
    h.set_cksum();
    b.append(&h, &data[..]).ctx(|| "write a PAX header")
}

fn xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list xattrs of {}", path.display()), e)),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        if crate::overlay::is_overlay_xattr(&key) {
            continue;
        }
        let mut val = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name, &mut val)
            .ctx(|| format!("read xattr {key} of {}", path.display()))?;
        val.truncate(len);
        out.push((format!("SCHILY.xattr.{key}"), val));
    }
    Ok(out)
}

impl Walker {
    fn walk<W: Write>(&mut self, b: &mut tar::Builder<W>, rel: &Path) -> Result<()> {
        let full = self.root.join(rel);
        let mut names: Vec<_> = std::fs::read_dir(&full)
            .ctx(|| format!("read {}", full.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ctx(|| format!("read {}", full.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let r = rel.join(&name);
            if self.exclude.iter().any(|e| e == &r) {
                continue;
            }
            let p = self.root.join(&r);
            let meta = std::fs::symlink_metadata(&p).ctx(|| format!("stat {}", p.display()))?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                // An overlay whiteout: "this name was deleted".
                let wh = rel.join(format!(".wh.{}", name.to_string_lossy()));
                let mut h = header_for(&meta, tar::EntryType::Regular);
                h.set_mode(0);
                b.append_data(&mut h, &wh, std::io::empty())
                    .ctx(|| format!("write {}", wh.display()))?;
                continue;
            }
            let x = xattrs(&p)?;
            if !x.is_empty() {
                pax_entry(b, &r, &x)?;
            }
            if ft.is_dir() {
                let mut h = header_for(&meta, tar::EntryType::Directory);
                b.append_data(&mut h, &r, std::io::empty())
                    .ctx(|| format!("write {}", r.display()))?;
                let opaque =
                    rustix::fs::lgetxattr(&p, crate::overlay::opaque_xattr(), &mut [0u8; 4])
                        .ok()
                        .is_some();
                if opaque {
                    let mut h = header_for(&meta, tar::EntryType::Regular);
                    h.set_mode(0);
                    let marker = r.join(".wh..wh..opq");
                    b.append_data(&mut h, &marker, std::io::empty())
                        .ctx(|| format!("write {}", marker.display()))?;
                }
                self.walk(b, &r)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&p).ctx(|| format!("readlink {}", p.display()))?;
                let mut h = header_for(&meta, tar::EntryType::Symlink);
                b.append_link(&mut h, &r, &target)
                    .ctx(|| format!("write {}", r.display()))?;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        let mut h = header_for(&meta, tar::EntryType::Link);
                        b.append_link(&mut h, &r, first)
                            .ctx(|| format!("write {}", r.display()))?;
                        continue;
                    }
                    self.links.insert(key, r.clone());
                }
                let mut h = header_for(&meta, tar::EntryType::Regular);
                h.set_size(meta.len());
                let f = std::fs::File::open(&p).ctx(|| format!("open {}", p.display()))?;
                b.append_data(&mut h, &r, f)
                    .ctx(|| format!("write {}", r.display()))?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                let mut h = header_for(&meta, kind);
                let rdev = meta.rdev();
                h.set_device_major(rustix::fs::major(rdev))
                    .ctx(|| "device major")?;
                h.set_device_minor(rustix::fs::minor(rdev))
                    .ctx(|| "device minor")?;
                b.append_data(&mut h, &r, std::io::empty())
                    .ctx(|| format!("write {}", r.display()))?;
            }
            // Sockets have no place in a layer.
        }
        Ok(())
    }
}
