//! An all-in-one `berth server` (API server and node agent in one process) on a
//! loopback port, with a state root, pod CIDR and network records of its own, driven
//! with kubectl; everything it ran is removed when the test ends, also when it failed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, Env};

/// A running all-in-one server.
pub struct Cluster {
    pub env: Env,
    pub port: u16,
    pub node: String,
    pub cidr_octet: u32,
    child: Option<Child>,
    /// A `berth agent` of its own (with `--disable-agent` servers).
    agent: Option<Child>,
    /// Flags every start of the server gets.
    flags: Vec<String>,
    /// Holds this test's pod CIDR (see [`lease_cidr_octet`]).
    _cidr_lock: std::fs::File,
}

#[path = "../../../engine/tests/support/cidr_lease.rs"]
mod cidr_lease;

/// A /24 of 10.46.0.0/16 for one test's node (its third octet), held while the returned
/// file is open (see [`cidr_lease`]).
pub fn lease_cidr_octet() -> (u32, std::fs::File) {
    cidr_lease::lease_octet(46)
}

impl Cluster {
    /// Starts `berth server` with a busybox image stored as `localhost/busybox:1`, and
    /// waits for its node to be Ready.
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Starts it with extra server flags (`--max-pods 2`), kept for restarts.
    pub fn start_with(flags: &[&str]) -> Cluster {
        let env = Env::new();
        env.busybox_image("localhost/busybox:1");
        let (octet, cidr_lock) = lease_cidr_octet();
        let mut c = Cluster {
            env,
            port: free_port(),
            node: format!("node-{}", std::process::id()),
            cidr_octet: octet,
            _cidr_lock: cidr_lock,
            child: None,
            agent: None,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        c.spawn();
        if flags.contains(&"--disable-agent") {
            c.wait_api();
            c.spawn_agent();
        }
        c.wait_ready();
        c
    }

    /// Starts `berth server --disable-agent` alone: an API server without any node
    /// (simulated nodes come from `berth sim nodes`).
    pub fn api_only() -> Cluster {
        Cluster::api_only_with(&[])
    }

    /// [`Cluster::api_only`] with extra server flags (`--disable controllers`).
    pub fn api_only_with(flags: &[&str]) -> Cluster {
        let (octet, cidr_lock) = lease_cidr_octet();
        let mut c = Cluster {
            env: Env::new(),
            port: free_port(),
            node: String::new(),
            cidr_octet: octet,
            _cidr_lock: cidr_lock,
            child: None,
            agent: None,
            flags: std::iter::once("--disable-agent")
                .chain(flags.iter().copied())
                .map(String::from)
                .collect(),
        };
        c.spawn();
        c.wait_api();
        c
    }

    /// The kubeconfig kubectl uses.
    pub fn kubeconfig(&self) -> PathBuf {
        self.env.path("kubeconfig")
    }

    /// (Re)starts the server process.
    pub fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// (Re)starts the server process with extra flags (`--disable-agent`).
    pub fn spawn_with(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.env.path("server.log"))
            .unwrap();
        let mut cmd = self.env.cmd(&[
            "server",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--write-kubeconfig",
            self.kubeconfig().to_str().unwrap(),
        ]);
        if !self.flags.iter().any(|f| f == "--disable-agent") {
            cmd.args(self.node_flags());
        }
        // Local-path volumes in the test's directory, not the machine's.
        cmd.arg("--default-local-storage-path")
            .arg(self.env.path("storage"));
        cmd.args(&self.flags).args(extra);
        if !self
            .flags
            .iter()
            .any(|f| f == "--eviction-hard" || f == "--disable-agent")
        {
            // Test hosts are often nearly full: a disk threshold of 5% or 10% free would
            // evict the pods of every test. Memory keeps its default.
            cmd.args([
                "--eviction-hard",
                "memory.available<100Mi,nodefs.available<1%",
            ]);
        }
        cmd.env("BERTH_NET_ROOT", self.env.path("net"))
            .env("BERTH_LOG", "info,berth_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap());
    }

    /// The node's flags, for the server's agent or one of its own.
    fn node_flags(&self) -> Vec<String> {
        [
            "--node-name",
            &self.node,
            "--node-ip",
            "127.0.0.1",
            "--pod-cidr",
            &format!("10.46.{}.0/24", self.cidr_octet),
            // Tests run side by side: each agent's endpoint on a port of its own.
            "--kubelet-port",
            "0",
            // Nodes sharing the host's network would share one Service table, and
            // one NetworkPolicy table.
            "--disable-kube-proxy",
            "--disable-network-policy",
            "--disable-ingress",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// (Re)starts a `berth agent` of its own, logging to agent.log.
    pub fn spawn_agent(&mut self) {
        // The agent joins with the server's token, as on another machine.
        let token = self.env.root().join("server/agent-token");
        self.spawn_agent_with_token(&token);
    }

    /// [`Cluster::spawn_agent`] joining with the token in the file `token`.
    pub fn spawn_agent_with_token(&mut self, token: &std::path::Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.env.path("agent.log"))
            .unwrap();
        let server = format!("https://127.0.0.1:{}", self.port);
        let mut cmd = self.env.cmd(&[
            "agent",
            "--server",
            &server,
            "--token-file",
            token.to_str().unwrap(),
        ]);
        // KUBECONFIG from the test's environment is not the node's.
        cmd.env_remove("KUBECONFIG");
        cmd.args(self.node_flags())
            .args([
                "--eviction-hard",
                "memory.available<100Mi,nodefs.available<1%",
            ])
            .env("BERTH_NET_ROOT", self.env.path("net"))
            .env("BERTH_LOG", "info,berth_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.agent = Some(cmd.spawn().unwrap());
    }

    /// Kills the agent of its own with SIGKILL.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The agent's log so far (an agent of its own).
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.env.path("agent.log")).unwrap_or_default()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.env.path("server.log")).unwrap_or_default()
    }

