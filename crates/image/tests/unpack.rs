//! The layer unpacker against real tar streams: every entry type and its metadata,
//! overlay and applied whiteouts, hostile entries (which must fail or stay beneath the
//! target, never write outside it), and failing layers through the store.
//!
//! Runs as root: it makes device nodes, chowns, and sets trusted.* xattrs.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_image::oci;
use berth_image::snapshot::Snapshotter;
use berth_image::unpack::{Stats, Unpacker, Whiteouts};
use berth_image::{Digest, Error, ResolvedImage, Store};
use tar::{EntryType, Header};

const MTIME: u64 = 1_600_000_000;

/// A layer tar built entry by entry. Names and link targets are written as raw header
/// bytes, so `..` and absolute names get through (`Header::set_path` refuses them).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    /// Appends one entry; `edit` may change the header before its checksum is set.
    fn entry(
        &mut self,
        name: &str,
        kind: EntryType,
        data: &[u8],
        edit: impl FnOnce(&mut Header),
    ) -> &mut Layer {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        edit(&mut h);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.entry(name, EntryType::Regular, data, |_| {})
    }

    fn dir(&mut self, name: &str) -> &mut Layer {
        self.entry(name, EntryType::Directory, b"", |_| {})
    }

    fn link(&mut self, kind: EntryType, name: &str, target: &str) -> &mut Layer {
        self.entry(name, kind, b"", |h| {
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes())
        })
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.link(EntryType::Symlink, name, target)
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.link(EntryType::Link, name, target)
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        let mut data = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where <len> counts the whole record, itself included.
            let rest = k.len() + v.len() + 3;
            let mut len = rest;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.entry("PaxHeaders/next", EntryType::XHeader, &data, |_| {})
    }

    fn finish(&mut self) -> Vec<u8> {
        self.0.finish().unwrap();
        self.0.get_ref().clone()
    }
}

