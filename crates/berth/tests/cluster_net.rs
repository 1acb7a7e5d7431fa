//! Several nodes on one machine, and the pod network between them: `berth cluster
//! create` makes a server and two agents, each in a network namespace of its own on a
//! shared bridge; node IPAM gives each node a block of 10.42.0.0/16; pods on different
//! nodes reach each other by pod IP over the VXLAN overlay, with their own addresses
//! (no masquerade); a node that leaves has its routes, neighbour and forwarding entries
//! removed on the others, and one whose address changes is followed; `berth cluster delete` leaves no process, namespace, link,
//! nft table, mount or directory behind. Checked with kubectl, busybox's wget and
//! iproute2 run inside the nodes' namespaces.

mod common;
#[path = "cluster_net/peers.rs"]
mod peers;
#[path = "cluster_net/upstream.rs"]
mod upstream;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{tail, Cluster};
use common::*;
use serde_json::Value;

/// A `berth cluster` of this test, deleted when dropped (also after a failure).
struct MultiNode {
    env: Env,
    name: String,
}

impl MultiNode {
    fn create(agents: usize, extra: &[&str]) -> MultiNode {
        let env = Env::new();
        env.busybox_image("localhost/busybox:1");
        let name = format!("t{}", std::process::id());
        let m = MultiNode { env, name };
        let agents = agents.to_string();
        let mut args = vec![
            "cluster",
            "create",
            &m.name,
            "--agents",
            &agents,
            // Test hosts are often nearly full: no disk evictions.
            "--server-arg=--eviction-hard=memory.available<100Mi,nodefs.available<1%",
            "--agent-arg=--eviction-hard=memory.available<100Mi,nodefs.available<1%",
            "--server-arg=--default-local-storage-path",
        ];
        let storage = m.env.path("storage").display().to_string();
        let storage_flag = format!("--server-arg={storage}");
        args.push(&storage_flag);
        args.extend_from_slice(extra);
        let o = m
            .env
            .cmd(&args)
            .env("BERTH_LOG", "info,berth_agent=debug")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        m.env
            .ok(&["cluster", "load", &m.name, "localhost/busybox:1"]);
        m
    }

    fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(
            self.env
                .ok(&["cluster", "kubeconfig", &self.name])
                .trim()
                .to_string(),
        )
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn node(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    /// A node's InternalIP.
    fn node_ip(&self, node: &str) -> String {
        self.ok(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
    }

    fn dir(&self) -> PathBuf {
        self.env.root().join("clusters").join(&self.name)
    }

    fn run_dir(&self) -> PathBuf {
        PathBuf::from("/run/berth/clusters").join(&self.name)
    }

    fn netns(&self, node: &str) -> PathBuf {
        self.run_dir().join("netns").join(node)
    }

    /// `ip ARGS` inside a node's network namespace.
    fn ip_in(&self, node: &str, args: &[&str]) -> String {
        let o = Command::new("nsenter")
            .arg(format!("--net={}", self.netns(node).display()))
            .arg("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ip {args:?} in {node}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for n in ["server", "agent-1", "agent-2"] {
            let p = self
                .dir()
                .join("nodes")
                .join(format!("{}.log", self.node(n)));
            let log = std::fs::read_to_string(&p).unwrap_or_default();
            out.push_str(&format!("--- {} ---\n{}\n", self.node(n), tail(&log, 40)));
        }
        out
    }

    fn until<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what} within {secs} s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn pod_json(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", "pod", name, "-o", "json"])).unwrap()
    }

    fn wait_running(&self, name: &str) -> Value {
        self.until(&format!("pod {name} Running"), 90, || {
            let p = self.pod_json(name);
            (p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()).then_some(p)
        })
    }
}

impl Drop for MultiNode {
    fn drop(&mut self) {
        let _ = self.env.cmd(&["cluster", "delete", &self.name]).output();
    }
}

fn pod_on(name: &str, node: &str, script: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"{name}"}}}},
"spec":{{"nodeName":"{node}","terminationGracePeriodSeconds":1,
"containers":[{{"name":"c","image":"localhost/busybox:1","imagePullPolicy":"Never",
"command":["sh","-c",{script}]}}]}}}}"#,
        script = serde_json::to_string(script).unwrap()
    )
}

