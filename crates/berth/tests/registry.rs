//! Pull and push against the real registry (Debian's docker-registry) on loopback: plain
//! HTTP, htpasswd basic auth, TLS with a test CA, bearer tokens; and faults — 5xx/429,
//! connections cut mid-blob, corrupt and missing blobs, unknown tags, two pulls at once,
//! kill -9 in the middle of a pull, a full disk.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// An image of several layers (busybox + two noise layers + a whiteout), loaded as `name`.
fn multi_layer_image(env: &Env, name: &str, noise_bytes: usize) {
    let dir = env.path(&format!("layout-{}", name.replace(['/', ':'], "_")));
    let mut top = tar::Builder::new(Vec::new());
    file(&mut top, "etc/.wh.os-release", b"", 0o644);
    file(&mut top, "etc/motd", b"hello from the top layer\n", 0o644);
    write_layout(
        &dir,
        &[LayoutImage {
            name: Some(name.to_string()),
            arch: "amd64".into(),
            layers: vec![
                busybox_tar(),
                layer_with("data/a.bin", &noise(noise_bytes, 1)),
                layer_with("data/b.bin", &noise(noise_bytes, 2)),
                top.into_inner().unwrap(),
            ],
            media_type: None,
        }],
    );
    env.ok(&["load", "-q", "-i", dir.to_str().unwrap()]);
}

fn check_pulled(env: &Env, name: &str) {
    let id = format!("chk{}", std::process::id());
    let r = env.ok(&["rootfs", "prepare", &id, name]).trim().to_string();
    let r = std::path::Path::new(&r);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/motd")).unwrap(),
        "hello from the top layer\n"
    );
    assert!(!r.join("etc/os-release").exists());
    assert!(r.join("bin/busybox").exists());
    env.ok(&["rootfs", "rm", &id]);
}

#[test]
fn push_pull_plain_registry_and_skopeo_agrees() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    multi_layer_image(&env, "localhost/app:1", 300_000);
    let dest = format!("{}/team/app:1", reg.host);
    let out = env.ok(&["push", "app:1", &dest]);
    assert!(out.contains("digest: sha256:"), "{out}");
    // Pushing again: every blob exists already.
    let o = env.run(&["push", "app:1", &dest]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    // A second repository in the same registry: blobs are mounted, not uploaded.
    let o = env.run(&["push", "app:1", &format!("{}/other/app:2", reg.host)]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mounted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // skopeo reads what berth pushed, with the same digest.
    let pushed_digest = out
        .split("digest: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let sk = must(
        std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{dest}")])
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    let v: Value = serde_json::from_str(&sk).unwrap();
    assert_eq!(v["Digest"], pushed_digest.as_str());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4);

    // A fresh store pulls it, by tag and by digest.
    let env2 = Env::new();
    let out = env2.ok(&["pull", &dest]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    check_pulled(&env2, &dest);
    let out = env2.ok(&["pull", &dest]);
    assert!(out.contains("Image is up to date"), "{out}");
    let by_digest = format!("{}/team/app@{pushed_digest}", reg.host);
    env2.ok(&["pull", "-q", &by_digest]);
    // Unknown tag and unknown repository: clear errors.
    let e = env2.fails(&["pull", &format!("{}/team/app:nope", reg.host)]);
    assert!(e.contains("not found"), "{e}");
    let e = env2.fails(&["pull", &format!("{}/nobody/here:1", reg.host)]);
    assert!(e.contains("not found") || e.contains("NAME_UNKNOWN"), "{e}");

    // What skopeo pushes, berth pulls (docker schema 2 media types).
    let oci = env.path("sk-oci");
    env.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        oci.to_str().unwrap(),
        "app:1",
    ]);
    must(
        std::process::Command::new("skopeo")
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--format",
                "v2s2",
                &format!("oci:{}", oci.display()),
                &format!("docker://{}/sk/app:v2s2", reg.host),
            ])
            .output()
            .unwrap(),
        "skopeo copy",
    );
    let env3 = Env::new();
    env3.ok(&["pull", &format!("{}/sk/app:v2s2", reg.host)]);
    check_pulled(&env3, &format!("{}/sk/app:v2s2", reg.host));
}