fn tar_of(build: impl FnOnce(&mut Layer)) -> Vec<u8> {
    let mut l = Layer::new();
    build(&mut l);
    l.finish()
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn lstat(p: impl AsRef<Path>) -> std::fs::Metadata {
    std::fs::symlink_metadata(p.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// `<tmp>/root` to unpack into, beside `<tmp>/outside/keep`, which no layer may touch.
struct Sandbox {
    tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        Sandbox { tmp, root, outside }
    }

    fn unpack(&self, mode: Whiteouts, tar: &[u8]) -> berth_image::Result<Stats> {
        Unpacker::new(&self.root, mode)?.apply(tar)
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Nothing appeared beside the root, and the outside directory is as it was.
    fn assert_contained(&self) {
        assert_eq!(names(self.tmp.path()), set(&["outside", "root"]));
        assert_eq!(names(&self.outside), set(&["keep"]));
        let keep = self.outside.join("keep");
        assert_eq!(std::fs::read(&keep).unwrap(), b"keep");
        assert_eq!(
            lstat(&keep).nlink(),
            1,
            "something hard-linked the outside file"
        );
    }

    /// `tar` fails (in `mode`) with a message naming `entry`, and writes nothing outside.
    fn assert_refused(&self, mode: Whiteouts, tar: &[u8], entry: &str) -> String {
        let err = self
            .unpack(mode, tar)
            .expect_err("a hostile layer must fail")
            .to_string();
        assert!(
            err.contains(&format!("{entry:?}")),
            "error does not name {entry:?}: {err}"
        );
        self.assert_contained();
        err
    }
}

/// Stores a one-layer image whose config says `diff_id`; returns it resolved.
fn store_image(
    store: &Store,
    blob: &[u8],
    media_type: &str,
    diff_id: &Digest,
    tag: &str,
) -> ResolvedImage {
    let digest = store.put_blob(blob).unwrap();
    let config = serde_json::json!({
        "architecture": oci::Platform::host().arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    });
    let reference: berth_image::Reference = format!("localhost/unpack-test:{tag}").parse().unwrap();
    let layer = oci::descriptor(media_type, &digest, blob.len() as u64);
    store
        .store_image(&config, vec![layer], Some(&reference))
        .unwrap();
    store
        .resolve(&reference.to_string(), &oci::Platform::host())
        .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A failed unpack through `prepare` left no temporary or snapshot directory and no
/// container record.
fn assert_store_clean(store: &Store) {
    assert_eq!(
        names(&store.root().join("s")),
        BTreeSet::new(),
        "leftovers in s/"
    );
    assert_eq!(
        names(&store.root().join("c")),
        BTreeSet::new(),
        "leftovers in c/"
    );
    assert!(store.containers().unwrap().is_empty());
}

// ---- entry types and metadata ----

#[test]
fn files_dirs_modes_owners_and_mtimes() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.entry("etc/", EntryType::Directory, b"", |h| {
            h.set_mode(0o750);
            h.set_uid(7);
            h.set_gid(8);
            h.set_mtime(1_000_000);
        })
        .entry("etc/conf", EntryType::Regular, b"hello\n", |h| {
            h.set_mode(0o640);
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_mtime(1_234_567_890);
        })
        .entry("bin/su", EntryType::Regular, b"#!/bin/true\n", |h| {
            h.set_mode(0o4755)
        })
        .entry("bin/wall", EntryType::Regular, b"x", |h| h.set_mode(0o2711))
        .entry("tmp/", EntryType::Directory, b"", |h| h.set_mode(0o1777))
        .pax(&[("mtime", b"1500000000.25")])
        .file("precise", b"p");
    });
    let stats = sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    assert_eq!(stats.bytes, 6 + 12 + 1 + 1);

    let etc = lstat(sb.at("etc"));
    assert!(etc.is_dir());
    assert_eq!((etc.mode() & 0o7777, etc.uid(), etc.gid()), (0o750, 7, 8));
    // Set after its contents were written.
    assert_eq!(etc.mtime(), 1_000_000);

    let conf = lstat(sb.at("etc/conf"));
    assert!(conf.is_file());
    assert_eq!(std::fs::read(sb.at("etc/conf")).unwrap(), b"hello\n");
    assert_eq!(
        (conf.mode() & 0o7777, conf.uid(), conf.gid()),
        (0o640, 1234, 5678)
    );
    assert_eq!(conf.mtime(), 1_234_567_890);

    assert_eq!(lstat(sb.at("bin/su")).mode() & 0o7777, 0o4755);
    assert_eq!(lstat(sb.at("bin/wall")).mode() & 0o7777, 0o2711);
    assert_eq!(lstat(sb.at("tmp")).mode() & 0o7777, 0o1777);
    // A parent the layer did not list is created 0755.
    assert_eq!(lstat(sb.at("bin")).mode() & 0o7777, 0o755);

    let precise = lstat(sb.at("precise"));
    assert_eq!(
        (precise.mtime(), precise.mtime_nsec()),
        (1_500_000_000, 250_000_000)
    );
    sb.assert_contained();
}

#[test]
fn symlinks_and_hardlinks() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.file("data/file", b"content")
            .entry("data/rel", EntryType::Symlink, b"", |h| {
                h.as_old_mut().linkname[..4].copy_from_slice(b"file");
                h.set_uid(33);
                h.set_gid(44);
                h.set_mtime(1_111_111_111);
            })
            .symlink("abs", "/etc/passwd")
            .symlink("dangling", "../../nowhere")
            .hardlink("data/hard", "data/file")
            .hardlink("hard-abs", "/data/file");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();

    assert_eq!(
        std::fs::read_link(sb.at("data/rel")).unwrap(),
        Path::new("file")
    );
    assert_eq!(std::fs::read(sb.at("data/rel")).unwrap(), b"content");
    let rel = lstat(sb.at("data/rel"));
    assert!(rel.file_type().is_symlink());
    assert_eq!((rel.uid(), rel.gid(), rel.mtime()), (33, 44, 1_111_111_111));
    // Symlink targets are stored as they are, never resolved at unpack time.
    assert_eq!(
        std::fs::read_link(sb.at("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(sb.at("dangling")).unwrap(),
        Path::new("../../nowhere")
    );

    let file = lstat(sb.at("data/file"));
    assert_eq!(file.nlink(), 3);
    assert_eq!(lstat(sb.at("data/hard")).ino(), file.ino());
    // An absolute hardlink target names a path in the layer.
    assert_eq!(lstat(sb.at("hard-abs")).ino(), file.ino());
    sb.assert_contained();
}

#[test]
fn device_nodes_and_fifo() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.entry("dev/null", EntryType::Char, b"", |h| {
            h.set_mode(0o666);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        })
        .entry("dev/loop9", EntryType::Block, b"", |h| {
            h.set_mode(0o660);
            h.set_gid(6);
            h.set_device_major(7).unwrap();
            h.set_device_minor(9).unwrap();
        })
        .entry("run/fifo", EntryType::Fifo, b"", |h| {
            h.set_mode(0o620);
            h.set_uid(1000);
        });
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();

    let null = lstat(sb.at("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let blk = lstat(sb.at("dev/loop9"));
    assert!(blk.file_type().is_block_device());
    assert_eq!(
        (blk.rdev(), blk.mode() & 0o7777, blk.gid()),
        (rustix::fs::makedev(7, 9), 0o660, 6)
    );
    let fifo = lstat(sb.at("run/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!((fifo.mode() & 0o7777, fifo.uid()), (0o620, 1000));
    sb.assert_contained();
}

#[test]
fn gnu_sparse_file() {
    // A file with data at 0 and at 1 MiB, and holes between and after; the tar crate
    // writes it as a GNU sparse entry (it reads the holes with SEEK_DATA/SEEK_HOLE).
    const LEN: u64 = 2 << 20;
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(LEN).unwrap();
        f.write_all_at(&[b'a'; 4096], 0).unwrap();
        f.write_all_at(&[b'b'; 4096], 1 << 20).unwrap();
    }
    let mut b = tar::Builder::new(Vec::new());
    b.sparse(true);
    b.append_file("sparse", &mut std::fs::File::open(&path).unwrap())
        .unwrap();
    let tar = b.into_inner().unwrap();
    assert_eq!(
        Header::from_byte_slice(&tar[..512]).entry_type(),
        EntryType::GNUSparse
    );

    let sb = Sandbox::new();
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    let got = std::fs::read(sb.at("sparse")).unwrap();
    assert_eq!(got, std::fs::read(&path).unwrap());
    assert_eq!(got.len() as u64, LEN);
    let meta = lstat(sb.at("sparse"));
    assert!(
        meta.blocks() * 512 < LEN / 2,
        "not sparse: {} blocks",
        meta.blocks()
    );
    sb.assert_contained();
}

#[test]
fn pax_xattrs_and_file_capability() {
    // vfs_cap_data revision 2, effective: cap_net_bind_service (10) permitted.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&[0u8; 12]);
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.pax(&[
            ("SCHILY.xattr.user.foo", b"bar\0baz"),
            ("SCHILY.xattr.trusted.t", b"1"),
        ])
        .dir("d/")
        .pax(&[
            ("SCHILY.xattr.user.foo", b"file"),
            ("SCHILY.xattr.security.capability", &cap),
        ])
        .entry("d/ping", EntryType::Regular, b"\x7fELF", |h| {
            h.set_mode(0o755);
            h.set_uid(0);
        })
        .pax(&[("SCHILY.xattr.trusted.sym", b"on the link")])
        .symlink("d/link", "ping");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    assert_eq!(xattr(&sb.at("d"), "user.foo").unwrap(), b"bar\0baz");
    assert_eq!(xattr(&sb.at("d"), "trusted.t").unwrap(), b"1");
    assert_eq!(xattr(&sb.at("d/ping"), "user.foo").unwrap(), b"file");
    assert_eq!(xattr(&sb.at("d/ping"), "security.capability").unwrap(), cap);
    assert_eq!(lstat(sb.at("d/ping")).mode() & 0o7777, 0o755);
    assert_eq!(
        xattr(&sb.at("d/link"), "trusted.sym").unwrap(),
        b"on the link"
    );
    assert_eq!(
        xattr(&sb.at("d/ping"), "trusted.sym"),
        None,
        "set through the link"
    );
    sb.assert_contained();
}

// ---- whiteouts ----

#[test]
fn overlay_whiteout_becomes_a_char_device() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.file("etc/old", b"replaced by the whiteout")
            .file("etc/.wh.old", b"")
            .file(".wh.gone", b"");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    for p in ["etc/old", "gone"] {
        let m = lstat(sb.at(p));
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!((m.rdev(), m.uid(), m.gid()), (0, 0, 0), "{p}");
    }
    assert_eq!(names(&sb.at("etc")), set(&["old"]));
    assert!(!sb.at(".wh.gone").exists());
    sb.assert_contained();
}

#[test]
fn overlay_opaque_marks_the_directory() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.dir("var/")
            .dir("var/cache/")
            .file("var/cache/.wh..wh..opq", b"")
            .file("var/cache/new", b"n");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    assert_eq!(
        xattr(&sb.at("var/cache"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(xattr(&sb.at("var"), "trusted.overlay.opaque"), None);
    assert_eq!(names(&sb.at("var/cache")), set(&["new"]));
    sb.assert_contained();
}

#[test]
fn overlay_opaque_root_is_refused() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.file("./.wh..wh..opq", b"");
    });
    sb.assert_refused(Whiteouts::Overlay, &tar, "./.wh..wh..opq");
}

#[test]
fn apply_whiteouts_delete_lower_files() {
    let sb = Sandbox::new();
    let lower = tar_of(|l| {
        l.file("top.txt", b"1")
            .file("a/keep", b"k")
            .file("a/gone", b"g")
            .file("b/deep/x", b"x");
    });
    let upper = tar_of(|l| {
        l.file(".wh.top.txt", b"")
            .file("a/.wh.gone", b"")
            .file(".wh.b", b"")
            .file("a/.wh.never-there", b"");
    });
    let mut u = Unpacker::new(&sb.root, Whiteouts::Apply).unwrap();
    u.apply(&lower[..]).unwrap();
    u.apply(&upper[..]).unwrap();
    assert_eq!(names(&sb.root), set(&["a"]));
    assert_eq!(names(&sb.at("a")), set(&["keep"]));
    sb.assert_contained();
}

#[test]
fn apply_opaque_clears_lower_contents_only() {
    let sb = Sandbox::new();
    let lower = tar_of(|l| {
        l.file("a/one", b"1")
            .file("a/sub/two", b"2")
            .file("a/same", b"lower")
            .file("b/three", b"3");
    });
    let upper = tar_of(|l| {
        l.file("a/before", b"b")
            .file("a/same", b"upper")
            .file("a/.wh..wh..opq", b"")
            .file("a/after", b"a");
    });
    let mut u = Unpacker::new(&sb.root, Whiteouts::Apply).unwrap();
    u.apply(&lower[..]).unwrap();
    u.apply(&upper[..]).unwrap();
    assert_eq!(names(&sb.at("a")), set(&["after", "before", "same"]));
    assert_eq!(std::fs::read(sb.at("a/same")).unwrap(), b"upper");
    assert_eq!(names(&sb.at("b")), set(&["three"]));
    assert_eq!(xattr(&sb.at("a"), "trusted.overlay.opaque"), None);
    sb.assert_contained();
}

// ---- hostile input ----

#[test]
fn dotdot_entries_are_refused() {
    for (name, mode) in [
        ("../escape", Whiteouts::Overlay),
        ("a/../../escape", Whiteouts::Apply),
        ("..", Whiteouts::Overlay),
    ] {
        let sb = Sandbox::new();
        let tar = tar_of(|l| {
            l.file("ok", b"").file(name, b"pwned");
        });
        let err = sb.assert_refused(mode, &tar, name);
        assert!(err.contains("'..' is not allowed"), "{err}");
    }
    // A directory, too.
    let sb = Sandbox::new();
    sb.assert_refused(
        Whiteouts::Overlay,
        &tar_of(|l| {
            l.dir("../outside/new/");
        }),
        "../outside/new/",
    );
}

#[test]
fn absolute_entries_stay_beneath_the_root() {
    // unpack::clean_path drops the leading '/': "/etc/passwd" is "etc/passwd" in the layer.
    let sb = Sandbox::new();
    let abs = sb.outside.join("pwned");
    let abs = abs.to_str().unwrap();
    assert!(abs.len() < 100);
    let tar = tar_of(|l| {
        l.file(abs, b"pwned").file("/abs/escape", b"e");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    assert_eq!(
        std::fs::read(sb.root.join(abs.trim_start_matches('/'))).unwrap(),
        b"pwned"
    );
    assert_eq!(std::fs::read(sb.at("abs/escape")).unwrap(), b"e");
    assert!(!Path::new("/abs/escape").exists());
    sb.assert_contained();
}

#[test]
fn symlink_to_an_outside_dir_is_not_followed() {
    // Parents are resolved beneath the root: an absolute symlink target means the path
    // inside the layer, which does not exist here, so the entry fails.
    let sb = Sandbox::new();
    let outside = sb.outside.to_str().unwrap().to_string();
    for mode in [Whiteouts::Overlay, Whiteouts::Apply] {
        let tar = tar_of(|l| {
            l.symlink("link", &outside).file("link/pwned", b"pwned");
        });
        sb.assert_refused(mode, &tar, "link/pwned");
    }
    // Relative, too.
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.symlink("up", "../outside").file("up/pwned", b"pwned");
    });
    sb.assert_refused(Whiteouts::Overlay, &tar, "up/pwned");
    // A directory cached by an earlier entry, then replaced by such a symlink.
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.file("d/a", b"a")
            .symlink("d", &outside)
            .file("d/pwned", b"pwned");
    });
    sb.assert_refused(Whiteouts::Overlay, &tar, "d/pwned");
    // A whiteout through such a symlink.
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.symlink("w", &outside).file("w/.wh.keep", b"");
    });
    sb.assert_refused(Whiteouts::Apply, &tar, "w/.wh.keep");
}

