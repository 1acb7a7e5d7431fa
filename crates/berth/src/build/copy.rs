//! COPY and ADD: the sources resolved inside their root (the build context with its
//! .dockerignore, or the root filesystem of an earlier stage or an image for
//! `COPY --from`), written as one tar layer whose hash keys the step's cache.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::Value;

use berth_engine::Engine;
use berth_image::commit::NewImage;
use berth_image::snapshot::Snapshotter;
use berth_image::Digest;

use super::context::{glob, Ignore};
use super::dockerfile::{json_form, substitute, Instr};
use super::stage::Builder;

/// Where COPY reads its sources.
pub(super) enum SourceRoot<'a> {
    /// The build context.
    Context {
        /// Its directory.
        dir: &'a Path,
        /// Its .dockerignore.
        ignore: &'a Ignore,
    },
    /// An image's root filesystem, prepared for the copy under `id` and removed after.
    Image {
        /// The prepared root.
        dir: PathBuf,
        /// Its id in the image store.
        id: String,
        /// What `--from` named.
        name: String,
        /// The sources opened beneath it, open until the copy is done.
        held: Vec<OwnedFd>,
    },
}

impl SourceRoot<'_> {
    /// How messages name it.
    fn what(&self) -> String {
        match self {
            SourceRoot::Context { .. } => "build context".into(),
            SourceRoot::Image { name, .. } => format!("root filesystem of {name}"),
        }
    }

    fn is_context(&self) -> bool {
        matches!(self, SourceRoot::Context { .. })
    }

    /// Whether .dockerignore leaves `rel` out (only the context has one).
    fn ignored(&self, rel: &Path) -> bool {
        match self {
            SourceRoot::Context { ignore, .. } => ignore.ignored(&rel.to_string_lossy()),
            SourceRoot::Image { .. } => false,
        }
    }

    /// A path to read `rel` at: in the context, or opened beneath the image's root so
    /// that its symlinks resolve inside it (CVE-2019-14271 class).
    fn resolve(&mut self, rel: &Path) -> anyhow::Result<PathBuf> {
        match self {
            SourceRoot::Context { dir, .. } => {
                let p = dir.join(rel);
                std::fs::symlink_metadata(&p).with_context(|| format!("{}", rel.display()))?;
                Ok(p)
            }
            SourceRoot::Image { dir, held, .. } => {
                let fd = crate::in_root::open_in_root(
                    dir,
                    &rel.to_string_lossy(),
                    rustix::fs::OFlags::PATH,
                )?;
                let p = crate::in_root::fd_path(&fd);
                held.push(fd);
                Ok(p)
            }
        }
    }

    /// What a resolved source is: in the context, the entry itself (a symlink is
    /// copied as one); in an image, what the source path leads to inside it.
    fn metadata(&self, full: &Path) -> std::io::Result<std::fs::Metadata> {
        match self {
            SourceRoot::Context { .. } => std::fs::symlink_metadata(full),
            SourceRoot::Image { .. } => std::fs::metadata(full),
        }
    }

    /// Removes a prepared image root.
    fn release(&mut self, engine: &Engine) {
        if let SourceRoot::Image { id, held, .. } = self {
            held.clear();
            if let Err(e) = engine.images().remove_container(id) {
                eprintln!("warning: removing the root prepared for COPY --from: {e}");
            }
        }
    }
}

