//! The image store through the `berth` CLI: import, inspect, history, tag, rmi, prune,
//! df, load/save of hand-built layouts, rootfs prepare/commit with overlay and copy, deep
//! images, and bad archives.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn import_inspect_history_tag_rm_prune() {
    let env = Env::new();
    let id = env.busybox_image("localhost/bb:1");
    assert!(id.starts_with("sha256:"), "{id}");
    let table = env.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("localhost/bb") && table.contains(&id[7..19]),
        "{table}"
    );
    // Short names find locally built images, as in podman.
    let v: Value = serde_json::from_str(&env.ok(&["image", "inspect", "bb:1"])).unwrap();
    let img = &v[0];
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(img["RepoTags"][0], "localhost/bb:1");
    assert_eq!(img["Os"], "linux");
    assert_eq!(img["Config"]["Cmd"][0], "sh");
    assert_eq!(img["RootFS"]["Type"], "layers");
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(img["RootFS"]["Layers"][0], sha(&busybox_tar()).as_str());
    assert_eq!(
        env.ok(&["image", "inspect", "-f", "{{.Id}}", &id[7..19]])
            .trim(),
        id
    );
    let hist = env.ok(&["history", "bb:1"]);
    assert!(
        hist.starts_with("IMAGE") && hist.contains("berth import"),
        "{hist}"
    );

    env.ok(&["tag", "bb:1", "localhost/bb:2"]);
    let mut names = env.image_names();
    names.sort();
    assert_eq!(names, ["localhost/bb:1", "localhost/bb:2"]);
    // By ID with two names: refused without -f.
    let e = env.fails(&["rmi", &id[7..19]]);
    assert!(e.contains("several names") && e.contains("-f"), "{e}");
    let out = env.ok(&["rmi", "localhost/bb:2"]);
    assert!(
        out.contains("Untagged: localhost/bb:2") && !out.contains("Deleted"),
        "{out}"
    );
    let out = env.ok(&["rmi", "bb:1"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(env.image_names().is_empty());
    let blobs = std::fs::read_dir(env.root().join("image/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "rmi leaves no blob behind");
    let e = env.fails(&["image", "inspect", "bb:1"]);
    assert!(e.contains("not in the store"), "{e}");
}

#[test]
fn import_changes_and_bad_input() {
    let env = Env::new();
    let tgz = env.path("r.tgz");
    std::fs::write(&tgz, gzip(&busybox_tar())).unwrap();
    let t = tgz.to_str().unwrap();
    env.ok(&[
        "import",
        "-c",
        "ENV A=1",
        "-c",
        "WORKDIR /tmp",
        "-c",
        "EXPOSE 80",
        "-m",
        "hello",
        t,
        "localhost/ch:1",
    ]);
    let cfg: Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "-f", "{{json .Config}}", "ch:1"]))
            .unwrap();
    assert_eq!(cfg["Env"][0], "A=1");
    assert_eq!(cfg["WorkingDir"], "/tmp");
    assert!(cfg["ExposedPorts"]["80/tcp"].is_object());
    let e = env.fails(&["import", "-c", "FROM x", t]);
    assert!(e.contains("FROM is not supported"), "{e}");
    let junk = env.path("junk");
    std::fs::write(&junk, vec![7u8; 3000]).unwrap();
    let e = env.fails(&["import", junk.to_str().unwrap(), "localhost/j:1"]);
    assert!(e.contains("not a tar"), "{e}");
    let e = env.fails(&["import", t, "UPPER/case"]);
    assert!(e.contains("invalid image reference"), "{e}");
    assert_eq!(env.image_names(), ["localhost/ch:1"]);
}