#[test]
fn htpasswd_login_push_pull_logout() {
    let reg = Registry::start(
        Auth::Htpasswd {
            user: "alice".into(),
            password: "s3cret".into(),
        },
        false,
    );
    let env = Env::new();
    env.busybox_image("localhost/bb:1");
    let dest = format!("{}/bb:1", reg.host);
    let e = env.fails(&["push", "bb:1", &dest]);
    assert!(e.contains("401") && e.contains("berth login"), "{e}");
    let e = env.fails(&["login", "-u", "alice", "-p", "wrong", &reg.host]);
    assert!(e.contains("401"), "{e}");
    assert!(!env.auth.exists());
    let mut c = env.cmd(&["login", "-u", "alice", "--password-stdin", &reg.host]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Login Succeeded"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&env.auth).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    env.ok(&["push", "bb:1", &dest]);
    let env2 = Env::new();
    let e = env2.fails(&["pull", &dest]);
    assert!(e.contains("401"), "{e}");
    env2.ok(&["pull", "--creds", "alice:s3cret", &dest]);
    env.ok(&["logout", &reg.host]);
    let e = env.fails(&["pull", &dest]);
    assert!(e.contains("401"), "{e}");
}

#[test]
fn tls_registry_with_a_test_ca() {
    let reg = Registry::start(Auth::None, true);
    let env = Env::new();
    env.busybox_image("localhost/bb:1");
    let ca = reg.ca_dir.clone().unwrap();
    let dest = format!("127.0.0.1:{}/bb:1", reg.port);
    // Without the CA: the certificate is refused (no silent fallback to HTTP for
    // a registry that is not localhost).
    let e = env.fails(&["push", "bb:1", &dest]);
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    env.ok(&["push", "--cert-dir", ca.to_str().unwrap(), "bb:1", &dest]);
    let env2 = Env::new();
    env2.ok(&["pull", "--cert-dir", ca.to_str().unwrap(), &dest]);
    // podman's switch: no verification at all.
    let env3 = Env::new();
    env3.ok(&["pull", "--tls-verify=false", &dest]);
}

#[test]
fn bearer_token_auth() {
    let reg = Registry::start(
        Auth::Token {
            user: "bob".into(),
            password: "tok-pass".into(),
        },
        false,
    );
    let env = Env::new();
    multi_layer_image(&env, "localhost/tok:1", 50_000);
    let dest = format!("{}/proj/tok:1", reg.host);
    let e = env.fails(&["push", "bb:1", &dest]);
    assert!(!e.is_empty());
    let e = env.fails(&["push", "--creds", "bob:wrong", "tok:1", &dest]);
    assert!(e.contains("token service refused"), "{e}");
    env.ok(&["login", "-u", "bob", "-p", "tok-pass", &reg.host]);
    env.ok(&["push", "tok:1", &dest]);
    let env2 = Env::new();
    env2.ok(&["pull", "--creds", "bob:tok-pass", &dest]);
    check_pulled(&env2, &dest);
}

#[test]
fn retries_5xx_429_and_resumes_cut_downloads() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    multi_layer_image(&env, "localhost/flaky:1", 400_000);
    let dest = format!("{}/flaky:1", reg.host);
    env.ok(&["push", "flaky:1", &dest]);
    for fault in [
        Fault::Status {
            status: 503,
            first: 3,
        },
        Fault::Status {
            status: 429,
            first: 2,
        },
        Fault::CutBlob { first: 2 },
    ] {
        let proxy = FaultProxy::start(reg.port, fault.clone());
        let env2 = Env::new();
        let name = format!("{}/flaky:1", proxy.host);
        env2.ok(&["pull", &name]);
        check_pulled(&env2, &name);
        assert!(
            proxy.hits.load(std::sync::atomic::Ordering::SeqCst) > 3,
            "{fault:?}"
        );
    }
    // A registry that keeps failing: a clear error after the retries, nothing stored.
    let proxy = FaultProxy::start(reg.port, Fault::Always(502));
    let env3 = Env::new();
    let e = env3.fails(&["pull", &format!("{}/flaky:1", proxy.host)]);
    assert!(e.contains("502") && e.contains("try again later"), "{e}");
    assert!(env3.image_names().is_empty());
}

