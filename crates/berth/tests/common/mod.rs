//! Shared helpers for berth's CLI tests: a private state root per test, a busybox root
//! filesystem, hand-built OCI layouts, and the real registry (Debian's docker-registry)
//! started on a loopback port — plain, with htpasswd, with TLS from a test CA, or with
//! bearer tokens from a small token service — optionally behind a fault-injecting proxy.
#![allow(dead_code)]

pub mod cluster;
#[path = "../../../apiserver/tests/common/pyvenv.rs"]
pub mod pyvenv;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest as _;

/// The berth binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// A binary the workspace build puts next to berth.
fn built_bin(name: &str) -> PathBuf {
    let p = Path::new(bin()).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        p.display()
    );
    p
}

/// berth-runtime, built next to berth by the workspace build (`cargo nextest run
/// --workspace`, as scripts/test.sh runs it).
pub fn runtime_bin() -> PathBuf {
    built_bin("berth-runtime")
}

/// berth-monitor, built by the workspace build too (its own integration tests make
/// cargo build it). Named explicitly so that an older berth-monitor installed on PATH
/// is never the one under test.
pub fn monitor_bin() -> PathBuf {
    built_bin("berth-monitor")
}

/// A private berth state root (and scratch space), removed at the end.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub auth: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-cli-test")
            .tempdir()
            .unwrap();
        let auth = dir.path().join("auth.json");
        Env { dir, auth }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("BERTH_ROOT", self.root())
            .env("BERTH_RUNTIME", runtime_bin())
            .env("BERTH_MONITOR", monitor_bin())
            .env("BERTH_AUTH_FILE", &self.auth)
            .env("HOME", self.dir.path())
            .env_remove("XDG_RUNTIME_DIR");
        c
    }

    /// Runs berth; returns the output whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs berth and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs berth and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "berth {args:?} should fail:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Image names (`berth images --format json`), as "repo:tag".
    pub fn image_names(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ok(&["images", "--format", "json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}:{}",
                    i["Repository"].as_str().unwrap(),
                    i["Tag"].as_str().unwrap()
                )
            })
            .collect()
    }

    /// Imports a busybox rootfs as `name`; returns the image ID.
    pub fn busybox_image(&self, name: &str) -> String {
        let tgz = self.path("busybox.tgz");
        if !tgz.exists() {
            std::fs::write(&tgz, gzip(&busybox_tar())).unwrap();
        }
        self.ok(&["import", "-c", r#"CMD ["sh"]"#, tgz.to_str().unwrap(), name])
            .trim()
            .to_string()
    }

    /// The engine over this root, with the test's own network records (`net`).
    pub fn engine(&self) -> berth_engine::Core {
        // SAFETY of set_var: nextest runs each test in a process of its own; the
        // variables only name the binaries under test and the test's own records.
        std::env::set_var("BERTH_RUNTIME", runtime_bin());
        std::env::set_var("BERTH_MONITOR", monitor_bin());
        std::env::set_var("BERTH_NET_ROOT", self.path("net"));
        berth_engine::Core::open(&self.root()).unwrap()
    }

    /// Removes every sandbox of the root (with its containers) and the pod network:
    /// what a test that ran pods leaves when it fails.
    pub fn remove_pods(&self) {
        use berth_engine::cri::RuntimeService;
        let core = self.engine();
        if let Ok(all) = core.list_pod_sandbox(&berth_engine::cri::SandboxFilter {
            include_lean: true,
            ..Default::default()
        }) {
            for s in all {
                let _ = core.remove_pod_sandbox(&s.id);
            }
        }
        let _ = berth_net::network::Networks::host().remove(&core.pod_network().name);
    }

    /// Files directly in the store's snapshot directory (leftover checks).
    pub fn snapshot_entries(&self) -> Vec<String> {
        match std::fs::read_dir(self.root().join("image/s")) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Env {
    /// A failed test may leave containers and rootfs mounts: remove the containers
    /// (their runtime state, cgroups and processes live outside this directory), then
    /// detach what is still mounted so the directory can go.
    fn drop(&mut self) {
        if self.root().join("containers").exists() {
            if let Ok(o) = self.cmd(&["ps", "-a", "-q"]).stdin(Stdio::null()).output() {
                for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = self.cmd(&["rm", "-f", id]).stdin(Stdio::null()).output();
                }
            }
        }
        berth_cgroups::mountinfo::unmount_under(self.dir.path());
    }
}

/// A tar of a minimal busybox root filesystem (busybox + a few applet links + /etc).
pub fn busybox_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "bin");
    dir(&mut b, "etc");
    dir(&mut b, "tmp");
    let bb = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    file(&mut b, "bin/busybox", &bb, 0o755);
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for a in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        symlink(&mut b, &format!("bin/{a}"), "busybox");
    }
    file(
        &mut b,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    );
    file(&mut b, "etc/os-release", b"NAME=busybox-test\n", 0o644);
    b.into_inner().unwrap()
}