#[test]
fn symlink_to_dotdot_resolves_to_the_root() {
    // "link -> ../.." cannot climb above the root: link/x is the root's x.
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.symlink("link", "../..")
            .file("link/x", b"x")
            .dir("outside/")
            .symlink("deep/up", "../../../../outside")
            .file("deep/up/keep", b"not the outside one")
            .symlink("slash", "/")
            .file("slash/y", b"y");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    assert_eq!(std::fs::read(sb.at("x")).unwrap(), b"x");
    assert_eq!(std::fs::read(sb.at("y")).unwrap(), b"y");
    assert_eq!(
        std::fs::read(sb.at("outside/keep")).unwrap(),
        b"not the outside one"
    );
    assert_eq!(
        std::fs::read_link(sb.at("link")).unwrap(),
        Path::new("../..")
    );
    sb.assert_contained();
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    let sb = Sandbox::new();
    let err = sb.assert_refused(
        Whiteouts::Overlay,
        &tar_of(|l| {
            l.hardlink("h", "../../etc/passwd");
        }),
        "h",
    );
    assert!(err.contains("'..' is not allowed"), "{err}");

    let keep = sb.outside.join("keep");
    let keep = keep.to_str().unwrap().to_string();
    for target in ["/etc/passwd", keep.as_str()] {
        let err = sb.assert_refused(
            Whiteouts::Overlay,
            &tar_of(|l| {
                l.hardlink("h", target);
            }),
            "h",
        );
        assert!(err.contains("is not in this layer"), "{err}");
    }
    // Through a symlink (absolute or climbing) to the outside directory.
    let outside = sb.outside.to_str().unwrap().to_string();
    for (link, target) in [
        (outside.as_str(), "l/keep"),
        ("../outside", "l/keep"),
        ("../..", "l/outside/keep"),
    ] {
        let sb = Sandbox::new();
        sb.assert_refused(
            Whiteouts::Apply,
            &tar_of(|l| {
                l.symlink("l", link).hardlink("h", target);
            }),
            "h",
        );
    }
}