#[test]
fn corrupt_and_missing_blobs_in_the_registry() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    multi_layer_image(&env, "localhost/c:1", 100_000);
    let dest = format!("{}/c:1", reg.host);
    env.ok(&["push", "c:1", &dest]);
    let sk: Value = serde_json::from_str(&must(
        std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{dest}")])
            .output()
            .unwrap(),
        "skopeo inspect",
    ))
    .unwrap();
    let layer = sk["Layers"][1].as_str().unwrap().to_string();
    let data_path = reg.blob_data(&layer);
    let good = std::fs::read(&data_path).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x55;
    std::fs::write(&data_path, &bad).unwrap();
    let env2 = Env::new();
    let e = env2.fails(&["pull", &dest]);
    assert!(e.contains(&layer) && e.contains("hashes to"), "{e}");
    assert!(env2.image_names().is_empty(), "no half image listed");
    std::fs::remove_file(&data_path).unwrap();
    let e = env2.fails(&["pull", &dest]);
    assert!(e.contains("not found") || e.contains("404"), "{e}");
    std::fs::write(&data_path, &good).unwrap();
    env2.ok(&["pull", &dest]);
    check_pulled(&env2, &dest);
    env2.ok(&["image", "prune"]);
    assert!(std::fs::read_dir(env2.root().join("image/ingest"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn concurrent_pulls_and_kill_during_pull() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    multi_layer_image(&env, "localhost/cc:1", 1_000_000);
    let dest = format!("{}/cc:1", reg.host);
    env.ok(&["push", "cc:1", &dest]);

    // Two pulls of the same image into one store at once.
    let env2 = Env::new();
    let a = env2
        .cmd(&["pull", "-q", &dest])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = env2
        .cmd(&["pull", "-q", &dest])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(env2.image_names().len(), 1);
    check_pulled(&env2, &dest);

    // kill -9 in the middle of a slow pull: nothing listed, the next pull completes.
    let proxy = FaultProxy::start(
        reg.port,
        Fault::SlowBlob {
            bytes_per_tick: 20_000,
        },
    );
    let slow = format!("{}/cc:1", proxy.host);
    let env3 = Env::new();
    let mut child = env3
        .cmd(&["pull", "-q", &slow])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ingest = std::fs::read_dir(env3.root().join("image/ingest"))
            .map(|d| d.count())
            .unwrap_or(0);
        if ingest > 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env3.image_names().is_empty());
    env3.ok(&["pull", "-q", &dest]);
    check_pulled(&env3, &dest);
    env3.ok(&["image", "prune"]);
    assert!(std::fs::read_dir(env3.root().join("image/ingest"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn disk_full_mid_pull() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    multi_layer_image(&env, "localhost/big:1", 3_000_000);
    let dest = format!("{}/big:1", reg.host);
    env.ok(&["push", "big:1", &dest]);
    let small = Env::new();
    std::fs::create_dir_all(small.root()).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "berth-test-full"])
        .arg(small.root())
        .status()
        .unwrap();
    assert!(st.success());
    let e = small.fails(&["pull", "-q", &dest]);
    assert!(e.contains("No space left on device"), "{e}");
    assert!(small.image_names().is_empty());
    small.ok(&["image", "prune"]);
    assert!(std::fs::read_dir(small.root().join("image/ingest"))
        .unwrap()
        .next()
        .is_none());
    // Env's drop unmounts the tmpfs.
}

#[test]
fn multi_platform_push_and_pull_of_another_platform() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    let dir = env.path("multi");
    let d = write_multi_platform_layout(&dir, "localhost/multi:1");
    env.ok(&["load", "-i", dir.to_str().unwrap()]);
    let dest = format!("{}/multi:1", reg.host);
    let out = env.ok(&["push", "multi:1", &dest]);
    assert!(out.contains(&d), "the whole index is pushed: {out}");

    // Only the arm64 image is pulled; berth still lists, prepares and keeps it.
    let env2 = Env::new();
    env2.ok(&["pull", "--platform", "linux/arm64", &dest]);
    assert_eq!(env2.image_names(), std::slice::from_ref(&dest));
    let arch = env2.ok(&["image", "inspect", "-f", "{{.Architecture}}", &dest]);
    assert_eq!(arch.trim(), "arm64");
    let snaps = env2.snapshot_entries().len();
    env2.ok(&["image", "prune"]);
    assert_eq!(
        env2.snapshot_entries().len(),
        snaps,
        "prune keeps the pulled platform's layers"
    );
    let r = env2
        .ok(&["rootfs", "prepare", "a", &dest])
        .trim()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&r).join("etc/arch")).unwrap(),
        "arm64"
    );
    env2.ok(&["rootfs", "rm", "a"]);
}

#[test]
fn a_blob_corrupted_in_the_store_is_repaired_by_pulling_again() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    multi_layer_image(&env, "localhost/fix:1", 200_000);
    let dest = format!("{}/fix:1", reg.host);
    env.ok(&["push", "fix:1", &dest]);
    let env2 = Env::new();
    env2.ok(&["pull", "--no-unpack", &dest]);
    // Damage the largest blob on disk.
    let blobs = env2.root().join("image/blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = std::fs::read(&victim).unwrap();
    let n = data.len();
    data[n / 3] ^= 0xff;
    std::fs::write(&victim, data).unwrap();
    let e = env2.fails(&["rootfs", "prepare", "x", &dest]);
    assert!(e.contains("corrupt") && e.contains("removed"), "{e}");
    env2.ok(&["pull", "--no-unpack", &dest]);
    check_pulled(&env2, &dest);
}