#[test]
fn rootfs_prepare_commit_overlay_and_copy() {
    let env = Env::new();
    env.busybox_image("localhost/base:1");
    let rootfs = env
        .ok(&["rootfs", "prepare", "--hostname", "box", "c1", "base:1"])
        .trim()
        .to_string();
    let root = std::path::Path::new(&rootfs);
    assert!(root.join("bin/busybox").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "box\n"
    );
    // Changes: a new file, a changed file, a deleted file, a replaced directory.
    std::fs::write(root.join("etc/added"), "new\n").unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nx:x:1:1::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::remove_file(root.join("etc/os-release")).unwrap();
    std::fs::remove_dir_all(root.join("tmp")).unwrap();
    std::fs::create_dir(root.join("tmp")).unwrap();
    std::fs::write(root.join("tmp/in-new-dir"), "x").unwrap();
    let list = env.ok(&["rootfs", "ls"]);
    assert!(list.contains("c1") && list.contains("overlay"), "{list}");
    let id = env
        .ok(&[
            "rootfs",
            "commit",
            "-m",
            "my change",
            "-c",
            "ENV B=2",
            "c1",
            "localhost/derived:1",
        ])
        .trim()
        .to_string();
    let v: Value = serde_json::from_str(&env.ok(&["image", "inspect", "derived:1"])).unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(v[0]["Config"]["Env"][0], "B=2");
    let hist = env.ok(&["history", "--no-trunc", "derived:1"]);
    assert!(
        hist.contains("my change") && hist.contains("berth rootfs commit c1"),
        "{hist}"
    );

    // The new layer: additions, whiteout, opaque dir; no init-layer files.
    let export = env.path("layer-check.tar");
    env.ok(&[
        "image",
        "save",
        "--format",
        "oci-dir",
        "-o",
        env.path("derived-oci").to_str().unwrap(),
        "derived:1",
    ]);
    let manifest_index: Value =
        serde_json::from_slice(&std::fs::read(env.path("derived-oci/index.json")).unwrap())
            .unwrap();
    let md = manifest_index["manifests"][0]["digest"].as_str().unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(env.path("derived-oci/blobs/sha256").join(&md[7..])).unwrap(),
    )
    .unwrap();
    let top = m["layers"][1]["digest"].as_str().unwrap();
    let data = std::fs::read(env.path("derived-oci/blobs/sha256").join(&top[7..])).unwrap();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&data[..]));
    for e in ar.entries().unwrap() {
        names.push(
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
        );
    }
    for want in [
        "etc/added",
        "etc/passwd",
        "etc/.wh.os-release",
        "tmp/.wh..wh..opq",
        "tmp/in-new-dir",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    for unwanted in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        assert!(
            !names.iter().any(|n| n == unwanted),
            "init file {unwanted} committed: {names:?}"
        );
    }
    let _ = export;

    // A container of the derived image sees the changes; a copy-mode one too.
    for (name, snap) in [("c2", "overlay"), ("c3", "copy")] {
        let r = env
            .ok(&[
                "rootfs",
                "prepare",
                "--snapshotter",
                snap,
                name,
                "derived:1",
            ])
            .trim()
            .to_string();
        let r = std::path::Path::new(&r);
        assert_eq!(
            std::fs::read_to_string(r.join("etc/added")).unwrap(),
            "new\n",
            "{snap}"
        );
        assert!(
            !r.join("etc/os-release").exists(),
            "{snap}: whiteout applied"
        );
        assert!(r.join("tmp/in-new-dir").exists(), "{snap}");
        assert!(
            r.join("etc/hostname").exists(),
            "{snap}: init layer present"
        );
    }
    let list = env.ok(&["rootfs", "ls"]);
    assert!(list.contains("copy"), "{list}");
    let e = env.fails(&["rootfs", "commit", "c3"]);
    assert!(e.contains("copy snapshotter"), "{e}");
    // Images in use are kept by rmi and prune.
    let e = env.fails(&["rmi", "derived:1"]);
    assert!(e.contains("uses it"), "{e}");
    env.ok(&["image", "prune", "-a"]);
    assert!(env
        .image_names()
        .contains(&"localhost/derived:1".to_string()));
    let df = env.ok(&["system", "df"]);
    assert!(df.contains("Images") && df.contains("Containers"), "{df}");
    for c in ["c1", "c2", "c3"] {
        env.ok(&["rootfs", "rm", c]);
        assert!(!env.root().join("image/c").join(c).exists());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(env.root().to_str().unwrap()),
        "no mount left"
    );
    env.ok(&["system", "prune", "-a"]);
    assert!(env.image_names().is_empty());
    assert!(
        env.snapshot_entries().is_empty(),
        "{:?}",
        env.snapshot_entries()
    );
}

#[test]
fn deep_image_of_128_layers_mounts() {
    let env = Env::new();
    let mut layers = vec![busybox_tar()];
    for i in 1..128 {
        layers.push(layer_with(
            &format!("layers/l{i:03}"),
            format!("{i}\n").as_bytes(),
        ));
    }
    let dir = env.path("deep");
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some("localhost/deep:1".into()),
            arch: "amd64".into(),
            layers,
            media_type: None,
        }],
    );
    let out = env.ok(&["load", "-i", dir.to_str().unwrap()]);
    assert!(out.contains("Loaded image: localhost/deep:1"), "{out}");
    let r = env
        .ok(&[
            "rootfs",
            "prepare",
            "--snapshotter",
            "overlay",
            "deep",
            "deep:1",
        ])
        .trim()
        .to_string();
    let r = std::path::Path::new(&r);
    assert!(r.join("bin/busybox").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("layers/l001")).unwrap(),
        "1\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("layers/l127")).unwrap(),
        "127\n"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains("/image/c/deep/rootfs"))
        .expect("overlay mounted");
    assert!(line.contains("overlay"), "{line}");
    env.ok(&["rootfs", "rm", "deep"]);
}