/// busybox httpd on port 8080 serving `greeting` at / and the client's address at
/// /cgi-bin/ip.
fn web_script(greeting: &str) -> String {
    format!(
        "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && echo {greeting} > /www/index.html && exec httpd -f -p 8080 -h /www"
    )
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let (net, len) = cidr.split_once('/').unwrap();
    let net: std::net::Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net)
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn pods_on_different_nodes_reach_each_other_over_vxlan_and_delete_leaves_nothing() {
    // The host's resolver, for names outside the cluster: a server of this test's.
    let upstream = upstream::Upstream::start();
    let scratch = tempfile::tempdir().unwrap();
    let resolv = scratch.path().join("resolv.conf");
    std::fs::write(&resolv, upstream.resolv_conf()).unwrap();
    let resolv_flags =
        ["server", "agent"].map(|role| format!("--{role}-arg=--resolv-conf={}", resolv.display()));
    let m = MultiNode::create(2, &[&resolv_flags[0], &resolv_flags[1]]);
    let server = m.node("server");
    let a1 = m.node("agent-1");
    let a2 = m.node("agent-2");

    // Three Ready nodes, each on its own address, with a block of the cluster CIDR of
    // its own, and its VXLAN MAC published.
    let nodes: Value = serde_json::from_str(&m.ok(&["get", "nodes", "-o", "json"])).unwrap();
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{nodes}");
    let mut cidrs = Vec::new();
    for n in items {
        let cidr = n["spec"]["podCIDR"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            in_cidr(cidr.split('/').next().unwrap(), "10.42.0.0/16"),
            "{n}"
        );
        assert!(cidr.ends_with("/24"), "{cidr}");
        cidrs.push(cidr);
    }
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "every node its own block: {cidrs:?}");
    let cidr_of = |node: &str| -> String {
        let n: Value = serde_json::from_str(&m.ok(&["get", "node", node, "-o", "json"])).unwrap();
        n["spec"]["podCIDR"].as_str().unwrap().to_string()
    };
    let node_ip = |node: &str| m.node_ip(node);
    let mac = m.until("agent-2's VXLAN MAC published", 30, || {
        let n: Value = serde_json::from_str(&m.ok(&["get", "node", &a2, "-o", "json"])).unwrap();
        n["metadata"]["annotations"]["berth.dev/vtep-mac"]
            .as_str()
            .map(String::from)
    });

    // The VXLAN device as flannel makes it: VNI 1, port 8472, the node's IP as source.
    let link = m.ip_in(&a1, &["-d", "link", "show", "berth.1"]);
    assert!(link.contains("vxlan id 1 "), "{link}");
    assert!(link.contains("dstport 8472"), "{link}");
    assert!(link.contains(&format!("local {}", node_ip(&a1))), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    // Routes, neighbour and forwarding entries for agent-2 on agent-1.
    let a2_cidr = cidr_of(&a2);
    let a2_gw = a2_cidr.replace(".0/24", ".0");
    m.until("agent-1 routes to agent-2's pods", 30, || {
        let r = m.ip_in(&a1, &["route", "show", &a2_cidr]);
        (r.contains(&format!("via {a2_gw} dev berth.1")) && r.contains("onlink")).then_some(())
    });
    let neigh = m.ip_in(&a1, &["neigh", "show", "dev", "berth.1"]);
    assert!(
        neigh.contains(&format!("{a2_gw} lladdr {mac} PERMANENT")),
        "{neigh}"
    );
    let fdb = Command::new("nsenter")
        .arg(format!("--net={}", m.netns(&a1).display()))
        .args(["bridge", "fdb", "show", "dev", "berth.1"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.contains(&format!("{mac} dst {} self permanent", node_ip(&a2))),
        "{fdb}"
    );

    // A web server on agent-1 that answers with the client's address; a client on
    // agent-2; and one on the server node.
    m.ok_apply(&pod_on("web", &a1, &web_script("hello-from-agent-1")));
    m.ok_apply(&pod_on("client", &a2, "exec sleep 3600"));
    m.ok_apply(&pod_on("client-s", &server, "exec sleep 3600"));
    let web_pod = m.wait_running("web");
    let client = m.wait_running("client");
    let client_s = m.wait_running("client-s");
    let web_ip = web_pod["status"]["podIP"].as_str().unwrap().to_string();
    let client_ip = client["status"]["podIP"].as_str().unwrap().to_string();
    let client_s_ip = client_s["status"]["podIP"].as_str().unwrap().to_string();
    assert!(
        in_cidr(&web_ip, &cidr_of(&a1)),
        "{web_ip} in agent-1's block"
    );
    assert!(
        in_cidr(&client_ip, &a2_cidr),
        "{client_ip} in agent-2's block"
    );
    assert_eq!(
        web_pod["status"]["hostIP"].as_str(),
        Some(node_ip(&a1).as_str())
    );

    // ICMP and TCP across nodes, by pod IP; the server sees the client's own address.
    m.until("ping from agent-2's pod to agent-1's", 30, || {
        m.kubectl(&[
            "exec", "client", "--", "ping", "-c", "1", "-W", "2", &web_ip,
        ])
        .status
        .success()
        .then_some(())
    });
    let page = m.fetch("client", &format!("http://{web_ip}:8080/"));
    assert_eq!(page.trim(), "hello-from-agent-1");
    let seen = m.fetch("client", &format!("http://{web_ip}:8080/cgi-bin/ip"));
    assert_eq!(
        remote(&seen),
        client_ip,
        "pod-to-pod traffic keeps its source address"
    );
    let seen = m.fetch("client-s", &format!("http://{web_ip}:8080/cgi-bin/ip"));
    assert_eq!(remote(&seen), client_s_ip);
    // The pods' MTU leaves room for VXLAN's 50 bytes.
    let mtu = m.ok(&["exec", "client", "--", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1450");
    // Logs come from the agent on the other node, through the server.
    assert!(m.ok(&["get", "pod", "web", "-o", "wide"]).contains(&a1));

    services_across_nodes(&m, &web_ip, &client_ip);
    explain_paths(&m, &web_ip);
    cluster_dns(&m, &web_ip);
    drop(upstream);
    peers::node_address_change(&m);
    network_policies(&m, &web_ip);
    ingress_and_load_balancers(&m);

    // agent-2 leaves: its process stops and its Node is deleted. Its routes, neighbour
    // and forwarding entries go from agent-1.
    let pid_file = m.run_dir().join(format!("{a2}.pid"));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill_node(pid);
    m.ok(&["delete", "pod", "client", "--force", "--grace-period=0"]);
    m.ok(&["delete", "node", &a2]);
    m.until("agent-2's route gone from agent-1", 30, || {
        m.ip_in(&a1, &["route", "show", &a2_cidr])
            .trim()
            .is_empty()
            .then_some(())
    });
    let neigh = m.ip_in(&a1, &["neigh", "show", "dev", "berth.1"]);
    assert!(!neigh.contains(&a2_gw), "{neigh}");
    // agent-1 still reaches the server's pod.
    let seen = m.fetch("client-s", &format!("http://{web_ip}:8080/cgi-bin/ip"));
    assert_eq!(remote(&seen), client_s_ip);

    // ls and delete.
    let ls = m.env.ok(&["cluster", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&m.name) && l.contains(" 3 ")),
        "{ls}"
    );
    let pids: Vec<i32> = ["server", "agent-1"]
        .iter()
        .filter_map(|n| {
            std::fs::read_to_string(m.run_dir().join(format!("{}.pid", m.node(n))))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(pids.len(), 2);
    let bridge_hash = {
        let rec: Value =
            serde_json::from_slice(&std::fs::read(m.dir().join("cluster.json")).unwrap()).unwrap();
        rec["bridge"].as_str().unwrap().to_string()
    };
    m.env.ok(&["cluster", "delete", &m.name]);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .is_empty(),
            "node process {pid} still runs"
        );
    }
    assert!(!m.dir().exists(), "the cluster's directory is gone");
    assert!(!m.run_dir().exists(), "the cluster's run directory is gone");
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&bridge_hash), "bridge left: {links}");
    assert!(
        !links.contains(&format!("bc{}", &bridge_hash["berthc".len()..])),
        "veth left: {links}"
    );
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains(&format!("berthc-{}", &bridge_hash["berthc".len()..])),
        "{tables}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&m.name), "mounts left: {mounts}");
    let ls = m.env.ok(&["cluster", "ls"]);
    assert!(!ls.contains(&m.name), "{ls}");
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let left = h.path().join("berth-clusters").join(&m.name);
        assert!(!left.exists(), "cgroup left: {}", left.display());
    }
}

