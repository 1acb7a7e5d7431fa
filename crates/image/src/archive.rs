//! Image archives in and out.
//!
//! In: an OCI image layout (a directory, or a tar of one, as `skopeo copy oci-archive:`,
//! `podman save --format oci-archive` and `umoci` write it) or a docker archive
//! (`manifest.json` + `repositories`, as `docker save` and `podman save` write it),
//! optionally compressed. The archive is read once, front to back: every file is streamed
//! into the blob store (checked against its name where the name is a digest) and the small
//! JSON documents are kept in memory to be interpreted at the end.
//!
//! Out: the docker archive format as Docker 25 writes it — an OCI layout and a docker
//! `manifest.json` over the same uncompressed layer blobs, which docker, podman and
//! skopeo all read — or a plain OCI layout (tar or directory) with the stored blobs as
//! they are, digests unchanged.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};
use serde_json::{json, Value};

use crate::compress::{self, Compression};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Context, Error, Result};
use crate::image::ResolvedImage;
use crate::oci::{self, Platform};
use crate::reference::Reference;
use crate::store::Store;

/// Documents kept in memory while reading an archive (anything larger is a blob).
const SMALL: u64 = 8 << 20;

/// Annotation holding a full image name (containerd, Docker 25).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest in a layout (a tag, or a full name).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What `save` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    /// docker archive + OCI layout in one tar, uncompressed layers (docker's default).
    DockerArchive,
    /// OCI layout in a tar, blobs as stored.
    OciArchive,
    /// OCI layout in a directory, blobs as stored.
    OciDir,
}

impl std::str::FromStr for SaveFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<SaveFormat> {
        match s {
            "docker-archive" | "docker" => Ok(SaveFormat::DockerArchive),
            "oci-archive" | "oci" => Ok(SaveFormat::OciArchive),
            "oci-dir" => Ok(SaveFormat::OciDir),
            other => Err(Error::invalid(format!(
                "format {other:?}: use docker-archive, oci-archive or oci-dir"
            ))),
        }
    }
}

/// An image that `load` stored.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// Names it was tagged with (none for an untagged image).
    pub names: Vec<String>,
    /// The manifest or index digest stored.
    pub digest: Digest,
    /// The image ID (config digest) for the chosen platform.
    pub id: Digest,
}

/// One file of an archive: stored as a blob, and kept in memory when small.
#[derive(Default)]
struct Files {
    blobs: HashMap<PathBuf, (Digest, u64)>,
    small: HashMap<PathBuf, Vec<u8>>,
    links: HashMap<PathBuf, PathBuf>,
}

impl Files {
    fn resolve(&self, p: &Path) -> PathBuf {
        let mut p = p.to_path_buf();
        for _ in 0..16 {
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        p
    }

    fn blob(&self, p: &Path) -> Result<(Digest, u64)> {
        self.blobs.get(&self.resolve(p)).cloned().ok_or_else(|| {
            Error::invalid(format!(
                "the archive names {:?}, which it does not contain",
                p.display()
            ))
        })
    }

    fn doc(&self, p: &Path) -> Option<&[u8]> {
        self.small.get(&self.resolve(p)).map(Vec::as_slice)
    }
}

/// Normalizes a path inside an archive; refuses `..` and absolute paths.
fn archive_path(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(Error::invalid(format!(
                    "archive entry {:?} leaves the archive ('..' or absolute path)",
                    raw.display()
                )))
            }
        }
    }
    Ok(out)
}

/// The digest a layout path names (`blobs/sha256/<hex>`), if it names one.
fn digest_in_path(p: &Path) -> Result<Option<Digest>> {
    let parts: Vec<_> = p.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [b, alg, hex] if b == "blobs" => {
            if alg != "sha256" {
                return Err(Error::Unsupported(format!(
                    "archive blob {:?}: only sha256 digests are supported",
                    p.display()
                )));
            }
            Ok(Some(format!("sha256:{hex}").parse().map_err(|e| {
                Error::invalid(format!("archive blob {:?}: {e}", p.display()))
            })?))
        }
        _ => Ok(None),
    }
}

