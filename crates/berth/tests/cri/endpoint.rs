//! `berth cri` as a test starts it: the real binary on a socket of the test's own, over
//! a state root, pod CIDR and network records of its own, and a gRPC client generated
//! from the same CRI protos crictl and the kubelet use.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::common::cluster::lease_cidr_octet;
use crate::common::Env;

/// A running `berth cri`, stopped with SIGTERM when dropped; whatever it ran is
/// removed then, also when the test failed.
pub struct Cri {
    pub env: Env,
    pub socket: PathBuf,
    pub cidr_octet: u32,
    child: Option<Child>,
    _cidr_lock: std::fs::File,
}

impl Cri {
    /// Starts `berth cri` with busybox stored as `localhost/busybox:1`.
    pub fn start() -> Cri {
        Cri::start_with(|_| Vec::new())
    }

    /// Starts it with extra flags, made from the test's environment.
    pub fn start_with(flags: impl FnOnce(&Env) -> Vec<String>) -> Cri {
        let env = Env::new();
        let extra = flags(&env);
        env.busybox_image("localhost/busybox:1");
        let (octet, lock) = lease_cidr_octet();
        let socket = env.path("cri.sock");
        let log = std::fs::File::create(env.path("cri.log")).unwrap();
        let child = env
            .cmd(&["cri", "--socket"])
            .arg(&socket)
            .arg("--pod-cidr")
            .arg(format!("10.46.{octet}.0/24"))
            .args(&extra)
            .env("BERTH_NET_ROOT", env.path("net"))
            // No stored login stands in for the credentials a pull is given.
            .env("BERTH_AUTH_FILE", env.path("no-such-auth.json"))
            .env("BERTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut cri = Cri {
            env,
            socket,
            cidr_octet: octet,
            child: Some(child),
            _cidr_lock: lock,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&cri.socket).is_err() {
            if let Some(st) = cri.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berth cri exited ({st}):\n{}", cri.log());
            }
            assert!(
                Instant::now() < end,
                "berth cri did not listen:\n{}",
                cri.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cri
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.env.path("cri.log")).unwrap_or_default()
    }

    /// A channel to the socket.
    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await
    }

    /// Both clients on one channel.
    pub async fn clients(&self) -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
        let ch = self.channel().await;
        (
            RuntimeServiceClient::new(ch.clone()),
            ImageServiceClient::new(ch),
        )
    }

    /// Stops the server (SIGTERM) and returns how it exited.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&c),
            rustix::process::Signal::TERM,
        );
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        self.stop();
        self.env.remove_pods();
        berth_cgroups::mountinfo::unmount_under(self.env.dir.path());
    }
}

/// A gRPC channel to the socket.
pub async fn connect(socket: &Path) -> Channel {
    berth_cri::client::connect(socket).await.unwrap()
}