/// `berth explain path`: pod to pod across nodes shows the pod's route and veth, the
/// bridge, the VXLAN device with its VNI, neighbour and forwarding entries and the
/// outer addresses, then the other node's side, with counters; a probe through a
/// Service names the map element, the endpoint chosen (the one the connection tracking
/// says) and follows it; a pod on the same node is one node's path; bad names are
/// clear errors.
fn explain_paths(m: &MultiNode, web_ip: &str) {
    let (a1, a2, server) = (m.node("agent-1"), m.node("agent-2"), m.node("server"));
    let kc = m.kubeconfig().display().to_string();
    let explain = |args: &[&str]| -> Output {
        let mut all = vec!["explain", "path", "--kubeconfig", &kc];
        all.extend_from_slice(args);
        m.env.cmd(&all).output().unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let o = explain(args);
        assert!(
            o.status.success(),
            "explain path {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let node_ip = |node: &str| m.node_ip(node);
    let vxlan_mac = |node: &str| {
        let n: Value = serde_json::from_str(&m.ok(&["get", "node", node, "-o", "json"])).unwrap();
        n["metadata"]["annotations"]["berth.dev/vtep-mac"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Pod to pod across nodes: out of agent-2 over VXLAN, into agent-1.
    let out = ok(&["client", "web", "--port", "8080"]);
    for want in [
        "Path from pod default/client (".to_string(),
        format!("to pod default/web {web_ip}, TCP port 8080"),
        format!("TCP connection to {web_ip}:8080 made in"),
        format!("node {a2}\n"),
        format!("node {a1}\n"),
        "eth0 (veth)".to_string(),
        "berth.1 (vxlan)".to_string(),
        "VXLAN VNI 1, UDP port 8472".to_string(),
        format!("fdb {} dst {}", vxlan_mac(&a1), node_ip(&a1)),
        format!("→ {}:8472, VNI 1", node_ip(&a1)),
        "the packet arrives here and is decapsulated".to_string(),
        "the packet is delivered".to_string(),
        format!("Delivered to {web_ip} across 2 nodes: {a2} → {a1}."),
    ] {
        assert!(out.contains(&want), "{want:?} not in:\n{out}");
    }
    let counters = out.matches(" packets]").count();
    assert!(counters >= 8, "every device with its counters:\n{out}");
    // The counters are the kernel's: the web pod's eth0 has received packets.
    let web_eth0 = out
        .lines()
        .skip_while(|l| !l.starts_with("pod default/web"))
        .find(|l| l.contains("eth0 (veth)"))
        .unwrap_or_else(|| panic!("web's eth0:\n{out}"));
    let rx: u64 = web_eth0
        .split("[rx ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{web_eth0}"));
    assert!(rx > 0, "{web_eth0}");

    // Through the Service: its element in service-ips, both slots, one chosen, and the
    // path goes on to that endpoint.
    let svc: Value = serde_json::from_str(&m.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let new_connections = |out: &str| -> u64 {
        out.lines()
            .find(|l| l.contains(&format!("service-ips[{cluster_ip} . tcp . 80]")))
            .and_then(|l| l.split(" (").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no service-ips line in:\n{out}"))
    };
    let first = ok(&["client", "svc/web"]);
    assert!(
        first.contains(&format!("to svc/web {cluster_ip}:80, TCP port 80")),
        "{first}"
    );
    assert!(first.contains("→ goto pick-2"), "{first}");
    assert_eq!(first.matches("endpoints[").count(), 2, "{first}");
    assert_eq!(
        first.matches("← chosen for the probe").count(),
        1,
        "{first}"
    );
    assert!(
        first.contains("conntrack: the probe's connection was DNATed to"),
        "{first}"
    );
    let chosen = first
        .lines()
        .find(|l| l.contains("← chosen"))
        .and_then(|l| l.split("] → ").nth(1))
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_string();
    assert!(
        first.contains(&format!("Delivered to {chosen} across")),
        "{first}"
    );
    let second = ok(&["client", "svc/web"]);
    assert!(
        new_connections(&second) > new_connections(&first),
        "the probe is counted:\n{first}\n{second}"
    );
    // Without a probe nothing is sent: the counter stays.
    let quiet = ok(&["client", "svc/web", "--no-probe"]);
    assert!(!quiet.contains("probe  "), "{quiet}");
    assert_eq!(new_connections(&quiet), new_connections(&second), "{quiet}");

    // A pod on the same node: the bridge delivers it, one node.
    let json = ok(&["client-s", "web2", "-o", "json"]);
    let parts: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parts.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(parts[0]["next"], "delivered", "{json}");
    let text = ok(&["client-s", "web2"]);
    assert!(
        text.contains(&format!("across 1 node: {server}.")),
        "{text}"
    );
    assert!(!text.contains("vxlan"), "{text}");

    // Bad names.
    for (args, want) in [
        (vec!["client", "nosuch"], "reading pod default/nosuch"),
        (
            vec!["client", "svc/web", "--port", "9999"],
            "has no port 9999 (it has 80)",
        ),
        (
            vec!["client", "svc/nosuch"],
            "reading Service default/nosuch",
        ),
        (
            vec!["client", "web", "--protocol", "SCTP"],
            "the probe is TCP or UDP",
        ),
    ] {
        let o = explain(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

/// Services across nodes: a NodePort Service over the web pod and one on the server
/// node, reached by ClusterIP from a pod on a third node (spread over both, the
/// client's address kept), by NodePort from the host; a Service without endpoints
/// refuses at once; port-forward reaches a pod on another node.
/// (busybox 1.35's wget crashes with -T: `timeout` bounds it instead.)
fn services_across_nodes(m: &MultiNode, web_ip: &str, client_ip: &str) {
    let server = m.node("server");
    let mut pod = pod_on("web2", &server, &web_script("hello-from-server"));
    pod = pod.replace(r#""app":"web2""#, r#""app":"web""#);
    m.ok_apply(&pod);
    m.wait_running("web2");
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},
"spec":{"type":"NodePort","selector":{"app":"web"},"ports":[{"port":80,"targetPort":8080}]}}"#,
    );
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"nobody"},
"spec":{"selector":{"app":"nobody"},"ports":[{"port":80,"targetPort":8080}]}}"#,
    );
    let svc: Value = serde_json::from_str(&m.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    m.until("both endpoints answer through the ClusterIP", 60, || {
        let o = m.try_fetch("client", &format!("http://{cluster_ip}/"));
        if o.status.success() {
            seen.insert(String::from_utf8_lossy(&o.stdout).trim().to_string());
        }
        (seen.len() == 2).then_some(())
    });
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["hello-from-agent-1", "hello-from-server"]
    );
    // Pod to Service to pod: no masquerade, the endpoint sees the client pod.
    for _ in 0..4 {
        let r = m.fetch("client", &format!("http://{cluster_ip}/cgi-bin/ip"));
        assert_eq!(remote(&r), client_ip);
    }
    // NodePort from the host, on a node that runs no endpoint of its own.
    let a2_ip = m.ok(&[
        "get",
        "node",
        &m.node("agent-2"),
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let body = http_get(&format!("{a2_ip}:{node_port}"), "/");
    assert!(body.contains("hello-from-"), "{body}");
    // The API server from a pod, through the kubernetes Service.
    m.until("the kubernetes Service answers from a pod", 30, || {
        m.kubectl(&[
            "exec",
            "client",
            "--",
            // (busybox's nc has no -z: an empty stdin ends a connection once made.)
            "sh",
            "-c",
            "nc -w 3 10.96.0.1 443 </dev/null",
        ])
        .status
        .success()
        .then_some(())
    });
    // No endpoints: refused at once, not a timeout.
    let nobody: Value =
        serde_json::from_str(&m.ok(&["get", "svc", "nobody", "-o", "json"])).unwrap();
    let nobody_ip = nobody["spec"]["clusterIP"].as_str().unwrap().to_string();
    let started = Instant::now();
    let o = m.kubectl(&[
        "exec",
        "client",
        "--",
        "timeout",
        "5",
        "wget",
        "-qO-",
        &format!("http://{nobody_ip}/"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // port-forward to a pod on another node than the server's.
    let local = free_port();
    let mut pf = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(m.kubeconfig())
        .args(["port-forward", "pod/web", &format!("{local}:8080")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = m.until("port-forward answers", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", local)).ok()?;
        Some(http_get(&format!("127.0.0.1:{local}"), "/"))
    });
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains("hello-from-agent-1"), "{body}");
    let _ = web_ip;

    // Endpoints follow readiness: a pod failing its readiness probe is not in its
    // Service (connections refused), joins it once the probe passes and leaves again
    // when it fails.
    let mut pod: Value = serde_json::from_str(&pod_on(
        "ready-web",
        &m.node("agent-1"),
        &web_script("hello-when-ready"),
    ))
    .unwrap();
    pod["spec"]["containers"][0]["readinessProbe"] = serde_json::json!({
        "exec": {"command": ["test", "-f", "/tmp/ready"]},
        "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1});
    m.ok_apply(&pod.to_string());
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"ready-web"},
"spec":{"selector":{"app":"ready-web"},"ports":[{"port":80,"targetPort":8080}]}}"#,
    );
    m.wait_running("ready-web");
    let ip = m.ok(&[
        "get",
        "svc",
        "ready-web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let answer = || {
        let o = m.try_fetch("client", &format!("http://{ip}/"));
        (
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (out, err) = answer();
    assert!(
        out.is_empty() && err.contains("refused"),
        "not ready yet: {out} {err}"
    );
    m.ok(&["exec", "ready-web", "--", "touch", "/tmp/ready"]);
    m.until("the ready pod answers through its Service", 30, || {
        (answer().0 == "hello-when-ready").then_some(())
    });
    m.ok(&["exec", "ready-web", "--", "rm", "/tmp/ready"]);
    m.until("the unready pod leaves its Service", 30, || {
        answer().1.contains("refused").then_some(())
    });
    let slices = m.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=ready-web",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&slices).unwrap();
    let eps = &v["items"][0]["endpoints"];
    assert_eq!(eps[0]["conditions"]["ready"], false, "{slices}");
    m.ok(&["delete", "pod", "ready-web", "--grace-period=0", "--force"]);
}

/// Cluster DNS, answered by each pod's own node: the resolv.conf ClusterFirst gives,
/// a Service's name (full and short), a headless Service's endpoints and SRV records,
/// ExternalName as a CNAME, pod records, NXDOMAIN, a type without records, names
/// outside the cluster forwarded to the node's resolver (one too big for UDP among
/// them), and a Service reached by name.
fn cluster_dns(m: &MultiNode, web_ip: &str) {
    let conf = m.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(conf.contains("nameserver 10.96.0.10"), "{conf}");
    // The cluster's search path, then the node's (from --resolv-conf).
    assert!(
        conf.contains(
            "search default.svc.cluster.local svc.cluster.local cluster.local example.test"
        ),
        "{conf}"
    );
    assert!(conf.contains("options ndots:5"), "{conf}");
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"hl"},
"spec":{"clusterIP":"None","selector":{"app":"web"},"ports":[{"name":"http","port":8080}]}}"#,
    );
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"ext"},
"spec":{"type":"ExternalName","externalName":"example.invalid"}}"#,
    );
    let cluster_ip = m.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let look = |pod: &str, args: &[&str]| -> String {
        let mut a = vec!["exec", pod, "--", "nslookup"];
        a.extend_from_slice(args);
        let o = m.kubectl(&a);
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    for pod in ["client", "client-s"] {
        let out = look(pod, &["web.default.svc.cluster.local"]);
        assert!(
            out.contains(&format!("Address: {cluster_ip}")),
            "{pod}: {out}"
        );
    }
    let out = m.until("the headless Service's endpoints in DNS", 30, || {
        let out = look("client", &["hl.default.svc.cluster.local"]);
        out.contains(web_ip).then_some(out)
    });
    assert_eq!(out.matches("Address: 10.42.").count(), 2, "{out}");
    let out = look(
        "client",
        &["-type=SRV", "_http._tcp.hl.default.svc.cluster.local"],
    );
    assert!(out.contains("8080"), "{out}");
    let out = look("client", &["-type=CNAME", "ext.default.svc.cluster.local"]);
    assert!(out.contains("example.invalid"), "{out}");
    let dashed = web_ip.replace('.', "-");
    let out = look("client", &[&format!("{dashed}.default.pod.cluster.local")]);
    assert!(out.contains(&format!("Address: {web_ip}")), "{out}");
    let out = look("client", &["nope.default.svc.cluster.local"]);
    assert!(out.contains("NXDOMAIN"), "{out}");
    // A type the cluster's zone has no records of: an empty answer, not an error.
    let o = m.kubectl(&[
        "exec",
        "client",
        "--",
        "nslookup",
        "-type=TXT",
        "web.default.svc.cluster.local",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success()
            && out.contains("Address:\t10.96.0.10:53")
            && !out.contains("can't find"),
        "{out}"
    );
    // Names outside the cluster go to the node's resolver (--resolv-conf), from pods
    // on both nodes; its NXDOMAIN comes back as such.
    for pod in ["client", "client-s"] {
        let out = look(pod, &["outside.example."]);
        assert!(
            out.contains(&format!("Address: {}", upstream::OUTSIDE)),
            "{pod}: {out}"
        );
    }
    let out = look("client", &["nope.example."]);
    assert!(out.contains("NXDOMAIN"), "{out}");
    // An answer too big for UDP reaches the pod cut, as the upstream cut it (busybox
    // does not retry over TCP), and the server goes on answering.
    let o = m.kubectl(&[
        "exec",
        "client",
        "--",
        "timeout",
        "10",
        "nslookup",
        "big.example.",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Non-authoritative answer") && !out.contains("can't find"),
        "{out}"
    );
    assert_eq!(
        out.matches("Address: 192.0.2.").count(),
        0,
        "a cut answer carries no records: {out}"
    );
    let out = look("client", &["web.default.svc.cluster.local"]);
    assert!(out.contains(&format!("Address: {cluster_ip}")), "{out}");
    // Names through the search path, as applications use them.
    let body = m.fetch("client", "http://web/");
    assert!(body.contains("hello-from-"), "{body}");
    let body = m.fetch("client-s", "http://web.default/");
    assert!(body.contains("hello-from-"), "{body}");
}

/// NetworkPolicies, enforced by the nodes of both ends: a default deny for the web
/// pods (by pod IP and through their Service), an allow for one client's pods on one
/// port, an egress ipBlock with an except on the client's own node, kubectl's table,
/// and malformed policies refused with their field paths.
fn network_policies(m: &MultiNode, web_ip: &str) {
    let reaches = |pod: &str, url: &str| {
        m.kubectl(&["exec", pod, "--", "timeout", "3", "wget", "-qO-", url])
            .status
            .success()
    };
    let direct = format!("http://{web_ip}:8080/");
    assert!(reaches("client", &direct) && reaches("client-s", &direct));
    m.ok_apply(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
"metadata":{"name":"web-deny"},
"spec":{"podSelector":{"matchLabels":{"app":"web"}}}}"#,
    );
    m.until("the web pods isolated", 30, || {
        (!reaches("client", &direct) && !reaches("client-s", &direct)).then_some(())
    });
    assert!(!reaches("client", "http://web/"), "nor through the Service");
    let table = m.ok(&["get", "netpol"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web-deny") && l.contains("app=web")),
        "{table}"
    );
    let np: Value =
        serde_json::from_str(&m.ok(&["get", "netpol", "web-deny", "-o", "json"])).unwrap();
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));

    // Policies add up: client's pods (app=client) on 8080 only.
    m.ok_apply(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
"metadata":{"name":"web-from-client"},
"spec":{"podSelector":{"matchLabels":{"app":"web"}},
"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"client"}}}],"ports":[{"port":8080}]}]}}"#,
    );
    m.until("client let in", 30, || {
        reaches("client", &direct).then_some(())
    });
    assert!(reaches("client", "http://web/"), "through the Service too");
    assert!(!reaches("client-s", &direct), "client-s is not app=client");
    // explain path shows the isolation where the packet reaches the pod.
    let kc = m.kubeconfig().display().to_string();
    let o = m
        .env
        .cmd(&[
            "explain",
            "path",
            "--kubeconfig",
            &kc,
            "client-s",
            "web",
            "--port",
            "8080",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        format!("ingress-pods[{web_ip}] → goto in-{web_ip}"),
        "dport 8080 accept".to_string(),
        "  drop".to_string(),
        "no answer in 1.5 s (dropped on the way)".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} in:\n{out}");
    }

    // Egress from client: the pod network but the web pod. DNS to its own node stays
    // open (traffic between a pod and its node is always allowed).
    m.ok_apply(&format!(
        r#"{{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
"metadata":{{"name":"client-out"}},
"spec":{{"podSelector":{{"matchLabels":{{"app":"client"}}}},"policyTypes":["Egress"],
"egress":[{{"to":[{{"ipBlock":{{"cidr":"10.42.0.0/16","except":["{web_ip}/32"]}}}}]}}]}}}}"#
    ));
    m.until("client's egress to web cut", 30, || {
        (!reaches("client", &direct)).then_some(())
    });
    let out = m.kubectl(&[
        "exec",
        "client",
        "--",
        "nslookup",
        "web.default.svc.cluster.local",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    m.ok(&["delete", "netpol", "client-out"]);
    m.until("client's egress open again", 30, || {
        reaches("client", &direct).then_some(())
    });

    // Malformed: 422 with every field path.
    let o = m.apply(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"bad"},
"spec":{"podSelector":{},"policyTypes":["Sideways"],
"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/16","except":["10.1.0.0/24"]}},{}],
"ports":[{"port":70000},{"port":"http","endPort":90}]}]}}"#,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for field in [
        "spec.policyTypes[0]: Unsupported value: \"Sideways\"",
        "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
        "spec.ingress[0].from[1]: Required value: must specify a peer",
        "spec.ingress[0].ports[0].port: Invalid value: ",
        "spec.ingress[0].ports[1].endPort: Forbidden",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }

    m.ok(&["delete", "netpol", "--all"]);
    m.until("everything open again", 30, || {
        reaches("client-s", &direct).then_some(())
    });
}