#[test]
fn bad_whiteout_names_are_refused() {
    for name in [".wh..", ".wh.", "dir/.wh...", "dir/.wh.."] {
        for mode in [Whiteouts::Overlay, Whiteouts::Apply] {
            let sb = Sandbox::new();
            std::fs::write(sb.at("lower"), b"l").unwrap();
            let err = sb.assert_refused(
                mode,
                &tar_of(|l| {
                    l.file(name, b"");
                }),
                name,
            );
            assert!(err.contains("whiteout"), "{err}");
            assert_eq!(names(&sb.root), set(&["lower"]), "{name} in {mode:?}");
        }
    }
}

#[test]
fn truncated_tar_is_an_error() {
    let sb = Sandbox::new();
    let data = vec![b'z'; 4000];
    let tar = tar_of(|l| {
        l.file("first", b"1").file("big", &data).file("last", b"3");
    });
    // Cut in the middle of big's content: header blocks of first and big, first's
    // data block, then 1000 of big's 4000 bytes.
    let cut = &tar[..512 * 3 + 1000];
    let err = sb
        .unpack(Whiteouts::Overlay, cut)
        .expect_err("truncated")
        .to_string();
    assert!(err.contains("\"big\""), "{err}");
    sb.assert_contained();
    // Cut inside a header.
    let sb = Sandbox::new();
    assert!(sb
        .unpack(Whiteouts::Overlay, &tar[..512 * 2 + 100])
        .is_err());
    sb.assert_contained();
}