    /// Waits for the node to be Ready.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("berth server exited ({st}):\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                let o = self.kubectl(&[
                    "get",
                    "node",
                    &self.node,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                if o.status.success() && String::from_utf8_lossy(&o.stdout) == "True" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} not Ready within 60 s:\n{}",
                self.node,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the API server to answer.
    pub fn wait_api(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(self.kubeconfig().exists()
            && self.kubectl(&["get", "ns", "default"]).status.success())
        {
            assert!(
                Instant::now() < deadline,
                "the API server did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server with SIGKILL (its containers keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs kubectl against the server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(args, None)
    }

    /// Runs kubectl with `stdin`.
    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_with(args, stdin, &[])
    }

    /// Runs kubectl with `stdin` and extra environment variables.
    pub fn kubectl_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        envs: &[(&str, &str)],
    ) -> Output {
        let mut c = Command::new("kubectl");
        // The caller's variables last: they may name another kubeconfig.
        c.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.env.dir.path())
            .envs(envs.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl on PATH");
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// kubectl, expected to succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}\n{}\n--- server log tail:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A pod bound to this node with a 1 s grace period: its YAML, `spec` being the
    /// rest of its spec (two spaces in, from `containers:` on).
    pub fn pod_yaml(&self, name: &str, spec: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n{spec}",
            self.node
        )
    }

    /// `kubectl apply -f -` of a manifest.
    pub fn apply(&self, yaml: &str) {
        let o = self.kubectl_in(&["apply", "-f", "-"], Some(yaml));
        assert!(
            o.status.success(),
            "kubectl apply failed:\n{}\n{yaml}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// A pod as JSON.
    pub fn pod(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", "pod", name, "-o", "json"])).unwrap()
    }

    /// Waits until `check` holds for the pod (or fails with the pod and the log).
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        secs: u64,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let o = self.kubectl(&["get", "pod", name, "-o", "json"]);
            if o.status.success() {
                let p: Value = serde_json::from_slice(&o.stdout).unwrap();
                if check(&p) {
                    return p;
                }
                if Instant::now() > deadline {
                    panic!(
                        "pod {name}: {what} not within {secs} s; pod:\n{}\nevents:\n{}\n--- server log tail:\n{}",
                        serde_json::to_string_pretty(&p["status"]).unwrap(),
                        String::from_utf8_lossy(&self.kubectl(&["get", "events", "--field-selector", &format!("involvedObject.name={name}")]).stdout),
                        tail(&self.log(), 60)
                    );
                }
            } else if Instant::now() > deadline {
                panic!("pod {name}: {what}: {}", String::from_utf8_lossy(&o.stderr));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `check` every 100 ms until it gives a value (or fails after `secs`
    /// seconds, saying `what` and showing the server log's tail).
    pub fn until<T>(&self, what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {secs} s\n--- server log tail:\n{}",
                    tail(&self.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The events of the object named `name`, as a table of REASON, FROM and
    /// MESSAGE.
    pub fn events(&self, name: &str) -> String {
        self.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "custom-columns=REASON:.reason,FROM:.source.component,MESSAGE:.message",
        ])
    }

    /// An object as JSON (`kind` as kubectl names it: "deploy", "job"...).
    pub fn json(&self, kind: &str, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", kind, name, "-o", "json"])).unwrap()
    }

    /// The engine over the server's state root (what the agent runs pods with).
    pub fn engine(&self) -> berth_engine::Core {
        self.env.engine()
    }

    /// Mount points under the test's directory.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(self.env.dir.path())
    }
}

/// The last `n` lines of a text.
/// A pod's phase ("" before it has one).
pub fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

/// A container's status in a pod (Null when it has none).
pub fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Whether a pod's Ready condition is True.
pub fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn mounts_under(dir: &Path) -> Vec<String> {
    berth_cgroups::mountinfo::points_under(dir)
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

impl Drop for Cluster {
    /// The server stops, then whatever its pods left is removed: sandboxes (with
    /// their containers), the pod network, mounts under the directory.
    fn drop(&mut self) {
        self.kill_agent();
        if let Some(mut c) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&c),
                rustix::process::Signal::TERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.env.remove_pods();
        berth_cgroups::mountinfo::unmount_under(self.env.dir.path());
    }
}

/// A `berth sim nodes` process against a cluster, stopped (SIGTERM, as Ctrl-C) when
/// dropped.
pub struct SimNodes(pub Child);

impl SimNodes {
    /// Starts `berth sim nodes --prefix PREFIX --count COUNT EXTRA...`; with `wait`,
    /// returns once all its nodes are registered.
    pub fn start(c: &Cluster, prefix: &str, count: usize, extra: &[&str], wait: bool) -> SimNodes {
        let mut cmd = c.env.cmd(&["sim", "nodes", "--kubeconfig"]);
        cmd.arg(c.kubeconfig())
            .args(["--prefix", prefix, "--count", &count.to_string()])
            .args(extra)
            // Its stderr is read only at exit: warnings only, so the pipe never fills.
            .env("BERTH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let s = SimNodes(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        if !wait {
            return s;
        }
        loop {
            let names = c.ok(&["get", "nodes", "-o", "name"]);
            let n = names
                .lines()
                .filter(|l| l.starts_with(&format!("node/{prefix}-")))
                .count();
            if n == count {
                return s;
            }
            assert!(Instant::now() < deadline, "{names}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it as Ctrl-C would; returns its exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.0),
            rustix::process::Signal::TERM,
        );
        self.wait_exit(30)
    }

    /// Waits for it to end by itself; returns its exit status and stderr.
    pub fn wait_exit(&mut self, secs: u64) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "still running after {secs} s");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&self.0),
                rustix::process::Signal::TERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