fn is_document(p: &Path) -> bool {
    matches!(
        p.to_str(),
        Some("index.json" | "oci-layout" | "manifest.json" | "repositories")
    )
}

impl Store {
    fn take_file(
        &self,
        files: &mut Files,
        path: PathBuf,
        size: u64,
        mut r: impl Read,
    ) -> Result<()> {
        let expected = digest_in_path(&path)?;
        if is_document(&path) {
            if size > SMALL {
                return Err(Error::invalid(format!(
                    "archive file {:?} is too large ({size} bytes)",
                    path.display()
                )));
            }
            let mut buf = Vec::with_capacity(size as usize);
            r.read_to_end(&mut buf)
                .ctx(|| format!("read {}", path.display()))?;
            files.small.insert(path, buf);
            return Ok(());
        }
        if let Some(d) = &expected {
            if self.has_blob(d) {
                let mut buf = Vec::new();
                if size <= SMALL {
                    r.read_to_end(&mut buf)
                        .ctx(|| format!("read {}", path.display()))?;
                    if buf.first() == Some(&b'{') {
                        files.small.insert(path.clone(), buf);
                    }
                } else {
                    std::io::copy(&mut r, &mut std::io::sink())
                        .ctx(|| format!("read {}", path.display()))?;
                }
                files.blobs.insert(path, (d.clone(), size));
                return Ok(());
            }
        }
        let mut ingest = self.ingest()?;
        let mut keep = (size <= SMALL).then(Vec::new);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .ctx(|| format!("read archive file {}", path.display()))?;
            if n == 0 {
                break;
            }
            ingest.write_all(&buf[..n]).ctx(|| "write blob")?;
            // Only JSON documents (manifests, configs) are needed in memory, not layers.
            if keep.as_ref().is_some_and(|k| k.is_empty()) && buf[0] != b'{' {
                keep = None;
            }
            if let Some(k) = keep.as_mut() {
                k.extend_from_slice(&buf[..n]);
            }
        }
        let (d, n) = ingest.commit(expected.as_ref()).map_err(|e| match e {
            Error::DigestMismatch(m) => {
                Error::DigestMismatch(format!("archive file {}: {m}", path.display()))
            }
            other => other,
        })?;
        if let Some(k) = keep {
            files.small.insert(path.clone(), k);
        }
        files.blobs.insert(path, (d, n));
        Ok(())
    }

    /// Loads every image of an archive file or layout directory. With `platform`, index
    /// entries are checked to have that platform's image complete.
    pub fn load(&self, path: &Path, platform: &Platform) -> Result<Vec<LoadedImage>> {
        let _lock = self.shared_lock()?;
        let mut files = Files::default();
        let meta = std::fs::metadata(path).ctx(|| format!("open {}", path.display()))?;
        if meta.is_dir() {
            self.read_dir_into(path, Path::new(""), &mut files)?;
        } else {
            let f = std::fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
            self.read_tar_into(f, &mut files)
                .map_err(|e| prefix(e, &format!("{}", path.display())))?;
        }
        self.interpret(&files, platform)
    }

    /// Loads every image of an archive read from a stream (e.g. stdin).
    pub fn load_stream(&self, r: impl Read, platform: &Platform) -> Result<Vec<LoadedImage>> {
        let _lock = self.shared_lock()?;
        let mut files = Files::default();
        self.read_tar_into(r, &mut files)?;
        self.interpret(&files, platform)
    }

    fn read_tar_into(&self, r: impl Read, files: &mut Files) -> Result<()> {
        let mut ar = tar::Archive::new(compress::decompress(r)?);
        let entries = ar
            .entries()
            .map_err(|e| Error::invalid(format!("not a tar archive: {e}")))?;
        for e in entries {
            let e = e.map_err(|e| {
                Error::invalid(format!("read archive: {e} (truncated or not a tar?)"))
            })?;
            let raw = e
                .path()
                .map_err(|err| Error::invalid(format!("archive entry name: {err}")))?
                .into_owned();
            let path = archive_path(&raw)?;
            let kind = e.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = e
                    .link_name()
                    .map_err(|err| {
                        Error::invalid(format!("archive entry {:?}: {err}", raw.display()))
                    })?
                    .ok_or_else(|| {
                        Error::invalid(format!("archive link {:?} has no target", raw.display()))
                    })?;
                // Symlinks are relative to their directory, hard links to the archive root.
                let joined = if kind.is_symlink() {
                    path.parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.into_owned()
                };
                files.links.insert(path, normalize(&joined)?);
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                let size = e.size();
                self.take_file(files, path, size, e)?;
            }
        }
        Ok(())
    }

    fn read_dir_into(&self, root: &Path, rel: &Path, files: &mut Files) -> Result<()> {
        let dir = root.join(rel);
        for e in std::fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let e = e.ctx(|| format!("read {}", dir.display()))?;
            let r = rel.join(e.file_name());
            let ty = e
                .file_type()
                .ctx(|| format!("stat {}", e.path().display()))?;
            if ty.is_dir() {
                self.read_dir_into(root, &r, files)?;
            } else if ty.is_file() {
                let f =
                    std::fs::File::open(e.path()).ctx(|| format!("open {}", e.path().display()))?;
                let size = f.metadata().ctx(|| "stat")?.len();
                self.take_file(
                    files,
                    r,
                    size,
                    std::io::BufReader::with_capacity(1 << 20, f),
                )?;
            }
        }
        Ok(())
    }

    fn interpret(&self, files: &Files, platform: &Platform) -> Result<Vec<LoadedImage>> {
        if let Some(index) = files.doc(Path::new("index.json")) {
            if let Some(layout) = files.doc(Path::new("oci-layout")) {
                let v: Value = serde_json::from_slice(layout)
                    .map_err(|e| Error::invalid(format!("oci-layout is not JSON: {e}")))?;
                let ver = v
                    .get("imageLayoutVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !ver.starts_with("1.") {
                    return Err(Error::Unsupported(format!(
                        "OCI layout version {ver:?} (1.x is supported)"
                    )));
                }
            }
            return self.interpret_layout(files, index, platform);
        }
        if let Some(m) = files.doc(Path::new("manifest.json")) {
            return self.interpret_docker(files, m);
        }
        Err(Error::invalid(
            "not an image archive: it has neither index.json (OCI layout) nor manifest.json (docker archive)",
        ))
    }

    fn interpret_layout(
        &self,
        files: &Files,
        index: &[u8],
        platform: &Platform,
    ) -> Result<Vec<LoadedImage>> {
        let index: ImageIndex = serde_json::from_slice(index)
            .map_err(|e| Error::invalid(format!("index.json: {e}")))?;
        // Docker 25 archives carry names in manifest.json too; use them for tag-only refs.
        let docker_names: HashMap<Digest, Vec<String>> = match files.doc(Path::new("manifest.json"))
        {
            Some(m) => docker_entries(m)?
                .into_iter()
                .filter_map(|e| files.blob(&e.config).ok().map(|(d, _)| (d, e.repo_tags)))
                .collect(),
            None => HashMap::new(),
        };
        let mut out: Vec<LoadedImage> = Vec::new();
        for (i, desc) in index.manifests().iter().enumerate() {
            let digest = oci::digest_of(desc)?;
            if !self.has_blob(&digest) {
                return Err(Error::invalid(format!(
                    "index.json manifests[{i}] names blob {digest}, which the layout does not contain"
                )));
            }
            let resolved = self.resolve_digest(&digest, platform).map_err(|e| {
                Error::invalid(format!("index.json manifests[{i}] ({digest}): {e}"))
            })?;
            self.check_complete(&resolved)?;
            let annotations = desc.annotations().clone().unwrap_or_default();
            let mut names = Vec::new();
            let full = annotations.get(ANNOTATION_IMAGE_NAME).cloned().or_else(|| {
                annotations
                    .get(ANNOTATION_REF_NAME)
                    .filter(|r| r.contains('/') || r.contains(':'))
                    .cloned()
            });
            if let Some(n) = full {
                names.push(normal_name(&n)?);
            } else if let Some(tags) = docker_names.get(&resolved.config_digest) {
                for t in tags {
                    names.push(normal_name(t)?);
                }
            }
            let media_type = oci::media_type(desc);
            if names.is_empty() {
                self.set_image(&digest.to_string(), &digest, &media_type)?;
            }
            for n in &names {
                self.set_image(n, &digest, &media_type)?;
            }
            match out.iter_mut().find(|l| l.digest == digest) {
                Some(l) => l.names.extend(names),
                None => out.push(LoadedImage {
                    names,
                    digest,
                    id: resolved.config_digest,
                }),
            }
        }
        if out.is_empty() {
            return Err(Error::invalid("index.json lists no images"));
        }
        Ok(out)
    }

    fn interpret_docker(&self, files: &Files, manifest: &[u8]) -> Result<Vec<LoadedImage>> {
        let mut out = Vec::new();
        for (i, e) in docker_entries(manifest)?.into_iter().enumerate() {
            let (config_digest, config_size) = files
                .blob(&e.config)
                .map_err(|err| Error::invalid(format!("manifest.json[{i}].Config: {err}")))?;
            let config: Value =
                serde_json::from_slice(&self.read_blob(&config_digest)?).map_err(|err| {
                    Error::invalid(format!(
                        "manifest.json[{i}].Config {:?} is not JSON: {err}",
                        e.config.display()
                    ))
                })?;
            let diff_ids = oci::diff_ids(&config)?;
            if diff_ids.len() != e.layers.len() {
                return Err(Error::invalid(format!(
                    "manifest.json[{i}] lists {} layers but its config has {} diff_ids",
                    e.layers.len(),
                    diff_ids.len()
                )));
            }
            let mut layers = Vec::new();
            for (j, l) in e.layers.iter().enumerate() {
                let (d, size) = files.blob(l).map_err(|err| {
                    Error::invalid(format!("manifest.json[{i}].Layers[{j}]: {err}"))
                })?;
                let mut head = [0u8; 8];
                let n = self
                    .open_blob(&d)?
                    .read(&mut head)
                    .ctx(|| format!("read layer {d}"))?;
                let c = Compression::sniff(&head[..n]);
                if c == Compression::None && d != diff_ids[j] {
                    return Err(Error::DigestMismatch(format!(
                        "manifest.json[{i}].Layers[{j}] {:?} hashes to {d}, but the config's diff_id is {}",
                        l.display(),
                        diff_ids[j]
                    )));
                }
                layers.push(oci::descriptor(c.oci_media_type(), &d, size));
            }
            let manifest = oci::image_manifest(&config_digest, config_size, layers)?;
            let digest =
                self.put_blob(&serde_json::to_vec(&manifest).expect("manifests serialize"))?;
            let mut names = Vec::new();
            for t in &e.repo_tags {
                names.push(normal_name(t)?);
            }
            if names.is_empty() {
                self.set_image(&digest.to_string(), &digest, oci::OCI_MANIFEST)?;
            }
            for n in &names {
                self.set_image(n, &digest, oci::OCI_MANIFEST)?;
            }
            out.push(LoadedImage {
                names,
                digest,
                id: config_digest,
            });
        }
        if out.is_empty() {
            return Err(Error::invalid("manifest.json lists no images"));
        }
        Ok(out)
    }

    /// Checks that an image's config and layers are all present.
    pub fn check_complete(&self, img: &ResolvedImage) -> Result<()> {
        for (blob, media_type, _, _) in img.layers()? {
            Compression::from_media_type(&media_type)?;
            if !self.has_blob(&blob) {
                return Err(Error::invalid(format!(
                    "image {} names layer {blob}, which is missing",
                    img.manifest_digest
                )));
            }
        }
        Ok(())
    }

    /// Writes images as an archive (docker or OCI) to `out`.
    pub fn save(
        &self,
        images: &[String],
        format: SaveFormat,
        platform: &Platform,
        out: impl Write,
    ) -> Result<()> {
        let _lock = self.shared_lock()?;
        let mut w = TarOut(tar::Builder::new(out));
        match format {
            SaveFormat::DockerArchive => self.save_docker(images, platform, &mut w)?,
            SaveFormat::OciArchive => self.save_oci(images, &mut w)?,
            SaveFormat::OciDir => return Err(Error::invalid("oci-dir is written with save_dir")),
        }
        w.0.into_inner()
            .ctx(|| "finish the archive")?
            .flush()
            .ctx(|| "write the archive")
    }

    /// Writes images as an OCI layout directory (created if missing; blobs already there
    /// are kept, index.json is replaced).
    pub fn save_dir(&self, images: &[String], dir: &Path) -> Result<()> {
        let _lock = self.shared_lock()?;
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .ctx(|| format!("create {}", dir.display()))?;
        // Images already in the layout stay listed, unless a saved image takes their name.
        let existing: Vec<Descriptor> = match std::fs::read(dir.join("index.json")) {
            Ok(b) => serde_json::from_slice::<ImageIndex>(&b)
                .map_err(|e| Error::invalid(format!("{}/index.json: {e}", dir.display())))?
                .manifests()
                .clone(),
            Err(_) => Vec::new(),
        };
        let mut w = DirOut {
            dir: dir.to_path_buf(),
            keep: existing,
        };
        self.save_oci(images, &mut w)
    }

    fn save_oci(&self, images: &[String], w: &mut dyn Sink) -> Result<()> {
        let mut manifests = Vec::new();
        let mut written = std::collections::HashSet::new();
        for what in images {
            let rec = self.find_image(what)?;
            for b in self.referenced_blobs(&rec.digest)? {
                if !self.has_blob(&b) || !written.insert(b.clone()) {
                    continue;
                }
                let f = self.open_blob(&b)?;
                let size = f.metadata().ctx(|| "stat blob")?.len();
                w.file(
                    &format!("blobs/sha256/{}", b.hex()),
                    size,
                    &mut std::io::BufReader::with_capacity(1 << 20, f),
                )?;
            }
            let size = std::fs::metadata(self.blob_path(&rec.digest))
                .ctx(|| "stat blob")?
                .len();
            let mut d = oci::descriptor(&rec.media_type, &rec.digest, size);
            if let Ok(r) = rec.name.parse::<Reference>() {
                if !rec.name.starts_with("sha256:") {
                    let mut a = std::collections::HashMap::new();
                    a.insert(ANNOTATION_IMAGE_NAME.to_string(), r.to_string());
                    if let Some(t) = &r.tag {
                        a.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
                    }
                    d.set_annotations(Some(a));
                }
            }
            manifests.push(d);
        }
        write_layout_docs(w, manifests)
    }

    fn save_docker(&self, images: &[String], platform: &Platform, w: &mut dyn Sink) -> Result<()> {
        let mut docker_manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut index = Vec::new();
        let mut written = std::collections::HashSet::new();
        let mut layer_sizes: HashMap<Digest, u64> = HashMap::new();
        for what in images {
            let rec = self.find_image(what)?;
            let img = self.resolve_record(&rec, platform)?;
            let config_bytes = self.read_blob(&img.config_digest)?;
            if written.insert(img.config_digest.clone()) {
                w.file(
                    &blob_name(&img.config_digest),
                    config_bytes.len() as u64,
                    &mut &config_bytes[..],
                )?;
            }
            let mut layer_paths = Vec::new();
            let mut layers = Vec::new();
            for (blob, media_type, _, diff_id) in img.layers()? {
                let size = match layer_sizes.get(&diff_id) {
                    Some(s) => *s,
                    None => {
                        let s = self.write_uncompressed_layer(&blob, &media_type, &diff_id, w)?;
                        layer_sizes.insert(diff_id.clone(), s);
                        s
                    }
                };
                layer_paths.push(blob_name(&diff_id));
                layers.push(oci::descriptor(
                    Compression::None.oci_media_type(),
                    &diff_id,
                    size,
                ));
            }
            let manifest =
                oci::image_manifest(&img.config_digest, config_bytes.len() as u64, layers)?;
            let mbytes = serde_json::to_vec(&manifest).expect("manifests serialize");
            let mdigest = Digest::of(&mbytes);
            if written.insert(mdigest.clone()) {
                w.file(&blob_name(&mdigest), mbytes.len() as u64, &mut &mbytes[..])?;
            }
            let mut desc = oci::descriptor(oci::OCI_MANIFEST, &mdigest, mbytes.len() as u64);
            let mut tags = Vec::new();
            // Only tagged names become RepoTags (a digest-pinned name has no tag to give,
            // and `latest` would overwrite someone's image on load).
            if let Some((r, tag)) = rec
                .name
                .parse::<Reference>()
                .ok()
                .filter(|_| !rec.name.starts_with("sha256:"))
                .and_then(|r| r.tag.clone().map(|t| (r, t)))
            {
                {
                    tags.push(format!("{}:{tag}", r.familiar_name()));
                    let mut a = std::collections::HashMap::new();
                    a.insert(ANNOTATION_IMAGE_NAME.to_string(), r.to_string());
                    a.insert(ANNOTATION_REF_NAME.to_string(), tag.clone());
                    desc.set_annotations(Some(a));
                    if let Some(top) = img.diff_ids.last() {
                        repositories
                            .entry(r.familiar_name())
                            .or_default()
                            .insert(tag, top.hex().to_string());
                    }
                }
            }
            index.push(desc);
            docker_manifest.push(json!({
                "Config": blob_name(&img.config_digest),
                "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
                "Layers": layer_paths,
            }));
        }
        let m = serde_json::to_vec(&docker_manifest).expect("JSON");
        w.file("manifest.json", m.len() as u64, &mut &m[..])?;
        let r = serde_json::to_vec(&repositories).expect("JSON");
        w.file("repositories", r.len() as u64, &mut &r[..])?;
        write_layout_docs(w, index)
    }

    /// Writes a layer uncompressed (its blob digest is then its diff ID); returns the size.
    fn write_uncompressed_layer(
        &self,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
        w: &mut dyn Sink,
    ) -> Result<u64> {
        let name = blob_name(diff_id);
        let f = self.open_blob(blob)?;
        if Compression::from_media_type(media_type)? == Compression::None && blob == diff_id {
            let size = f.metadata().ctx(|| "stat blob")?.len();
            w.file(
                &name,
                size,
                &mut std::io::BufReader::with_capacity(1 << 20, f),
            )?;
            return Ok(size);
        }
        // The tar header needs the size first: decompress into a temporary file.
        let tmp =
            tempfile::tempfile_in(self.root().join("ingest")).ctx(|| "create a temporary file")?;
        let mut hw = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, tmp));
        std::io::copy(
            &mut compress::decompress(std::io::BufReader::with_capacity(1 << 20, f))?,
            &mut hw,
        )
        .map_err(|e| Error::invalid(format!("layer {blob}: {e}")))?;
        let (got, size, bw) = hw.finish();
        if &got != diff_id {
            return Err(Error::DigestMismatch(format!(
                "layer {blob}: its uncompressed content hashes to {got}, but the image config says {diff_id}"
            )));
        }
        let mut tmp = bw
            .into_inner()
            .map_err(|e| Error::io("flush", e.into_error()))?;
        std::io::Seek::rewind(&mut tmp).ctx(|| "rewind")?;
        w.file(
            &name,
            size,
            &mut std::io::BufReader::with_capacity(1 << 20, tmp),
        )?;
        Ok(size)
    }

    /// Writes an image's layers, flattened into one root filesystem, as a tar.
    pub fn export_image(&self, img: &ResolvedImage, out: impl Write) -> Result<()> {
        let _lock = self.shared_lock()?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-export-")
            .tempdir_in(self.root().join("s"))
            .ctx(|| "create a temporary directory")?;
        let mut u = crate::unpack::Unpacker::new(tmp.path(), crate::unpack::Whiteouts::Apply)?;
        for (blob, _, _, _) in img.layers()? {
            let f = self.open_blob(&blob)?;
            compress::unpack_ahead(std::io::BufReader::with_capacity(1 << 20, f), |tar| {
                u.apply(tar)
            })
            .map_err(|e| Error::invalid(format!("layer {blob}: {e}")))?;
        }
        let r = crate::diff::write_layer(tmp.path(), &[], out).map(drop);
        let p = tmp.keep();
        crate::unpack::remove_tree(&p)?;
        r
    }
}