#[test]
fn garbage_is_an_error() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..10_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    for data in [&garbage[..], &garbage[..100], b"not a tar archive at all"] {
        let sb = Sandbox::new();
        let err = sb
            .unpack(Whiteouts::Overlay, data)
            .expect_err("garbage")
            .to_string();
        assert!(err.contains("read layer"), "{err}");
        sb.assert_contained();
        assert_eq!(names(&sb.root), BTreeSet::new());
    }
    // A valid header then garbage where the next header should be.
    let sb = Sandbox::new();
    let mut tar = tar_of(|l| {
        l.file("ok", b"fine");
    });
    tar.truncate(1024);
    tar.extend_from_slice(&garbage[..1024]);
    assert!(sb.unpack(Whiteouts::Overlay, &tar).is_err());
    sb.assert_contained();
}

#[test]
fn pax_mtime_with_a_non_ascii_fraction_does_not_panic() {
    // Regression: the fraction's byte length (not its digit count) made 9 - len underflow.
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.pax(&[("mtime", "1500000000.ééééé".as_bytes())])
            .file("f", b"")
            .pax(&[("mtime", b"1500000000.1234567891234")])
            .file("g", b"");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    assert_eq!(lstat(sb.at("f")).mtime(), 1_500_000_000);
    let g = lstat(sb.at("g"));
    assert_eq!((g.mtime(), g.mtime_nsec()), (1_500_000_000, 123_456_789));
    sb.assert_contained();
}