/// The built-in Ingress proxy on every node: two hosts to two Services, HTTPS with a
/// Secret's certificate chosen by SNI (curl trusts only that certificate), unknown
/// hosts 404, the Ingress's status listing the nodes; a LoadBalancer Service's status
/// listing them too, and reached on a node's address at its port.
fn ingress_and_load_balancers(m: &MultiNode) {
    let a2 = m.node("agent-2");
    let pod = pod_on("other", &a2, &web_script("hello-other"));
    m.ok_apply(&pod);
    m.wait_running("other");
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"other"},
"spec":{"selector":{"app":"other"},"ports":[{"name":"http","port":80,"targetPort":8080}]}}"#,
    );
    let dir = m.env.path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=b.example",
            "-addext",
            "subjectAltName=DNS:b.example",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    m.ok(&[
        "create",
        "secret",
        "tls",
        "b-tls",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    m.ok_apply(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"two-hosts"},
"spec":{"tls":[{"hosts":["b.example"],"secretName":"b-tls"}],"rules":[
{"host":"a.example","http":{"paths":[{"path":"/","pathType":"Prefix",
  "backend":{"service":{"name":"web","port":{"number":80}}}}]}},
{"host":"b.example","http":{"paths":[{"path":"/","pathType":"Prefix",
  "backend":{"service":{"name":"other","port":{"name":"http"}}}}]}}]}}"#,
    );
    let class = m.ok(&["get", "ingressclass", "berth", "-o", "json"]);
    assert!(class.contains("is-default-class"), "{class}");
    let ips = m.load_balancer_ips("ingress", "two-hosts");
    let curl = |args: &[&str]| -> (bool, String) {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    for ip in &ips {
        let a = format!("a.example:80:{ip}");
        let b = format!("b.example:80:{ip}");
        let (_, body) = m.until("the proxy routes a.example", 30, || {
            let r = curl(&["--resolve", &a, "http://a.example/"]);
            r.1.contains("hello-from-").then_some(r)
        });
        assert!(body.contains("hello-from-"), "{ip}: {body}");
        let (_, body) = curl(&["--resolve", &b, "http://b.example/"]);
        assert!(body.contains("hello-other"), "{ip}: {body}");
        let (_, body) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &format!("c.example:80:{ip}"),
            "http://c.example/",
        ]);
        assert_eq!(body.trim(), "404", "{ip}");
    }
    // HTTPS: curl verifies the certificate against the one in the Secret.
    let b443 = format!("b.example:443:{}", ips[0]);
    let (ok, body) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        "--resolve",
        &b443,
        "https://b.example/",
    ]);
    assert!(ok && body.contains("hello-other"), "{body}");
    let table = m.ok(&["get", "ingress", "two-hosts"]);
    assert!(
        table.contains("a.example,b.example") && table.contains("80, 443"),
        "{table}"
    );

    // The pod behind b.example isolated by a policy that lets nothing in: pods cannot
    // reach it, but every node's Ingress proxy still does (its own node's as node
    // traffic, the others' marked as the nodes' proxies).
    m.ok_apply(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
"metadata":{"name":"other-deny"},"spec":{"podSelector":{"matchLabels":{"app":"other"}}}}"#,
    );
    let other_ip = m.ok(&["get", "pod", "other", "-o", "jsonpath={.status.podIP}"]);
    m.until("the isolated pod refuses pods", 30, || {
        (!m.try_fetch("client-s", &format!("http://{other_ip}:8080/"))
            .status
            .success())
        .then_some(())
    });
    for ip in &ips {
        let b = format!("b.example:80:{ip}");
        let (ok, body) = curl(&["--resolve", &b, "http://b.example/"]);
        assert!(ok && body.contains("hello-other"), "through {ip}: {body}");
    }
    m.ok(&["delete", "netpol", "other-deny"]);

    // A LoadBalancer Service: its status lists the nodes; a node's address at the
    // Service's port reaches it.
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"other-lb"},
"spec":{"type":"LoadBalancer","selector":{"app":"other"},"ports":[{"port":8081,"targetPort":8080}]}}"#,
    );
    let lb_ips = m.load_balancer_ips("svc", "other-lb");
    let (_, body) = m.until("the LoadBalancer answers on a node's address", 30, || {
        let r = curl(&[&format!("http://{}:8081/", lb_ips[2])]);
        r.1.contains("hello-other").then_some(r)
    });
    assert!(body.contains("hello-other"));
    m.ok(&["delete", "svc", "other-lb", "other"]);
    m.ok(&["delete", "ingress", "two-hosts"]);
}