impl Builder<'_> {
    /// The root filesystem COPY --from=`from` reads: an earlier stage's image, or an
    /// image in the store.
    fn image_root(&self, i: &Instr, from: &str) -> anyhow::Result<SourceRoot<'static>> {
        let images = self.engine.images();
        let digest = match self.shared.dockerfile.stage_before(from, self.stage.index) {
            Some(s) => self.built.get(&s).cloned().with_context(|| {
                format!(
                    "Dockerfile line {}: {} --from={from}: that stage is named only through an ARG of this stage, so it was not planned: name it directly or with a global ARG",
                    i.line, i.cmd
                )
            })?,
            None => images
                .resolve_stored(from)
                .with_context(|| {
                    format!(
                        "Dockerfile line {}: {} --from={from}: not an earlier stage of this Dockerfile, nor an image in the store (pull it first)",
                        i.line, i.cmd
                    )
                })?
                .manifest_digest,
        };
        let img = images.resolve_digest(&digest, &berth_image::oci::Platform::host())?;
        let id = format!("build-from-{}", &berth_engine::core::names::new_id()[..12]);
        let r = images.prepare(&id, &img, &[], Snapshotter::Auto)?;
        Ok(SourceRoot::Image {
            dir: r.path,
            id,
            name: from.to_string(),
            held: Vec::new(),
        })
    }

    /// COPY and ADD: a layer written from the context, or (COPY --from) from an
    /// earlier stage's or an image's root filesystem.
    pub(super) fn copy(&mut self, i: &Instr, add: bool) -> anyhow::Result<()> {
        let vars = self.vars();
        let mut words: Vec<String> = match json_form(&i.rest) {
            Some(v) => v,
            None => i.rest.split_whitespace().map(String::from).collect(),
        };
        let mut chown: Option<(u64, u64)> = None;
        let mut from: Option<String> = None;
        let mut checksum: Option<Digest> = None;
        while words.first().is_some_and(|w| w.starts_with("--")) {
            let flag = words.remove(0);
            match flag.split_once('=') {
                Some(("--chown", v)) => {
                    let (u, g) = v.split_once(':').unwrap_or((v, v));
                    chown = Some((
                        u.parse().with_context(|| {
                            format!("Dockerfile line {}: --chown takes numeric uid:gid", i.line)
                        })?,
                        g.parse().with_context(|| {
                            format!("Dockerfile line {}: --chown takes numeric uid:gid", i.line)
                        })?,
                    ));
                }
                Some(("--from", v)) if !add => from = Some(substitute(v, &vars)),
                Some(("--checksum", v)) if add => {
                    checksum = Some(substitute(v, &vars).parse().map_err(|e| {
                        anyhow::anyhow!("Dockerfile line {}: ADD --checksum: {e}", i.line)
                    })?);
                }
                _ => bail!(
                    "Dockerfile line {}: {} {flag} is not supported",
                    i.line,
                    i.cmd
                ),
            }
        }
        if words.len() < 2 {
            bail!(
                "Dockerfile line {}: {} needs a source and a destination",
                i.line,
                i.cmd
            );
        }
        let dest_raw = substitute(&words.pop().expect("two words"), &vars);
        let workdir = self
            .cur(i)?
            .config
            .pointer("/config/WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string();
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", workdir.trim_end_matches('/'))
        };
        let into_dir = dest_raw.ends_with('/') || words.len() > 1;
        // Every source, resolved inside its root (no `..` or symlink out of it).
        let mut root = match &from {
            Some(f) => self.image_root(i, f)?,
            None => SourceRoot::Context {
                dir: self.shared.context,
                ignore: self.shared.ignore,
            },
        };
        let sources = Sources {
            words: &words,
            checksum: checksum.as_ref(),
        };
        let result = self.copy_from_root(i, add, sources, &vars, &dest, into_dir, chown, &mut root);
        root.release(&self.engine);
        result
    }

    /// The rest of [`Builder::copy`], with its sources in `root`.
    #[allow(clippy::too_many_arguments)]
    fn copy_from_root(
        &mut self,
        i: &Instr,
        add: bool,
        sources_given: Sources<'_>,
        vars: &BTreeMap<String, String>,
        dest: &str,
        into_dir: bool,
        chown: Option<(u64, u64)>,
        root: &mut SourceRoot<'_>,
    ) -> anyhow::Result<()> {
        let words = sources_given.words;
        let mut sources = Vec::new();
        let mut urls = Vec::new();
        for w in words {
            let w = substitute(w, vars);
            if w.contains("://") {
                if !add {
                    bail!(
                        "Dockerfile line {}: COPY takes no URL ({w}); ADD downloads one",
                        i.line
                    );
                }
                if !(w.starts_with("http://") || w.starts_with("https://")) || w.ends_with(".git") {
                    bail!(
                        "Dockerfile line {}: ADD {w}: only http:// and https:// URLs of files are supported (not git repositories)",
                        i.line
                    );
                }
                urls.push(w);
                continue;
            }
            let rel = Path::new(w.trim_start_matches('/'));
            if rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                bail!(
                    "Dockerfile line {}: {w:?} is outside the {}",
                    i.line,
                    root.what()
                );
            }
            let (dir, pat) = match rel.file_name().map(|f| f.to_string_lossy().into_owned()) {
                Some(f) if f.contains('*') || f.contains('?') => {
                    (rel.parent().unwrap_or(Path::new("")).to_path_buf(), Some(f))
                }
                _ => (rel.to_path_buf(), None),
            };
            match pat {
                Some(p) => {
                    let listed = root
                        .resolve(&dir)
                        .and_then(|d| Ok(std::fs::read_dir(d)?))
                        .with_context(|| format!("Dockerfile line {}: {w}", i.line))?;
                    let mut found: Vec<PathBuf> = listed
                        .flatten()
                        .filter(|e| glob(&p, &e.file_name().to_string_lossy()))
                        .map(|e| dir.join(e.file_name()))
                        .filter(|r| !root.ignored(r))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        bail!(
                            "Dockerfile line {}: nothing in the {} matches {w:?}",
                            i.line,
                            root.what()
                        );
                    }
                    sources.extend(found);
                }
                None => {
                    if root.ignored(rel) || root.resolve(rel).is_err() {
                        bail!(
                            "Dockerfile line {}: {w:?} is not in the {}{}",
                            i.line,
                            root.what(),
                            if root.is_context() {
                                " (or .dockerignore excludes it)"
                            } else {
                                ""
                            }
                        );
                    }
                    sources.push(rel.to_path_buf());
                }
            }
        }
        if let Some(c) = sources_given.checksum {
            if urls.len() != 1 || !sources.is_empty() {
                bail!(
                    "Dockerfile line {}: ADD --checksum={c} needs exactly one source, an http(s) URL",
                    i.line
                );
            }
        }
        let into_dir = into_dir || sources.len() + urls.len() > 1;
        // The layer's tar: its hash is part of the cache key.
        let mut build = || -> anyhow::Result<Vec<u8>> {
            let mut b = tar::Builder::new(Vec::new());
            b.follow_symlinks(false);
            let dest_rel = dest
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string();
            let mut dirs_made = std::collections::BTreeSet::new();
            let mut parent_dirs = |b: &mut tar::Builder<Vec<u8>>, p: &Path| -> anyhow::Result<()> {
                for a in p.ancestors().collect::<Vec<_>>().into_iter().rev() {
                    if a.as_os_str().is_empty() || !dirs_made.insert(a.to_path_buf()) {
                        continue;
                    }
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, a, &[][..])?;
                }
                Ok(())
            };
            for src in &sources {
                let full = root.resolve(src)?;
                let meta = root.metadata(&full)?;
                if meta.is_dir() {
                    // A directory's contents are copied, not the directory itself.
                    let target = PathBuf::from(&dest_rel);
                    parent_dirs(&mut b, &target)?;
                    append_tree(root, &mut b, &full, src, &target, chown)?;
                } else if add && is_archive(&full) {
                    let target = PathBuf::from(&dest_rel);
                    parent_dirs(&mut b, &target)?;
                    let f = std::fs::File::open(&full)?;
                    let mut ar = tar::Archive::new(berth_image::compress::decompress(
                        std::io::BufReader::new(f),
                    )?);
                    for e in ar.entries()? {
                        let mut e = e?;
                        let p = target.join(
                            e.path()?
                                .components()
                                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                                .collect::<PathBuf>(),
                        );
                        let mut h = e.header().clone();
                        let link = e.link_name()?.map(|l| l.into_owned());
                        match link {
                            Some(l) => {
                                b.append_link(&mut h, &p, &l)?;
                            }
                            None => {
                                b.append_data(&mut h, &p, &mut e)?;
                            }
                        }
                    }
                } else {
                    let target = if into_dir {
                        PathBuf::from(&dest_rel).join(src.file_name().unwrap_or_default())
                    } else {
                        PathBuf::from(&dest_rel)
                    };
                    if let Some(p) = target.parent() {
                        parent_dirs(&mut b, p)?;
                    }
                    append_one(&mut b, &full, &meta, &target, chown)?;
                }
            }
            for url in &urls {
                let name = berth_image::download::file_name(url);
                let target = match (into_dir, name) {
                    (true, Some(n)) => PathBuf::from(&dest_rel).join(n),
                    (true, None) => bail!(
                        "Dockerfile line {}: ADD {url}: the URL names no file to put in {dest} (give the file's name in the destination)",
                        i.line
                    ),
                    (false, _) => PathBuf::from(&dest_rel),
                };
                if let Some(p) = target.parent() {
                    parent_dirs(&mut b, p)?;
                }
                append_download(&mut b, url, sources_given.checksum, &target, chown)
                    .with_context(|| format!("Dockerfile line {}: ADD {url}", i.line))?;
            }
            Ok(b.into_inner()?)
        };
        let text = format!("{} {}", i.cmd, i.rest);
        let cur = self.cur(i)?.clone();
        // A download pinned by --checksum is known before it is made: a cached step
        // is used without downloading it again, as BuildKit does.
        if let (Some(sum), [url]) = (sources_given.checksum, urls.as_slice()) {
            // Where it lands is part of the key: a build ARG may move it.
            let pin = format!("{url} {sum} {dest} {into_dir} {chown:?}");
            return self.step(&[&text, &pin], |bld| {
                let data = build()?;
                bld.commit_layer(&cur, &text, &data)
            });
        }
        let data = build()?;
        let content = Digest::of(&data).to_string();
        self.step(&[&text, &content], |bld| {
            bld.commit_layer(&cur, &text, &data)
        })
    }

    /// Stores `data` as a layer on top of `cur` and makes the image of the step.
    fn commit_layer(
        &mut self,
        cur: &berth_image::ResolvedImage,
        text: &str,
        data: &[u8],
    ) -> anyhow::Result<Digest> {
        let layer = self.engine.images().store_layer(|w| {
            w.write_all(data)
                .with_context(|| "write the layer")
                .map_err(|e| berth_image::Error::invalid(format!("{e:#}")))
        })?;
        let opts = NewImage {
            created_by: format!("/bin/sh -c #(nop) {text}"),
            ..Default::default()
        };
        Ok(self.engine.images().derive(cur, Some(&layer), &opts)?)
    }
}

