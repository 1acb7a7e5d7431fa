//! Test harness: an API server in this process (its own data directory and port),
//! kubectl and curl pointed at it.

#![allow(dead_code)]

pub mod pyvenv;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A running server.
pub struct Server {
    /// Its data directory.
    pub dir: tempfile::TempDir,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// host:port.
    pub addr: std::net::SocketAddr,
    /// The runtime serving it.
    pub rt: tokio::runtime::Runtime,
    /// The server's state.
    pub api: std::sync::Arc<berth_apiserver::api::Api>,
}

impl Server {
    /// Starts a server on SQLite.
    pub fn start() -> Server {
        Server::start_with(|_| {})
    }

    /// Starts a server with a tweaked configuration.
    pub fn start_with(tweak: impl FnOnce(&mut berth_apiserver::Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, tweak)
    }

    /// Starts a server on an existing data directory.
    pub fn start_in(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut berth_apiserver::Config),
    ) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut cfg = berth_apiserver::Config::new(dir.path().join("server"));
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut cfg);
        let s = rt
            .block_on(berth_apiserver::start(cfg))
            .expect("server starts");
        let end = Instant::now() + Duration::from_secs(20);
        while !s.api.ready.load(std::sync::atomic::Ordering::Acquire) {
            assert!(Instant::now() < end, "the server never became ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        Server {
            kubeconfig: s.kubeconfig.clone(),
            addr: s.addr,
            api: s.api.clone(),
            dir,
            rt,
        }
    }

    /// The PKI directory.
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("server/pki")
    }

    /// Runs kubectl with `args`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_env(args, &[])
    }

    /// Runs kubectl with extra environment.
    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("kubectl (v1.32) is installed")
    }

    /// Runs kubectl, feeding `stdin`.
    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// kubectl with stdin that must succeed; returns stdout.
    pub fn ok_in(&self, args: &[&str], stdin: &str) -> String {
        let o = self.kubectl_in(args, stdin);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// kubectl that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            !o.status.success(),
            "kubectl {args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A raw HTTPS request with curl: (status, body). `auth`: "admin" (client
    /// certificate), "none", or "Bearer TOKEN".
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        content_type: &str,
        body: Option<&Path>,
    ) -> (u16, String) {
        let pki = self.pki();
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(pki.join("ca.crt"));
        match auth {
            "admin" => {
                c.arg("--cert")
                    .arg(pki.join("admin.crt"))
                    .arg("--key")
                    .arg(pki.join("admin.key"));
            }
            "none" => {}
            t => {
                c.arg("-H").arg(format!("Authorization: {t}"));
            }
        }
        if let Some(b) = body {
            c.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .arg("--data-binary")
                .arg(format!("@{}", b.display()));
        }
        c.arg(format!("https://{}{path}", self.addr));
        let o = c.output().expect("curl");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A kube-rs client for the admin user.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

/// Writes `text` to a file in `dir`; returns its path.
pub fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