#[test]
fn out_of_range_owners_are_refused() {
    // Regression (found by the fuzz target): uid -1 reached rustix's Uid::from_raw, which
    // asserts against it (a panic in debug builds; to chown, -1 means "leave unchanged"),
    // and ids beyond 32 bits were truncated.
    let kinds = [
        ("f", EntryType::Regular),
        ("d/", EntryType::Directory),
        ("./", EntryType::Directory),
        ("l", EntryType::Symlink),
        ("p", EntryType::Fifo),
    ];
    for (name, kind) in kinds {
        for (key, value) in [
            ("uid", u64::from(u32::MAX)),
            ("gid", u64::from(u32::MAX)),
            ("uid", 1 << 32),
        ] {
            let sb = Sandbox::new();
            let value = value.to_string();
            let tar = tar_of(|l| {
                l.pax(&[(key, value.as_bytes())])
                    .entry(name, kind, b"", |h| h.set_link_name("t").unwrap());
            });
            let err = sb.assert_refused(Whiteouts::Overlay, &tar, name);
            assert!(
                err.contains(&format!("{key} {value} is out of range")),
                "{err}"
            );
        }
    }
    // In the header's own (base-256) field.
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.entry("g", EntryType::Regular, b"", |h| {
            h.set_gid(u64::from(u32::MAX))
        });
    });
    sb.assert_refused(Whiteouts::Apply, &tar, "g");
    // The largest valid ids are fine.
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.pax(&[("uid", b"4294967294"), ("gid", b"4294967294")])
            .file("max", b"");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    let m = lstat(sb.at("max"));
    assert_eq!((m.uid(), m.gid()), (u32::MAX - 1, u32::MAX - 1));
}

// ---- through the store ----

#[test]
fn store_refuses_a_hostile_layer_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    let tar = tar_of(|l| {
        l.file("etc/ok", b"ok")
            .file("../../outside/escape", b"pwned");
    });
    let img = store_image(&store, &gzip(&tar), GZIP, &Digest::of(&tar), "hostile");
    let err = store
        .prepare("c1", &img, &[], Snapshotter::Auto)
        .expect_err("hostile layer");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("\"../../outside/escape\""),
        "{err}"
    );
    assert_store_clean(&store);
    assert_eq!(names(&tmp.path().join("outside")), BTreeSet::new());
    assert_eq!(names(tmp.path()), set(&["outside", "store"]));
}

#[test]
fn store_diff_id_mismatch_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let tar = tar_of(|l| {
        l.file("hello", b"world");
    });
    let img = store_image(
        &store,
        &gzip(&tar),
        GZIP,
        &Digest::of(b"not this layer"),
        "mismatch",
    );
    let err = store
        .prepare("c1", &img, &[], Snapshotter::Auto)
        .expect_err("wrong diff_id");
    assert!(matches!(err, Error::DigestMismatch(_)), "{err:?}");
    assert_store_clean(&store);
}