pub fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

pub fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, path, data).unwrap();
}

pub fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    b.append_link(&mut h, path, target).unwrap();
}

/// A one-file layer tar.
pub fn layer_with(path: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    if let Some((d, _)) = path.rsplit_once('/') {
        dir(&mut b, d);
    }
    file(&mut b, path, data, 0o644);
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Pseudo-random incompressible bytes (xorshift), so layers have real transfer sizes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// One image of a hand-built OCI layout.
pub struct LayoutImage {
    pub name: Option<String>,
    pub arch: String,
    /// Layer tars (uncompressed); stored gzip-compressed unless `media_type` says tar.
    pub layers: Vec<Vec<u8>>,
    pub media_type: Option<String>,
}

/// Writes an OCI image layout directory with these images; returns the manifest digests.
pub fn write_layout(dir: &Path, images: &[LayoutImage]) -> Vec<String> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = sha(data);
        std::fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        (d, data.len())
    };
    let mut manifests = Vec::new();
    let mut digests = Vec::new();
    for img in images {
        let mut diff_ids = Vec::new();
        let mut descs = Vec::new();
        for l in &img.layers {
            diff_ids.push(sha(l));
            let (blob, mt) = match img.media_type.as_deref() {
                Some(mt)
                    if mt.ends_with(".tar") || mt == "application/vnd.oci.image.layer.v1.tar" =>
                {
                    (l.clone(), mt.to_string())
                }
                Some(mt) => (gzip(l), mt.to_string()),
                None => (
                    gzip(l),
                    "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
                ),
            };
            let (d, n) = put(&blob);
            descs.push(json!({"mediaType": mt, "digest": d, "size": n}));
        }
        let config = json!({
            "created": "2024-01-01T00:00:00Z", "architecture": img.arch, "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": img.layers.iter().map(|_| json!({"created": "2024-01-01T00:00:00Z", "created_by": "test layer"})).collect::<Vec<_>>(),
        });
        let (cd, cn) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": descs,
        });
        let (md, mn) = put(&serde_json::to_vec(&manifest).unwrap());
        let mut desc = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
                              "platform": {"os": "linux", "architecture": img.arch}});
        if let Some(n) = &img.name {
            desc["annotations"] = json!({"io.containerd.image.name": n});
        }
        manifests.push(desc);
        digests.push(md);
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    digests
}

/// Writes a layout whose only entry is a multi-platform index named `name`, over an
/// arm64 and an amd64 image (each with its architecture in /etc/arch); returns the
/// index digest.
pub fn write_multi_platform_layout(dir: &Path, name: &str) -> String {
    write_layout(
        dir,
        &[
            LayoutImage {
                name: None,
                arch: "arm64".into(),
                layers: vec![busybox_tar(), layer_with("etc/arch", b"arm64")],
                media_type: None,
            },
            LayoutImage {
                name: None,
                arch: "amd64".into(),
                layers: vec![busybox_tar(), layer_with("etc/arch", b"amd64")],
                media_type: None,
            },
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let inner = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index["manifests"]})).unwrap();
    let d = sha(&inner);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), &inner).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": inner.len(), "annotations": {"io.containerd.image.name": name}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    d
}

#[path = "../../../store/tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

