//! What kubectl 1.32 streams through the API server to the node agent: logs (every
//! flag), exec (-i, -it), attach, cp, and port-forward — SPDY tunnelled in a
//! WebSocket as kubectl sends it by default, and SPDY itself as it falls back to.
//! Needs root (real namespaces, cgroups, mounts, bridges) and kubectl 1.32.

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{ready, tail, Cluster};

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn kubectl_logs_exec_attach_and_cp_reach_the_pod_through_the_api_server() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: talk}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  hostname: talker
  subdomain: chat
  containers:
  - name: main
    image: localhost/busybox:1
    command: ["sh", "-c", "echo line1; echo line2 >&2; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"]
  - name: quiet
    image: localhost/busybox:1
    command: ["sleep", "1000"]
  - name: echoer
    image: localhost/busybox:1
    stdin: true
    command: ["sh", "-c", "while read l; do echo got $l; done"]
"#,
        node = c.node
    ));
    c.ok(&["wait", "--for=condition=Ready", "pod/talk", "--timeout=60s"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let logs = loop {
        let l = c.ok(&["logs", "talk", "-c", "main"]);
        if l.contains("tick 2") {
            break l;
        }
        assert!(Instant::now() < deadline, "no ticks in the log: {l}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // stdout and stderr come through two pipes: their order between them is not kept.
    for want in ["line1\n", "line2\n", "tick 0\n"] {
        assert!(logs.contains(want), "{want:?} missing: {logs}");
    }
    let last = c.ok(&["logs", "talk", "-c", "main", "--tail=1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(last.starts_with("tick "), "{last}");
    let ts = c.ok(&["logs", "talk", "-c", "main", "--timestamps", "--tail=2"]);
    for l in ts.lines() {
        let (t, rest) = l.split_once(' ').unwrap();
        assert!(
            t.parse::<jiff::Timestamp>().is_ok(),
            "{t} is not a timestamp"
        );
        assert!(rest.starts_with("tick "), "{l}");
    }
    let none = c.ok(&["logs", "talk", "-c", "main", "--since=1h"]);
    assert!(none.contains("line1"));
    // Following: new lines arrive as they are written.
    let mut f = std::process::Command::new("kubectl")
        .args(["logs", "-f", "talk", "-c", "main", "--tail=1"])
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(f.stdout.take().unwrap());
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "logs -f ended: {seen:?}"
            );
            seen.push(line);
        }
        let n: Vec<u64> = seen
            .iter()
            .map(|l| l.trim().trim_start_matches("tick ").parse().unwrap())
            .collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
    }
    let _ = f.kill();
    let _ = f.wait();
    // exec, exec -i, exec -it and attach -i over WebSockets (kubectl's default) and
    // over SPDY.
    for websockets in [true, false] {
        remote_commands(&c, websockets);
    }
    // A subdomain gives the pod a name in the cluster's domain, first in /etc/hosts.
    let hosts = c.ok(&["exec", "talk", "-c", "quiet", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains("\ttalker.chat.default.svc.cluster.local talker\n"),
        "{hosts}"
    );
    assert_eq!(
        c.ok(&["exec", "talk", "-c", "quiet", "--", "hostname"]),
        "talker\n"
    );
    let o = c.kubectl(&["exec", "talk", "-c", "quiet", "--", "/no/such/thing"]);
    assert!(!o.status.success());
    // cp in and out (tar through exec).
    let src = c.env.path("payload.txt");
    std::fs::write(&src, "copied through the agent\n").unwrap();
    c.ok(&[
        "cp",
        src.to_str().unwrap(),
        "talk:/tmp/payload.txt",
        "-c",
        "quiet",
    ]);
    let o = c.ok(&[
        "exec",
        "talk",
        "-c",
        "quiet",
        "--",
        "cat",
        "/tmp/payload.txt",
    ]);
    assert_eq!(o, "copied through the agent\n");
    let back = c.env.path("back.txt");
    c.ok(&[
        "cp",
        "talk:/tmp/payload.txt",
        back.to_str().unwrap(),
        "-c",
        "quiet",
    ]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied through the agent\n"
    );
    // Errors name what is wrong.
    let o = c.kubectl(&["logs", "talk", "-c", "nope"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("container nope is not valid for pod talk"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    c.ok(&["delete", "pod", "talk", "--timeout=60s"]);
}

/// exec (output, errors, exit code), exec -i, exec -it (a terminal and its size) and
/// attach -i, over WebSockets (kubectl's default) or over SPDY (kubectl with
/// WebSockets turned off; crictl and critest speak it to CRI's streaming URLs: one
/// stream per stdio, resizes on their own, the exit code in the error stream's Status).
fn remote_commands(c: &Cluster, websockets: bool) {
    let how = if websockets { "true" } else { "false" };
    let env = [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", how)];
    let o = c.kubectl_with(
        &[
            "exec",
            "talk",
            "-c",
            "quiet",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
        &env,
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("err"));
    let o = c.kubectl_with(
        &["exec", "-i", "talk", "-c", "quiet", "--", "cat"],
        Some("through stdin\n"),
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "through stdin\n");
    // exec -it, from a terminal (script gives kubectl one): a tty inside, its size.
    let o = std::process::Command::new("script")
        .args([
            "-qec",
            "stty cols 91 rows 33; kubectl exec -it talk -c quiet -- sh -c 'sleep 1; tty; stty size'",
            "/dev/null",
        ])
        .env("KUBECONFIG", c.kubeconfig())
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", how)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("/dev/pts/") && out.contains("33 91"),
        "exec -it (websockets {how}): {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A session that cannot start (attach to a container made without stdin or a
    // terminal) ends with the reason, over either wire; it does not hang.
    let o = Command::new("timeout")
        .args(["30", "kubectl", "attach", "talk", "-c", "quiet"])
        .env("KUBECONFIG", c.kubeconfig())
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", how)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !o.status.success() && o.status.code() != Some(124),
        "attach to a container without stdin (websockets {how}): {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    // attach: input reaches the container, its output comes back.
    let o = c.kubectl_with(
        &["attach", "-i", "talk", "-c", "echoer"],
        Some("hi there\n"),
        &env,
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("got hi there"),
        "attach (websockets {how}): {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A running `kubectl port-forward` and the local ports it listens on, by remote port.
struct Forward {
    child: Child,
    ports: Vec<(u16, u16)>,
}

impl Forward {
    fn start(c: &Cluster, websockets: bool, remote: &[u16]) -> Forward {
        let mut args = vec!["port-forward".to_string(), "pod/fwd".to_string()];
        args.extend(remote.iter().map(|p| format!(":{p}")));
        let mut child = Command::new("kubectl")
            .args(&args)
            .env("KUBECONFIG", c.kubeconfig())
            // kubectl's switch between SPDY in a WebSocket (its default) and SPDY.
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if websockets { "true" } else { "false" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ports = Vec::new();
        while ports.len() < remote.len() {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("kubectl port-forward ended: {err}");
            }
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            if let Some(rest) = line.trim().strip_prefix("Forwarding from 127.0.0.1:") {
                let (local, remote) = rest.split_once(" -> ").unwrap();
                ports.push((remote.parse().unwrap(), local.parse().unwrap()));
            }
        }
        // The rest of its output is read when it ends.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        Forward { child, ports }
    }

    fn local(&self, remote: u16) -> u16 {
        self.ports.iter().find(|(r, _)| *r == remote).unwrap().1
    }

    /// Ends kubectl; what it wrote on stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = self.child.wait();
        err
    }
}

/// An HTTP/1.0 GET through a local port: the body.
fn get(port: u16, path: &str) -> Vec<u8> {
    common::http_get(&format!("127.0.0.1:{port}"), path)
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn kubectl_port_forward_reaches_the_pods_ports_over_websocket_and_spdy() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: fwd}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  subdomain: web
  setHostnameAsFQDN: true
  containers:
  - name: web
    image: localhost/busybox:1
    command: ["sh", "-c", "mkdir -p /www /lo; echo public > /www/index.html; echo loopback > /lo/index.html; dd if=/dev/urandom of=/www/big bs=1024 count=2048 2>/dev/null; md5sum /www/big > /www/big.md5; httpd -p 8080 -h /www; exec httpd -f -p 127.0.0.1:8081 -h /lo"]
"#,
        node = c.node
    ));
    c.wait_pod("fwd", "Ready", 60, ready);
    // The file is written before httpd starts; give the shell a moment past Ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .ok(&["exec", "fwd", "--", "cat", "/www/big.md5"])
        .contains("/www/big")
    {
        assert!(Instant::now() < deadline, "the pod never wrote its files");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        c.ok(&["exec", "fwd", "--", "hostname"]),
        "fwd.web.default.svc.cluster.local\n"
    );
    for websockets in [true, false] {
        let f = Forward::start(&c, websockets, &[8080, 8081]);
        let (web, lo) = (f.local(8080), f.local(8081));
        assert_eq!(get(web, "/index.html"), b"public\n");
        // A port bound to the pod's loopback only: reached from inside its namespace.
        assert_eq!(get(lo, "/index.html"), b"loopback\n");
        // Several connections at once, each with 2 MiB that must arrive intact.
        let sums: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || get(web, "/big")))
            .collect();
        let want = String::from_utf8(get(web, "/big.md5")).unwrap();
        for t in sums {
            let big = t.join().unwrap();
            assert_eq!(big.len(), 2 * 1024 * 1024, "websockets={websockets}");
            let sum = Command::new("md5sum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut p| {
                    p.stdin.take().unwrap().write_all(&big)?;
                    p.wait_with_output()
                })
                .unwrap();
            let sum = String::from_utf8_lossy(&sum.stdout);
            assert_eq!(
                sum.split_whitespace().next(),
                want.split_whitespace().next(),
                "websockets={websockets}"
            );
        }
        // The same session keeps serving after all that.
        assert_eq!(get(web, "/index.html"), b"public\n");
        f.stop();
    }
    // Both of kubectl's ways reached the agent.
    let log = c.log();
    for protocol in ["\"SPDY/3.1+portforward.k8s.io\"", "\"SPDY/3.1\""] {
        assert!(log.contains(protocol), "{protocol}: {}", tail(&log, 30));
    }
    // The Python client: a WebSocket with the channel protocol.
    common::pyvenv::run(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/portforward.py"),
        &c.kubeconfig(),
    );
    // A port nothing listens on: the connection ends, and kubectl says why.
    let f = Forward::start(&c, true, &[9999]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", f.local(9999))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{buf:?}");
    std::thread::sleep(Duration::from_millis(300));
    let err = f.stop();
    assert!(
        err.contains("error forwarding port 9999 to pod default/fwd")
            && err.contains("onnection refused"),
        "{err}"
    );
    // A pod that is not running here.
    let o = c.kubectl(&["port-forward", "pod/nothere", ":80"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\"nothere\" not found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    c.ok(&["delete", "pod", "fwd", "--timeout=60s"]);
}