#[test]
fn store_refuses_a_corrupt_gzip_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let mut blob = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];
    blob.extend_from_slice(b"\xde\xad\xbe\xef this is not deflate data \xff\xfe\xfd\xfc");
    let img = store_image(&store, &blob, GZIP, &Digest::of(b"whatever"), "corrupt");
    let err = store
        .prepare("c1", &img, &[], Snapshotter::Auto)
        .expect_err("corrupt gzip");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("read layer"), "{err}");
    assert_store_clean(&store);
}

#[test]
fn store_unpacks_a_zstd_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let tar = tar_of(|l| {
        l.file("hello", b"zstd world")
            .symlink("sh", "/bin/busybox")
            .file(".wh.nothing", b"");
    });
    let blob = zstd::encode_all(&tar[..], 3).unwrap();
    let img = store_image(&store, &blob, ZSTD, &Digest::of(&tar), "zstd");
    let ids = store.unpack_image(&img, |_, _| {}).unwrap();
    assert_eq!(ids.len(), 1);
    let snap = store.snapshot_dir(ids[0]);
    assert_eq!(std::fs::read(snap.join("hello")).unwrap(), b"zstd world");
    assert!(lstat(snap.join("nothing")).file_type().is_char_device());
    assert_eq!(
        names(&store.root().join("s")),
        set(&[ids[0].to_string().as_str()])
    );

    // The copy snapshotter applies the same layer (whiteouts applied) into the rootfs.
    let rootfs = store
        .prepare("z1", &img, &[("etc/hostname", b"z1\n")], Snapshotter::Copy)
        .unwrap();
    assert_eq!(rootfs.mode, "copy");
    assert_eq!(
        std::fs::read(rootfs.path.join("hello")).unwrap(),
        b"zstd world"
    );
    assert_eq!(
        std::fs::read(rootfs.path.join("etc/hostname")).unwrap(),
        b"z1\n"
    );
    assert!(!rootfs.path.join("nothing").exists());
    store.remove_container("z1").unwrap();
    assert!(store.containers().unwrap().is_empty());
}

#[test]
fn opaque_root_through_a_symlink_is_refused() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.symlink("l", "/").file("l/.wh..wh..opq", b"");
    });
    sb.assert_refused(Whiteouts::Overlay, &tar, "l/.wh..wh..opq");
}

#[test]
fn overlay_xattrs_are_not_taken_from_layers() {
    let sb = Sandbox::new();
    let tar = tar_of(|l| {
        l.pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.kept", b"1"),
        ])
        .dir("d/");
    });
    sb.unpack(Whiteouts::Overlay, &tar).unwrap();
    assert_eq!(xattr(&sb.at("d"), "trusted.overlay.redirect"), None);
    assert_eq!(xattr(&sb.at("d"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&sb.at("d"), "user.kept").unwrap(), b"1");
}

#[test]
fn pax_global_header_entries_do_not_touch_files() {
    let sb = Sandbox::new();
    let lower = tar_of(|l| {
        l.file("pax_global_header", b"precious");
    });
    let upper = tar_of(|l| {
        l.entry("pax_global_header", EntryType::XGlobalHeader, b"", |_| {});
    });
    let mut u = Unpacker::new(&sb.root, Whiteouts::Apply).unwrap();
    u.apply(&lower[..]).unwrap();
    u.apply(&upper[..]).unwrap();
    assert_eq!(
        std::fs::read(sb.at("pax_global_header")).unwrap(),
        b"precious"
    );
}

#[test]
fn huge_sparse_holes_are_refused_quickly() {
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("huge");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(64 << 30).unwrap();
        f.write_all_at(b"data", 1 << 20).unwrap();
    }
    let mut b = tar::Builder::new(Vec::new());
    b.sparse(true);
    b.append_file("huge", &mut std::fs::File::open(&path).unwrap())
        .unwrap();
    let tar = b.into_inner().unwrap();
    assert!(tar.len() < 1 << 20, "the layer itself is small");
    let sb = Sandbox::new();
    let t = std::time::Instant::now();
    let e = sb.unpack(Whiteouts::Overlay, &tar).unwrap_err().to_string();
    assert!(e.contains("holes over 16 GiB") && e.contains("huge"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}
