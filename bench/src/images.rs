//! `berth-bench images`: the image store against the tools people use for the same job,
//! interleaved in one run:
//!
//! - unpacking a large layer (a debootstrap'd Debian rootfs, gzip and zstd): berth's
//!   unpacker vs `tar -x` (the practical limit) vs `umoci unpack`;
//! - preparing a container rootfs from an unpacked image (mkdirs, init layer, one mount);
//! - pulling a multi-layer image from a local registry: `berth pull` (download, verify,
//!   unpack) vs `skopeo copy` to an OCI directory (download, verify only).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use berth_image::oci::Platform;
use berth_image::snapshot::Snapshotter;
use berth_image::unpack::{Unpacker, Whiteouts};
use berth_image::Store;

use crate::stats;

/// Where the Debian root filesystem is kept between runs.
const CACHE: &str = "/var/cache/berth-bench";

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn remove(p: &Path) {
    let _ = Command::new("rm").arg("-rf").arg(p).status();
}

/// The Debian rootfs (made with debootstrap on first use).
fn debian_rootfs() -> Result<PathBuf> {
    let dir = Path::new(CACHE).join("rootfs");
    if dir.join("usr/bin/apt").exists() {
        return Ok(dir);
    }
    eprintln!(
        "debootstrap --variant=minbase bookworm {} (first run only)...",
        dir.display()
    );
    std::fs::create_dir_all(CACHE)?;
    remove(&dir);
    run(Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&dir)
        .arg("http://deb.debian.org/debian"))
    .context("debootstrap (needs the debootstrap package and deb.debian.org)")?;
    Ok(dir)
}

/// Writes an OCI layout holding one image of the given gzip layers; returns its path.
fn layout(dir: &Path, layers: &[(&Path, &Path)]) -> Result<()> {
    let store_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&store_dir)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let digest_file = |p: &Path| -> Result<(String, u64)> {
        let f = std::fs::File::open(p)?;
        let mut r =
            berth_image::digest::HashingReader::new(std::io::BufReader::with_capacity(1 << 20, f));
        std::io::copy(&mut r, &mut std::io::sink())?;
        let (d, n) = r.finish();
        Ok((d.to_string(), n))
    };
    let put = |data: &[u8]| -> Result<(String, usize)> {
        let d = berth_image::Digest::of(data);
        std::fs::write(store_dir.join(d.hex()), data)?;
        Ok((d.to_string(), data.len()))
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, gz) in layers {
        let (diff, _) = digest_file(tar)?;
        let (d, n) = digest_file(gz)?;
        let dest = store_dir.join(&d[7..]);
        if !dest.exists() {
            std::fs::hard_link(gz, &dest).or_else(|_| std::fs::copy(gz, &dest).map(drop))?;
        }
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}));
        diff_ids.push(diff);
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/bash"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cn) = put(&serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn}, "layers": descs});
    let (md, mn) = put(&serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "bench", "io.containerd.image.name": "localhost/bench/debian:1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

fn report(title: &str, names: &[&str], samples: &[Vec<f64>]) {
    println!("{title}");
    println!("{:<28} {:>10} {:>9} {:>9}", "", "median ms", "p10", "p90");
    for (n, s) in names.iter().zip(samples) {
        println!(
            "{n:<28} {:>10.1} {:>9.1} {:>9.1}",
            stats::median(s),
            stats::percentile(s, 10.0),
            stats::percentile(s, 90.0)
        );
    }
}

/// Runs the three image benchmarks.
pub fn images_bench(runs: usize, berth: &Path, skip_pull: bool) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release)", berth.display()))?;
    let rootfs = debian_rootfs()?;
    let work = tempfile::Builder::new()
        .prefix("berth-bench-img")
        .tempdir_in("/var/tmp")?;
    let w = work.path();
    eprintln!("packing the Debian rootfs...");
    let tar = w.join("debian.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "--xattrs", "-cf"])
        .arg(&tar)
        .arg("."))?;
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -6 -c {0} > {0}.gz && zstd -q -3 -c {0} > {0}.zst",
        tar.display()
    )))?;
    let gz = w.join("debian.tar.gz");
    let zst = w.join("debian.tar.zst");
    let size = std::fs::metadata(&tar)?.len();
    println!(
        "layer: Debian bookworm minbase, {:.0} MiB tar, {:.0} MiB gzip, {:.0} MiB zstd",
        size as f64 / 1048576.0,
        std::fs::metadata(&gz)?.len() as f64 / 1048576.0,
        std::fs::metadata(&zst)?.len() as f64 / 1048576.0
    );
    let umoci_layout = w.join("umoci-layout");
    layout(&umoci_layout, &[(&tar, &gz)])?;
    // Unpack into memory: a virtual disk's writeback makes every tool's time mostly noise,
    // and the comparison is about the work each tool does per entry and per byte.
    let mem = w.join("mem");
    std::fs::create_dir_all(&mem)?;
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8g", "berth-bench"])
        .arg(&mem))?;
    let r = unpack_bench(runs, &mem, &gz, &zst, &umoci_layout);
    let _ = Command::new("umount").arg("-l").arg(&mem).status();
    r?;

    prepare_and_pull(
        runs,
        w,
        &berth,
        &rootfs,
        &tar,
        &gz,
        &umoci_layout,
        skip_pull,
    )
}