#[test]
fn load_rejects_bad_layouts_and_keeps_the_store_clean() {
    let env = Env::new();
    env.busybox_image("localhost/keep:1");
    // A blob whose content does not match its name.
    let dir = env.path("bad-digest");
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some("localhost/bad:1".into()),
            arch: "amd64".into(),
            layers: vec![busybox_tar()],
            media_type: None,
        }],
    );
    let blobs = dir.join("blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = std::fs::read(&victim).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&victim, data).unwrap();
    let e = env.fails(&["load", "-i", dir.to_str().unwrap()]);
    assert!(e.contains("hashes to"), "{e}");

    // A manifest naming a missing blob.
    let dir = env.path("missing");
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some("localhost/bad:2".into()),
            arch: "amd64".into(),
            layers: vec![busybox_tar()],
            media_type: None,
        }],
    );
    let biggest = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    std::fs::remove_file(biggest).unwrap();
    let e = env.fails(&["load", "-i", dir.to_str().unwrap()]);
    assert!(e.contains("missing"), "{e}");

    // An unknown layer media type.
    let dir = env.path("mediatype");
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some("localhost/bad:3".into()),
            arch: "amd64".into(),
            layers: vec![busybox_tar()],
            media_type: Some("application/x-strange".into()),
        }],
    );
    let e = env.fails(&["load", "-i", dir.to_str().unwrap()]);
    assert!(e.contains("unknown layer media type"), "{e}");

    // Not an archive at all, and a truncated one.
    let junk = env.path("junk.tar");
    std::fs::write(&junk, b"hello, not a tar").unwrap();
    let e = env.fails(&["load", "-i", junk.to_str().unwrap()]);
    assert!(e.contains("archive") || e.contains("tar"), "{e}");
    env.ok(&[
        "save",
        "-o",
        env.path("keep.tar").to_str().unwrap(),
        "keep:1",
    ]);
    let whole = std::fs::read(env.path("keep.tar")).unwrap();
    std::fs::write(env.path("cut.tar"), &whole[..whole.len() / 2]).unwrap();
    let e = env.fails(&["load", "-i", env.path("cut.tar").to_str().unwrap()]);
    assert!(!e.is_empty());

    // A tar with an entry escaping the archive.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_old();
    let name = b"../escape";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    std::fs::write(env.path("escape.tar"), b.into_inner().unwrap()).unwrap();
    let e = env.fails(&["load", "-i", env.path("escape.tar").to_str().unwrap()]);
    assert!(e.contains("leaves the archive"), "{e}");

    // Nothing half-loaded is listed; the good image still works.
    assert_eq!(env.image_names(), ["localhost/keep:1"]);
    env.ok(&["rootfs", "prepare", "k", "keep:1"]);
    env.ok(&["rootfs", "rm", "k"]);
    env.ok(&["image", "prune"]);
    assert!(std::fs::read_dir(env.root().join("image/ingest"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn multi_platform_layout_picks_the_platform() {
    let env = Env::new();
    let dir = env.path("multi");
    write_multi_platform_layout(&dir, "localhost/multi:1");
    env.ok(&["load", "-i", dir.to_str().unwrap()]);
    let arch = env.ok(&["image", "inspect", "-f", "{{.Architecture}}", "multi:1"]);
    assert_eq!(arch.trim(), "amd64");
    let arch = env.ok(&[
        "image",
        "inspect",
        "--platform",
        "linux/arm64",
        "-f",
        "{{.Architecture}}",
        "multi:1",
    ]);
    assert_eq!(arch.trim(), "arm64");
    let e = env.fails(&["image", "inspect", "--platform", "linux/s390x", "multi:1"]);
    assert!(
        e.contains("linux/arm64") && e.contains("linux/amd64"),
        "{e}"
    );
    let r = env
        .ok(&["rootfs", "prepare", "m", "multi:1"])
        .trim()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&r).join("etc/arch")).unwrap(),
        "amd64"
    );
    env.ok(&["rootfs", "rm", "m"]);
}