/// A plain HTTP/1.0 GET; the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The address busybox httpd reports (`[::ffff:10.42.1.2]` on a dual-stack socket).
fn remote(seen: &str) -> String {
    seen.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
        .to_string()
}

/// SIGKILL to a node process this test started (through `berth cluster create`).
fn kill_node(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

impl MultiNode {
    /// The three node addresses an object's `status.loadBalancer` lists, once it does.
    fn load_balancer_ips(&self, kind: &str, name: &str) -> Vec<String> {
        self.until(
            &format!("{kind} {name}'s status lists the three nodes"),
            60,
            || {
                let o: Value =
                    serde_json::from_str(&self.ok(&["get", kind, name, "-o", "json"])).unwrap();
                let ips: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                    .as_array()?
                    .iter()
                    .filter_map(|i| i["ip"].as_str().map(String::from))
                    .collect();
                (ips.len() == 3).then_some(ips)
            },
        )
    }

    /// What busybox wget in pod `pod` gets from `url`.
    fn fetch(&self, pod: &str, url: &str) -> String {
        self.ok(&["exec", pod, "--", "wget", "-qO-", url])
    }

    /// wget of `url` in `pod`, bounded to 3 s (busybox 1.35's wget crashes with -T).
    fn try_fetch(&self, pod: &str, url: &str) -> Output {
        self.kubectl(&["exec", pod, "--", "timeout", "3", "wget", "-qO-", url])
    }

    fn ok_apply(&self, json: &str) {
        let o = self.apply(json);
        assert!(
            o.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `kubectl apply -f -` of `json`.
    fn apply(&self, json: &str) -> Output {
        let mut c = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn host_gw_routes_between_nodes_and_pods_outlive_a_cluster_restart() {
    let m = MultiNode::create(1, &["--flannel-backend", "host-gw"]);
    let (server, a1) = (m.node("server"), m.node("agent-1"));
    m.ok_apply(&pod_on("web", &a1, &web_script("hello-over-host-gw")));
    m.ok_apply(&pod_on("client", &server, "exec sleep 3600"));
    let web = m.wait_running("web");
    m.wait_running("client");
    let web_ip = web["status"]["podIP"].as_str().unwrap().to_string();
    // A plain route through agent-1's address; no VXLAN device.
    let a1_ip = web["status"]["hostIP"].as_str().unwrap().to_string();
    let cidr = m.ok(&["get", "node", &a1, "-o", "jsonpath={.spec.podCIDR}"]);
    let route = m.until("the host-gw route", 30, || {
        let r = m.ip_in(&server, &["route", "show", &cidr]);
        r.contains(&format!("via {a1_ip} dev eth0")).then_some(r)
    });
    assert!(!route.contains("berth.1"), "{route}");
    let links = m.ip_in(&server, &["-o", "link"]);
    assert!(!links.contains("berth.1"), "{links}");
    assert_eq!(
        m.fetch("client", &format!("http://{web_ip}:8080/")).trim(),
        "hello-over-host-gw"
    );
    // The agent acts as its node: it reads what its pods use, not another's Secret.
    // The certificate the agent got by joining with the server's token.
    let node_kc = m
        .kubeconfig()
        .with_file_name("nodes")
        .join(&a1)
        .join("agent/pki/node.kubeconfig");
    let as_node = |args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&node_kc)
            .args(args)
            .output()
            .unwrap()
    };
    let who = as_node(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        format!("system:node:{a1}")
    );
    m.ok(&[
        "create",
        "secret",
        "generic",
        "not-for-nodes",
        "--from-literal=k=v",
    ]);
    let e = as_node(&["get", "secret", "not-for-nodes"]);
    let e = String::from_utf8_lossy(&e.stderr);
    assert!(
        e.contains(&format!(
            "no relationship found between node '{a1}' and this object"
        )),
        "{e}"
    );
    let e = as_node(&["label", "node", &server, "stolen=yes"]);
    let e = String::from_utf8_lossy(&e.stderr);
    assert!(
        e.contains(&format!(
            "node \"{a1}\" is not allowed to modify node \"{server}\""
        )),
        "{e}"
    );
    // A connection through a ClusterIP, open across the restart: an echo server on
    // agent-1, a talker on the server node that sends a line now and one after.
    m.ok_apply(&pod_on("echo", &a1, "exec nc -ll -p 9000 -e cat"));
    m.wait_running("echo");
    m.ok_apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"echo"},
"spec":{"selector":{"app":"echo"},"ports":[{"port":9000}]}}"#,
    );
    let echo_ip = m.ok(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    m.until("the echo Service answers", 60, || {
        let o = m.kubectl(&[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            &format!("echo ping | timeout 2 nc {echo_ip} 9000"),
        ]);
        String::from_utf8_lossy(&o.stdout)
            .contains("ping")
            .then_some(())
    });
    // The talker is a pod's own process (what an exec starts ends with the exec).
    let talk = format!(
        "(echo one; while [ ! -f /tmp/go ]; do sleep 0.2; done; echo two; sleep 3) | nc {echo_ip} 9000 > /tmp/heard 2>&1; exec sleep 3600"
    );
    m.ok_apply(&pod_on("talker", &server, &talk));
    m.wait_running("talker");
    m.until("the first line echoed", 30, || {
        let o = m.kubectl(&["exec", "talker", "--", "cat", "/tmp/heard"]);
        (String::from_utf8_lossy(&o.stdout) == "one\n").then_some(())
    });

    // The nodes' processes stop and start again; the pods run on throughout.
    m.env.ok(&["cluster", "stop", &m.name]);
    let ls = m.env.ok(&["cluster", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&m.name) && l.split_whitespace().nth(2) == Some("0")),
        "{ls}"
    );
    m.env.ok(&["cluster", "start", &m.name]);
    let after = m.wait_running("web");
    assert_eq!(after["status"]["podIP"], web["status"]["podIP"]);
    assert_eq!(after["metadata"]["uid"], web["metadata"]["uid"]);
    assert_eq!(
        after["status"]["containerStatuses"][0]["restartCount"], 0,
        "{after}"
    );
    assert_eq!(
        m.fetch("client", &format!("http://{web_ip}:8080/")).trim(),
        "hello-over-host-gw"
    );
    // The connection opened before the restart still carries lines both ways: the
    // agents adopted the rules (the Service proxy's table replaced in one
    // transaction, connection tracking untouched) without cutting it.
    m.ok(&["exec", "talker", "--", "touch", "/tmp/go"]);
    m.until("the second line echoed on the old connection", 30, || {
        let o = m.kubectl(&["exec", "talker", "--", "cat", "/tmp/heard"]);
        (String::from_utf8_lossy(&o.stdout) == "one\ntwo\n").then_some(())
    });
}