fn unpack_bench(runs: usize, w: &Path, gz: &Path, zst: &Path, umoci_layout: &Path) -> Result<()> {
    let names = [
        "berth unpack (gzip)",
        "tar -xzf",
        "berth unpack (zstd)",
        "tar --zstd -xf",
        "umoci unpack (gzip)",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let umoci = crate::which("umoci").is_some();
    for round in 0..runs {
        for k in 0..names.len() {
            let i = (round + k) % names.len();
            if i == 4 && !umoci {
                continue;
            }
            let dest = w.join(format!("unpack-{i}"));
            std::fs::create_dir_all(&dest)?;
            sync();
            let t = Instant::now();
            match i {
                0 | 2 => {
                    let src = if i == 0 { gz } else { zst };
                    let f = std::fs::File::open(src)?;
                    let mut u = Unpacker::new(&dest, Whiteouts::Overlay)?;
                    berth_image::compress::unpack_ahead(
                        std::io::BufReader::with_capacity(1 << 20, f),
                        |tar| u.apply(tar),
                    )?;
                }
                1 => run(Command::new("tar")
                    .arg("-C")
                    .arg(&dest)
                    .args(["--numeric-owner", "--xattrs", "-xzf"])
                    .arg(gz))?,
                3 => run(Command::new("tar")
                    .arg("-C")
                    .arg(&dest)
                    .args(["--numeric-owner", "--xattrs", "--zstd", "-xf"])
                    .arg(zst))?,
                _ => {
                    remove(&dest);
                    run(Command::new("umoci")
                        .args(["unpack", "--image"])
                        .arg(format!("{}:bench", umoci_layout.display()))
                        .arg(&dest))?
                }
            }
            samples[i].push(ms(t));
            remove(&dest);
        }
    }
    report(
        &format!("unpack of one layer, {runs} interleaved runs each"),
        &names,
        &samples,
    );
    let b = stats::median(&samples[0]);
    println!(
        "ratio berth/tar (gzip): {:.2}",
        b / stats::median(&samples[1])
    );
    println!(
        "ratio berth/tar (zstd): {:.2}",
        stats::median(&samples[2]) / stats::median(&samples[3])
    );
    if umoci {
        println!(
            "ratio berth/umoci (gzip): {:.2}",
            b / stats::median(&samples[4])
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn prepare_and_pull(
    runs: usize,
    w: &Path,
    berth: &Path,
    rootfs: &Path,
    tar: &Path,
    gz: &Path,
    umoci_layout: &Path,
    skip_pull: bool,
) -> Result<()> {
    // 2. Prepare a rootfs from the unpacked image.
    let store_root = w.join("image");
    let store = Store::open(&store_root)?;
    store.load(umoci_layout, &Platform::host())?;
    let img = store.resolve("localhost/bench/debian:1", &Platform::host())?;
    store.unpack_image(&img, |_, _| {})?;
    let init: [(&str, &[u8]); 3] = [
        ("etc/hostname", b"bench\n"),
        ("etc/hosts", b"127.0.0.1 localhost\n"),
        ("etc/resolv.conf", b""),
    ];
    let mut lib = Vec::new();
    let mut cli = Vec::new();
    for i in 0..runs.max(20) * 5 {
        let id = format!("p{i}");
        let t = Instant::now();
        store.prepare(&id, &img, &init, Snapshotter::Overlay)?;
        lib.push(ms(t));
        store.remove_container(&id)?;
        let t = Instant::now();
        run(Command::new(berth)
            .env("BERTH_ROOT", w)
            .args([
                "rootfs",
                "prepare",
                "--snapshotter",
                "overlay",
                &format!("q{i}"),
                "localhost/bench/debian:1",
            ])
            .stdout(Stdio::null()))?;
        cli.push(ms(t));
        store.remove_container(&format!("q{i}"))?;
    }
    drop(store);
    report(
        &format!(
            "prepare a container rootfs from the unpacked image, {} runs",
            lib.len()
        ),
        &["library (Store::prepare)", "CLI (berth rootfs prepare)"],
        &[lib, cli],
    );

    if skip_pull {
        return Ok(());
    }
    // 3. Pull from a local registry: berth vs skopeo.
    let noise = w.join("noise");
    std::fs::create_dir_all(noise.join("opt/app"))?;
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut data = vec![0u8; 32 << 20];
    for c in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(noise.join("opt/app/blob.bin"), &data)?;
    let app_tar = w.join("app.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&noise)
        .args(["--numeric-owner", "-cf"])
        .arg(&app_tar)
        .arg("."))?;
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -1 -c {0} > {0}.gz", app_tar.display())))?;
    let etc_tar = w.join("etc.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "-cf"])
        .arg(&etc_tar)
        .arg("./etc"))?;
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -6 -c {0} > {0}.gz", etc_tar.display())))?;
    let multi = w.join("multi-layout");
    layout(
        &multi,
        &[
            (tar, gz),
            (&etc_tar, &w.join("etc.tar.gz")),
            (&app_tar, &w.join("app.tar.gz")),
        ],
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        w.join("registry.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            w.join("registry").display()
        ),
    )?;
    let mut reg = Command::new("docker-registry")
        .arg("serve")
        .arg(w.join("registry.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("docker-registry (apt install docker-registry)")?;
    let result = (|| -> Result<()> {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let name = format!("localhost:{port}/bench/multi:1");
        let pusher = w.join("pusher");
        run(Command::new(berth)
            .env("BERTH_ROOT", &pusher)
            .arg("load")
            .arg("-q")
            .arg("-i")
            .arg(&multi))?;
        run(Command::new(berth).env("BERTH_ROOT", &pusher).args([
            "push",
            "-q",
            "localhost/bench/debian:1",
            &name,
        ]))?;
        let names = [
            "berth pull --no-unpack",
            "skopeo copy (to oci dir)",
            "berth pull (+unpack)",
        ];
        // On the disk, and again with every destination in memory: the disk's writeback
        // dominates an unpack here, and says little about the tools.
        let mem = w.join("pullmem");
        std::fs::create_dir_all(&mem)?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4g", "berth-bench-pull"])
            .arg(&mem))?;
        let r = (|| -> Result<()> {
            for (place, base) in [("disk", w), ("tmpfs", mem.as_path())] {
                let mut s: Vec<Vec<f64>> = vec![Vec::new(); 3];
                for round in 0..runs {
                    for k in 0..3 {
                        let i = (round + k) % 3;
                        let dest = base.join(format!("pull-{i}"));
                        sync();
                        let t = Instant::now();
                        if i == 0 || i == 2 {
                            let mut args = vec!["pull", "-q"];
                            if i == 0 {
                                args.push("--no-unpack");
                            }
                            args.push(&name);
                            run(Command::new(berth)
                                .env("BERTH_ROOT", &dest)
                                .args(&args)
                                .stdout(Stdio::null()))?;
                        } else {
                            run(Command::new("skopeo")
                                .args([
                                    "copy",
                                    "-q",
                                    "--src-tls-verify=false",
                                    &format!("docker://{name}"),
                                ])
                                .arg(format!("oci:{}:x", dest.display())))?;
                        }
                        s[i].push(ms(t));
                        remove(&dest);
                    }
                }
                let mib = (std::fs::metadata(gz)?.len()
                    + std::fs::metadata(w.join("app.tar.gz"))?.len())
                    as f64
                    / 1048576.0;
                report(
                    &format!("pull of a 3-layer image ({mib:.0} MiB compressed) from a loopback registry into {place}, {runs} interleaved runs each"),
                    &names,
                    &s,
                );
                println!(
                    "ratio berth --no-unpack/skopeo ({place}): {:.2}",
                    stats::median(&s[0]) / stats::median(&s[1])
                );
                println!(
                    "ratio berth (+unpack)/skopeo ({place}): {:.2}",
                    stats::median(&s[2]) / stats::median(&s[1])
                );
            }
            Ok(())
        })();
        let _ = Command::new("umount").arg("-l").arg(&mem).status();
        r?;
        Ok(())
    })();
    let _ = reg.kill();
    let _ = reg.wait();
    result
}