#[test]
fn export_flattens_layers() {
    let env = Env::new();
    let dir = env.path("two");
    let mut top = tar::Builder::new(Vec::new());
    file(&mut top, "etc/.wh.os-release", b"", 0o644);
    file(&mut top, "etc/new", b"n", 0o644);
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some("localhost/two:1".into()),
            arch: "amd64".into(),
            layers: vec![busybox_tar(), top.into_inner().unwrap()],
            media_type: None,
        }],
    );
    env.ok(&["load", "-i", dir.to_str().unwrap()]);
    let out = env.path("flat.tar");
    env.ok(&["image", "export", "-o", out.to_str().unwrap(), "two:1"]);
    let data = std::fs::read(&out).unwrap();
    let mut ar = tar::Archive::new(&data[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "etc/new"), "{names:?}");
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("os-release") || n.contains(".wh.")),
        "{names:?}"
    );
}

#[test]
fn save_to_stdout_load_from_stdin() {
    let env = Env::new();
    let id = env.busybox_image("localhost/pipe:1");
    let env2 = Env::new();
    let script = format!(
        "BERTH_ROOT={} {bin} save pipe:1 | gzip | BERTH_ROOT={} {bin} load",
        env.root().display(),
        env2.root().display(),
        bin = bin()
    );
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Loaded image: localhost/pipe:1"));
    assert_eq!(
        env2.ok(&["image", "inspect", "-f", "{{.Id}}", "pipe:1"])
            .trim(),
        id
    );
    // A terminal is never written to, and an empty stdin is not an archive.
    let e = env2.fails(&["load"]);
    assert!(e.contains("archive") || e.contains("tar"), "{e}");
}

#[test]
fn kill_during_unpack_leaves_a_usable_store() {
    let env = Env::new();
    let dir = env.path("big");
    let mut layers = vec![busybox_tar()];
    for i in 0..4 {
        let mut b = tar::Builder::new(Vec::new());
        dir_entry_files(&mut b, i);
        layers.push(b.into_inner().unwrap());
    }
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some("localhost/big:1".into()),
            arch: "amd64".into(),
            layers,
            media_type: None,
        }],
    );
    env.ok(&["load", "-q", "-i", dir.to_str().unwrap()]);
    let mut child = env
        .cmd(&["rootfs", "prepare", "k1", "big:1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = false;
    while std::time::Instant::now() < deadline {
        if env
            .snapshot_entries()
            .iter()
            .any(|e| e.starts_with(".tmp-"))
        {
            seen = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen, "the unpack was caught in the middle");
    // No container was recorded; the next prepare unpacks what is missing and works.
    assert!(!env.ok(&["rootfs", "ls"]).contains("k1"));
    let r = env
        .ok(&["rootfs", "prepare", "k2", "big:1"])
        .trim()
        .to_string();
    assert!(std::path::Path::new(&r).join("data/3/f0999").exists());
    env.ok(&["rootfs", "rm", "k2"]);
    env.ok(&["image", "prune"]);
    let left: Vec<String> = env
        .snapshot_entries()
        .into_iter()
        .filter(|e| e.starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A layer of many small files (slow to unpack, quick to build).
fn dir_entry_files(b: &mut tar::Builder<Vec<u8>>, layer: usize) {
    dir(b, "data");
    dir(b, &format!("data/{layer}"));
    for f in 0..1000 {
        file(
            b,
            &format!("data/{layer}/f{f:04}"),
            &noise(2000, (layer * 1000 + f) as u64 + 1),
            0o644,
        );
    }
}

#[test]
fn copy_mode_init_files_stay_inside_the_rootfs() {
    let env = Env::new();
    let outside = env.path("outside-etc");
    std::fs::create_dir_all(&outside).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    symlink(&mut b, "etc", outside.to_str().unwrap());
    let dir = env.path("evil");
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some("localhost/evil:1".into()),
            arch: "amd64".into(),
            layers: vec![busybox_tar(), b.into_inner().unwrap()],
            media_type: None,
        }],
    );
    env.ok(&["load", "-q", "-i", dir.to_str().unwrap()]);
    let r = env
        .ok(&["rootfs", "prepare", "--snapshotter", "copy", "ev", "evil:1"])
        .trim()
        .to_string();
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written through the symlink"
    );
    // As with overlay, the init layer's /etc directory covers the image's symlink.
    let etc = std::path::Path::new(&r).join("etc");
    assert!(etc.symlink_metadata().unwrap().is_dir());
    assert!(etc.join("hostname").exists());
    env.ok(&["rootfs", "rm", "ev"]);
}

#[test]
fn many_commands_opening_a_new_store_at_once() {
    let env = Env::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            env.cmd(&["images"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Output cut short by its reader (`berth image inspect IMG | head -1`) ends berth
/// quietly with the status SIGPIPE gives (141), as it ends `ls`, not with a panic.
#[test]
fn a_reader_that_stops_early_ends_berth_quietly() {
    let env = Env::new();
    env.busybox_image("localhost/bb:pipe");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = env
        .cmd(&["image", "inspect", "bb:pipe"])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