#[test]
fn cluster_create_refuses_bad_input_and_makes_nothing() {
    let env = Env::new();
    let e = env.fails(&["cluster", "create", "Bad_Name"]);
    assert!(e.contains("lowercase letters, digits and '-'"), "{e}");
    // A subnet that a route of this host covers (its first link's).
    let routes = Command::new("ip")
        .args(["-o", "-4", "route", "show", "proto", "kernel"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    let taken = routes
        .split_whitespace()
        .next()
        .expect("the host has a link with an IPv4 route");
    let e = env.fails(&["cluster", "create", "tbad", "--subnet", taken]);
    assert!(e.contains("overlaps"), "{e}");
    let e = env.fails(&[
        "cluster",
        "create",
        "tbad2",
        "--subnet",
        "10.45.250.0/30",
        "--agents",
        "3",
    ]);
    assert!(e.contains("room for"), "{e}");
    let e = env.fails(&["cluster", "delete", "nope"]);
    assert!(e.contains("no cluster \"nope\""), "{e}");
    assert!(!env.root().join("clusters/tbad").exists());
    assert!(!env.root().join("clusters/tbad2").exists());
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn node_ipam_gives_each_node_a_block_and_says_when_none_is_left() {
    // A pod range over the Services' is refused before anything starts, naming both.
    let env = Env::new();
    let e = env.fails(&["server", "--cluster-cidr", "10.96.0.0/12"]);
    assert!(
        e.contains("--cluster-cidr 10.96.0.0/12 overlaps the Services' range 10.96.0.0/16"),
        "{e}"
    );
    let c = Cluster::api_only_with(&[
        "--cluster-cidr",
        "10.99.0.0/23",
        "--node-cidr-mask-size",
        "24",
    ]);
    for i in 0..3 {
        c.apply(&format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"ipam-{i}"}}}}"#
        ));
    }
    let cidrs = c.until("two nodes get blocks", 30, || {
        let v: Vec<String> = (0..3)
            .map(|i| {
                c.ok(&[
                    "get",
                    "node",
                    &format!("ipam-{i}"),
                    "-o",
                    "jsonpath={.spec.podCIDR}",
                ])
            })
            .filter(|s| !s.is_empty())
            .collect();
        (v.len() == 2).then_some(v)
    });
    let mut sorted = cidrs.clone();
    sorted.sort();
    assert_eq!(sorted, ["10.99.0.0/24", "10.99.1.0/24"]);
    let events = c.until("a CIDRNotAvailable event", 30, || {
        let e = c.ok(&["get", "events", "-o", "json"]);
        let v: Value = serde_json::from_str(&e).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "CIDRNotAvailable")
            .cloned()
    });
    let msg = events["message"].as_str().unwrap();
    assert!(msg.ends_with("status is now: CIDRNotAvailable"), "{msg}");
    // A node that goes frees its block for the one that waited.
    let holder = (0..3)
        .map(|i| format!("ipam-{i}"))
        .find(|n| c.ok(&["get", "node", n, "-o", "jsonpath={.spec.podCIDR}"]) == "10.99.1.0/24")
        .unwrap();
    c.ok(&["delete", "node", &holder]);
    c.until("the waiting node gets the freed block", 45, || {
        (0..3)
            .map(|i| format!("ipam-{i}"))
            .filter(|n| *n != holder)
            .all(|n| {
                !c.ok(&["get", "node", &n, "-o", "jsonpath={.spec.podCIDR}"])
                    .is_empty()
            })
            .then_some(())
    });
    // A node that brings its own pod CIDR keeps it.
    c.apply(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"own"},"spec":{"podCIDR":"10.123.0.0/24","podCIDRs":["10.123.0.0/24"]}}"#);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        c.ok(&["get", "node", "own", "-o", "jsonpath={.spec.podCIDR}"]),
        "10.123.0.0/24"
    );
}