fn prefix(e: Error, what: &str) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{what}: {m}")),
        other => other,
    }
}

fn normalize(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(Error::invalid(format!(
                        "archive link to {:?} leaves the archive",
                        p.display()
                    )));
                }
            }
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(Error::invalid(format!(
                    "archive link to {:?} is absolute",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

/// A name from an archive, normalized (`busybox:1` → `docker.io/library/busybox:1`).
fn normal_name(n: &str) -> Result<String> {
    Ok(n.parse::<Reference>()
        .map_err(|e| Error::invalid(format!("image name in the archive: {e}")))?
        .to_string())
}

struct DockerEntry {
    config: PathBuf,
    repo_tags: Vec<String>,
    layers: Vec<PathBuf>,
}

fn docker_entries(bytes: &[u8]) -> Result<Vec<DockerEntry>> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("manifest.json is not JSON: {e}")))?;
    let arr = v
        .as_array()
        .ok_or_else(|| Error::invalid("manifest.json: expected a list of images"))?;
    arr.iter()
        .enumerate()
        .map(|(i, e)| {
            let config = e
                .get("Config")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid(format!("manifest.json[{i}] has no Config")))?;
            let repo_tags = e
                .get("RepoTags")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let layers = e
                .get("Layers")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::invalid(format!("manifest.json[{i}] has no Layers")))?
                .iter()
                .map(|l| {
                    l.as_str()
                        .ok_or_else(|| {
                            Error::invalid(format!("manifest.json[{i}].Layers holds a non-string"))
                        })
                        .and_then(|s| archive_path(Path::new(s)))
                })
                .collect::<Result<_>>()?;
            Ok(DockerEntry {
                config: archive_path(Path::new(config))?,
                repo_tags,
                layers,
            })
        })
        .collect()
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn write_layout_docs(w: &mut dyn Sink, manifests: Vec<Descriptor>) -> Result<()> {
    let name = |d: &Descriptor| {
        d.annotations().as_ref().and_then(|a| {
            a.get(ANNOTATION_IMAGE_NAME)
                .or_else(|| a.get(ANNOTATION_REF_NAME))
                .cloned()
        })
    };
    let mut all: Vec<Descriptor> = w
        .kept()
        .into_iter()
        .filter(|old| {
            !manifests
                .iter()
                .any(|m| m.digest() == old.digest() || (name(m).is_some() && name(m) == name(old)))
        })
        .collect();
    all.extend(manifests);
    let manifests = all;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    w.file("oci-layout", layout.len() as u64, &mut &layout[..])?;
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(oci::OCI_INDEX)
        .manifests(manifests)
        .build()
        .map_err(|e| Error::invalid(format!("build index.json: {e}")))?;
    let bytes = serde_json::to_vec(&index).expect("JSON");
    w.file("index.json", bytes.len() as u64, &mut &bytes[..])
}