fn wait_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "docker-registry exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not listen on {port}");
}

/// How a test registry authenticates.
#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    None,
    Htpasswd { user: String, password: String },
    Token { user: String, password: String },
}

/// Debian's docker-registry on a loopback port, killed (by PID) on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub host: String,
    child: Child,
    token: Option<TokenServer>,
    /// The CA directory clients need (for TLS registries).
    pub ca_dir: Option<PathBuf>,
}

impl Registry {
    pub fn start(auth: Auth, tls: bool) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut ca_dir = None;
        if tls {
            let (ca_pem, cert_pem, key_pem) = tls_certs();
            let cd = dir.path().join("ca");
            std::fs::create_dir_all(&cd).unwrap();
            std::fs::write(cd.join("ca.crt"), ca_pem).unwrap();
            std::fs::write(dir.path().join("server.crt"), cert_pem).unwrap();
            std::fs::write(dir.path().join("server.key"), key_pem).unwrap();
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
            ca_dir = Some(cd);
        }
        let mut token = None;
        match &auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 5).unwrap();
                std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                ));
            }
            Auth::Token { user, password } => {
                let t = TokenServer::start(user, password);
                std::fs::write(dir.path().join("token.crt"), &t.cert_pem).unwrap();
                cfg.push_str(&format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: berth-test-registry\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                    t.port,
                    dir.path().join("token.crt").display()
                ));
                token = Some(t);
            }
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.path().join("registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("registry.err")).unwrap())
            .spawn()
            .expect("docker-registry is installed");
        wait_port(port, &mut child, &dir.path().join("registry.err"));
        Registry {
            host: format!("localhost:{port}"),
            dir,
            port,
            child,
            token,
            ca_dir,
        }
    }

    /// The registry's file for a blob (to corrupt or remove it).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate for localhost/127.0.0.1 signed by it (PEM).
pub fn tls_certs() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A minimal bearer-token service as the distribution spec describes: checks basic
/// credentials and signs an ES256 JWT granting the requested scopes.
pub struct TokenServer {
    pub port: u16,
    pub cert_pem: String,
    pub requests: Arc<AtomicUsize>,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenServer {
    fn start(user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["berth-test-issuer".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth-test-issuer");
        let cert = params.self_signed(&key).unwrap();
        let cert_der = cert.der().to_vec();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                reqs.fetch_add(1, Ordering::SeqCst);
                let Some((head, _)) = read_head(&mut s) else {
                    continue;
                };
                let first = head.lines().next().unwrap_or("").to_string();
                let target = first.split(' ').nth(1).unwrap_or("");
                let authz = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map(|l| l[14..].trim().to_string());
                if authz.as_deref() != Some(expected.as_str()) {
                    let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                let mut access = Vec::new();
                for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                    if k == "scope" {
                        let parts: Vec<&str> = v.split(':').collect();
                        if parts.len() == 3 {
                            access.push(json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                        }
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = json!({"alg": "ES256", "typ": "JWT", "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert_der)]});
                let claims = json!({"iss": "berth-test-issuer", "sub": "test", "aud": "berth-test-registry",
                    "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", reqs.load(Ordering::SeqCst)), "access": access});
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let sig = signer
                    .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
                    .unwrap();
                let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
                let body = json!({"token": token, "expires_in": 600}).to_string();
                let _ = s.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
            }
        });
        TokenServer {
            port,
            cert_pem: cert.pem(),
            requests,
        }
    }
}

/// Reads an HTTP head; returns it and any body bytes read past it.
fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            return Some((head, buf[i + 4..].to_vec()));
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        .and_then(|l| l[15..].trim().parse().ok())
        .unwrap_or(0)
}

/// What the fault proxy does to requests.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer the first N requests with this status.
    Status { status: u16, first: usize },
    /// Cut the first N blob downloads after half their body.
    CutBlob { first: usize },
    /// Send blob bodies slowly (bytes per 10 ms).
    SlowBlob { bytes_per_tick: usize },
    /// Answer every request with this status.
    Always(u16),
}

/// An HTTP/1.1 proxy in front of a registry that injects faults (one request per
/// connection: every response says `Connection: close`).
pub struct FaultProxy {
    pub port: u16,
    pub host: String,
    pub hits: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn start(upstream: u16, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let blob_count = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(s) = conn else { continue };
                let fault = fault.clone();
                let counter = counter.clone();
                let blob_count = blob_count.clone();
                std::thread::spawn(move || proxy_one(s, upstream, fault, counter, blob_count));
            }
        });
        FaultProxy {
            port,
            host: format!("localhost:{port}"),
            hits,
        }
    }
}

