//! Test harness: real etcd members (Debian's etcd-server) on loopback ports, one data
//! directory each, killed (by their PID) and removed when dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "ports.rs"]
mod ports;
use ports::free_port;

/// One member of a test cluster.
pub struct Member {
    /// The member's name.
    pub name: String,
    /// Its client URL.
    pub client_url: String,
    peer_url: String,
    data: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster of one or more members.
pub struct Cluster {
    /// The members, in start order.
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
    initial: String,
}

impl Cluster {
    /// Starts `n` members and waits until each answers /health.
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("berth-test-{}", std::process::id());
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                data: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            members: Vec::new(),
            dir,
            initial,
        };
        for m in &mut members {
            c.spawn(m, &token);
        }
        c.members = members;
        for i in 0..n {
            c.wait_healthy(i);
        }
        c
    }

    fn spawn(&self, m: &mut Member, token: &str) {
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server)");
        m.child = Some(child);
    }

    /// The client URLs, comma-separated.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    fn wait_healthy(&self, i: usize) {
        let url = self.members[i]
            .client_url
            .trim_start_matches("http://")
            .to_string();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(&url) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(s, "GET /health HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                if body.contains("\"health\":\"true\"") {
                    return;
                }
            }
            if Instant::now() > end {
                let log = std::fs::read_to_string(
                    self.dir
                        .path()
                        .join(format!("{}.log", self.members[i].name)),
                )
                .unwrap_or_default();
                panic!("etcd member {i} never became healthy:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a killed member on its data directory.
    pub fn restart(&mut self, i: usize) {
        let token = format!("berth-test-{}", std::process::id());
        let mut m = std::mem::replace(
            &mut self.members[i],
            Member {
                name: String::new(),
                client_url: String::new(),
                peer_url: String::new(),
                data: PathBuf::new(),
                child: None,
            },
        );
        self.spawn(&mut m, &token);
        self.members[i] = m;
        self.wait_healthy(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