/// Where `save` writes files: a tar stream or a directory.
trait Sink {
    fn file(&mut self, name: &str, size: u64, r: &mut dyn Read) -> Result<()>;
    /// Index entries already in the destination, to keep.
    fn kept(&self) -> Vec<Descriptor> {
        Vec::new()
    }
}

struct TarOut<W: Write>(tar::Builder<W>);

impl<W: Write> Sink for TarOut<W> {
    fn file(&mut self, name: &str, size: u64, r: &mut dyn Read) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        let mut limited = r.take(size);
        self.0
            .append_data(&mut h, name, &mut limited)
            .ctx(|| format!("write {name} to the archive"))
    }
}

struct DirOut {
    dir: PathBuf,
    keep: Vec<Descriptor>,
}

impl Sink for DirOut {
    fn file(&mut self, name: &str, _size: u64, r: &mut dyn Read) -> Result<()> {
        let dest = self.dir.join(name);
        if name.starts_with("blobs/") && dest.exists() {
            return Ok(());
        }
        let parent = dest.parent().expect("has a parent");
        let mut tmp = tempfile::NamedTempFile::new_in(parent)
            .ctx(|| format!("create a file in {}", parent.display()))?;
        std::io::copy(r, &mut tmp).ctx(|| format!("write {}", dest.display()))?;
        tmp.persist(&dest)
            .map_err(|e| Error::io(format!("write {}", dest.display()), e.error))?;
        Ok(())
    }

    fn kept(&self) -> Vec<Descriptor> {
        self.keep.clone()
    }
}