fn proxy_one(
    mut s: TcpStream,
    upstream: u16,
    fault: Fault,
    counter: Arc<AtomicUsize>,
    blob_count: Arc<AtomicUsize>,
) {
    // A TLS ClientHello (a client probing for HTTPS): close, as a plain server would.
    let mut first_byte = [0u8; 1];
    if s.peek(&mut first_byte).map_or(true, |k| k == 0) || first_byte[0] == 0x16 {
        return;
    }
    let Some((head, mut body)) = read_head(&mut s) else {
        return;
    };
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let want = content_length(&head);
    while body.len() < want {
        let mut chunk = vec![0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(k) => body.extend_from_slice(&chunk[..k]),
        }
    }
    let first = head.lines().next().unwrap_or("").to_string();
    let is_blob_get = first.starts_with("GET ") && first.contains("/blobs/sha256:");
    match &fault {
        Fault::Status { status, first: k } if n < *k => {
            let _ = write!(s, "HTTP/1.1 {status} Injected\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        Fault::Always(status) => {
            let _ = write!(
                s,
                "HTTP/1.1 {status} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        _ => {}
    }
    // Forward with Connection: close so the upstream ends its response with EOF.
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
    let mut out = String::new();
    for (i, line) in head.lines().enumerate() {
        let l = line.to_ascii_lowercase();
        if i > 0 && (l.starts_with("connection:") || l.starts_with("host:")) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n"
    ));
    up.write_all(out.as_bytes()).unwrap();
    up.write_all(&body).unwrap();
    let mut resp = Vec::new();
    let _ = up.read_to_end(&mut resp);
    let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        let _ = s.write_all(&resp);
        return;
    };
    let (rhead, rbody) = (&resp[..split + 4], &resp[split + 4..]);
    let ok_blob = is_blob_get && rhead.starts_with(b"HTTP/1.1 20");
    match fault {
        Fault::CutBlob { first }
            if ok_blob
                && rbody.len() > 1024
                && blob_count.fetch_add(1, Ordering::SeqCst) < first =>
        {
            let _ = s.write_all(rhead);
            let _ = s.write_all(&rbody[..rbody.len() / 2]);
            // Dropping the socket cuts the transfer.
        }
        Fault::SlowBlob { bytes_per_tick } if ok_blob => {
            let _ = s.write_all(rhead);
            for c in rbody.chunks(bytes_per_tick.max(1)) {
                if s.write_all(c).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        _ => {
            let _ = s.write_all(&resp);
        }
    }
}

/// podman with a private root (and tmpdir, which `podman load` needs to be private).
pub fn podman(env: &Env, args: &[&str]) -> Output {
    let base = env.path("podman");
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(base.join("root"))
        .arg("--runroot")
        .arg(base.join("run"))
        .arg("--tmpdir")
        .arg(base.join("tmp"))
        .arg("--storage-driver")
        .arg("vfs")
        .args(args)
        .env("HOME", env.dir.path())
        .env("XDG_RUNTIME_DIR", base.join("xdg"));
    std::fs::create_dir_all(base.join("xdg")).unwrap();
    c.output().unwrap()
}

pub fn must(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Removes podman's state (its vfs layers are root-owned copies).
pub fn podman_cleanup(env: &Env) {
    let _ = podman(env, &["system", "reset", "-f"]);
}

/// An HTTP/1.0 GET to `addr` (host:port): the body of the answer.
pub fn http_get(addr: &str, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&all)));
    all.split_off(at + 4)
}

/// A tokio runtime for tests that drive gRPC clients and servers (two workers).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