/// The engine's CRI-shaped ImageService, as the node agent calls it in process:
/// PullImage with the credentials kubelet hands over (user and password, or docker's
/// base64 `auth`), ImageStatus, ListImages, ImageFsInfo, RemoveImage.
#[test]
fn image_service_pulls_with_credentials_and_answers_for_its_images() {
    use berth_engine::cri::{AuthConfig, ImageService};
    let reg = Registry::start(
        Auth::Htpasswd {
            user: "kube".into(),
            password: "n0de-pass".into(),
        },
        false,
    );
    let env = Env::new();
    env.busybox_image("localhost/bb:1");
    let dest = format!("{}/team/bb:1", reg.host);
    env.ok(&["push", "-q", "--creds", "kube:n0de-pass", "bb:1", &dest]);
    // SAFETY of set_var: nextest runs each test in a process of its own, before any
    // thread of this test; no stored login may stand in for the credentials given.
    std::env::set_var("BERTH_AUTH_FILE", env.path("no-such-auth.json"));
    let core = berth_engine::Core::open(&env.path("core-root")).unwrap();
    let e = core
        .pull_image(&dest, None)
        .expect_err("401 without credentials");
    assert!(e.to_string().contains("401"), "{e}");
    let wrong = AuthConfig {
        username: "kube".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = core.pull_image(&dest, Some(&wrong)).expect_err("401");
    assert!(e.to_string().contains("401"), "{e}");
    let id = core
        .pull_image(
            &dest,
            Some(&AuthConfig {
                username: "kube".into(),
                password: "n0de-pass".into(),
                ..Default::default()
            }),
        )
        .unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    // docker's config.json form: base64 of user:password; pulling again is a no-op.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode("kube:n0de-pass");
    let again = core
        .pull_image(
            &dest,
            Some(&AuthConfig {
                auth: encoded,
                ..Default::default()
            }),
        )
        .unwrap();
    assert_eq!(again, id);
    let img = core.image_status(&dest).unwrap().expect("pulled");
    assert_eq!(img.id, id);
    assert!(img.repo_tags.contains(&dest), "{img:?}");
    assert!(
        img.repo_digests
            .iter()
            .any(|d| d.starts_with(&format!("{}/team/bb@sha256:", reg.host))),
        "{img:?}"
    );
    assert!(img.size > 0, "{img:?}");
    assert!(core.list_images(None).unwrap().iter().any(|i| i.id == id));
    let fs = core.image_fs_info().unwrap();
    assert!(
        fs.iter().any(|f| f.used_bytes > 0 && f.inodes_used > 0),
        "{fs:?}"
    );
    core.remove_image(&dest).unwrap();
    assert!(core.image_status(&dest).unwrap().is_none());
    // Removing what is not there succeeds, as CRI asks.
    core.remove_image(&dest).unwrap();
}

#[test]
fn run_and_create_pull_an_image_not_in_the_store_as_docker_does() {
    let reg = Registry::start(Auth::None, false);
    let env = Env::new();
    multi_layer_image(&env, "localhost/app:1", 1000);
    let image = format!("{}/team/app:1", reg.host);
    env.ok(&["push", "-q", "app:1", &image]);

    // A fresh store: `run` pulls first (progress on stderr), then runs.
    let env2 = Env::new();
    let o = env2.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "cat",
        "/etc/motd",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out, "hello from the top layer\n");
    assert!(
        err.contains(&format!("Unable to find image '{image}' locally"))
            && err.contains("Downloaded newer image"),
        "{err}"
    );
    // Stored now: no pull, no message.
    let o = env2.run(&["run", "--rm", "--network", "none", &image, "true"]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("Unable to find"));
    // --pull=always asks the registry again.
    let o = env2.run(&[
        "run",
        "--rm",
        "--pull=always",
        "--network",
        "none",
        &image,
        "true",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Image is up to date"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // `create` pulls too; --pull=never refuses, naming the way out.
    let env3 = Env::new();
    let e = env3.fails(&["create", "--pull=never", &image]);
    assert!(
        e.contains("--pull=never") && e.contains("pull, load or import"),
        "{e}"
    );
    let id = env3.ok(&["create", "-q", "--network", "none", &image, "true"]);
    assert!(!id.trim().is_empty());
    env3.ok(&["rm", id.trim()]);
    // A name no registry has: the registry's answer, not a panic.
    let e = env3.fails(&["run", "--rm", &format!("{}/team/nope:1", reg.host), "true"]);
    assert!(e.contains("not found") || e.contains("NAME_UNKNOWN"), "{e}");
}