/// Appends a directory's contents (what the root does not leave out) under `target`.
fn append_tree(
    root: &SourceRoot<'_>,
    b: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    rel: &Path,
    target: &Path,
    chown: Option<(u64, u64)>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        if root.ignored(&r) {
            continue;
        }
        let t = target.join(e.file_name());
        append_one(
            b,
            &e.path(),
            &std::fs::symlink_metadata(e.path())?,
            &t,
            chown,
        )?;
        if e.file_type()?.is_dir() {
            append_tree(root, b, &e.path(), &r, &t, chown)?;
        }
    }
    Ok(())
}

fn is_archive(p: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    let c = berth_image::compress::Compression::sniff(&head[..n]);
    c != berth_image::compress::Compression::None || (n >= 262 && &head[257..262] == b"ustar")
}

/// O_NONBLOCK, for opening a source file (a fifo that took its place never blocks
/// the build; the open file is then checked to be a regular one).
fn libc_flags() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// The sources of a COPY or ADD as written, and ADD's `--checksum`.
#[derive(Clone, Copy)]
pub(super) struct Sources<'a> {
    words: &'a [String],
    checksum: Option<&'a Digest>,
}

/// Downloads `url` (checked against `checksum` when given) and appends it at `target`
/// as docker's ADD does: mode 0600, the server's Last-Modified as mtime, never
/// unpacked.
fn append_download(
    b: &mut tar::Builder<Vec<u8>>,
    url: &str,
    checksum: Option<&Digest>,
    target: &Path,
    chown: Option<(u64, u64)>,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("berth-add").tempdir()?;
    let file = dir.path().join("download");
    let got = berth_image::download::download(url, &file)?;
    if let Some(want) = checksum {
        if &got.digest != want {
            bail!(
                "checksum mismatch: --checksum={want} but the download is {}",
                got.digest
            );
        }
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(got.size);
    let mtime = got
        .last_modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    h.set_mtime(mtime);
    let (u, g) = chown.unwrap_or((0, 0));
    h.set_uid(u);
    h.set_gid(g);
    let f = std::fs::File::open(&file)?;
    b.append_data(&mut h, target, std::io::Read::take(f, got.size))?;
    Ok(())
}

fn append_one(
    b: &mut tar::Builder<Vec<u8>>,
    src: &Path,
    meta: &std::fs::Metadata,
    target: &Path,
    chown: Option<(u64, u64)>,
) -> anyhow::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_metadata(meta);
    // Copied files belong to root unless --chown says otherwise, as with docker.
    let (u, g) = chown.unwrap_or((0, 0));
    h.set_uid(u);
    h.set_gid(g);
    if meta.file_type().is_symlink() {
        let l = std::fs::read_link(src)?;
        b.append_link(&mut h, target, &l)?;
    } else if meta.is_file() {
        // Opened without blocking, checked to be the regular file it was, and read for
        // its recorded size only: a source root may be a build step's, whose files the
        // Dockerfile chose.
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags())
            .open(src)?;
        let now = f.metadata()?;
        if !now.is_file() || now.len() != meta.len() {
            bail!("{} changed while it was copied", src.display());
        }
        b.append_data(&mut h, target, std::io::Read::take(f, meta.len()))?;
    } else {
        // Directories, devices, fifos and sockets: the entry alone, never opened
        // (a device node made by a RUN step must not read the host's device).
        h.set_size(0);
        b.append_data(&mut h, target, &[][..])?;
    }
    Ok(())
}
