//! Container networking through the `berth` CLI, checked with the kernel's and the real
//! tools' view: addresses and routes inside, published ports reached from the host (its
//! address and 127.0.0.1) and from another container, outbound NAT seen from a network
//! namespace standing in for the outside world, names on user-defined networks; and
//! faults — taken ports, exhausted and overlapping subnets, bad input, nft missing, a
//! crash half-way through — leaving no veth, namespace, lease or nft element behind.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn inspect(env: &Env, name: &str) -> Value {
    let v: Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

fn ip_of(env: &Env, name: &str) -> String {
    inspect(env, name)["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Network objects of these containers still present: namespaces, veths, leases.
fn net_leftovers(ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    for id in ids {
        if std::path::Path::new("/run/berth/netns").join(id).exists() {
            out.push(format!("netns {id}"));
        }
        for prefix in ["veth", "vp"] {
            let name = format!("{prefix}{}", &id[..11]);
            if links.contains(&format!(" {name}@")) || links.contains(&format!(" {name}:")) {
                out.push(format!("link {name}"));
            }
        }
    }
    // Leases are the host's (shared by every berth root): only these containers' count.
    if let Ok(rd) = std::fs::read_dir("/var/lib/berth/networks/leases") {
        for net in rd.flatten() {
            for l in std::fs::read_dir(net.path()).unwrap().flatten() {
                let holder = std::fs::read_to_string(l.path()).unwrap_or_default();
                let holder = holder.lines().next().unwrap_or("").trim();
                if ids.iter().any(|i| i == holder) {
                    out.push(format!("lease {}", l.path().display()));
                }
            }
        }
    }
    out
}

/// Waits (up to 3 s) for these containers' network objects to be gone: the kernel
/// destroys a released namespace, and the veth in it, asynchronously.
fn assert_no_net_leftovers(ids: &[String]) {
    let end = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left = net_leftovers(ids);
        if left.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < end, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes host-wide networks a test made, also when it fails (networks are the
/// host's, not the test's state root's). Declare it before the test's `Env`, so that
/// the containers go first.
struct Networks(Vec<String>);

impl Drop for Networks {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new(bin())
                .args(["network", "rm", n])
                .stdin(std::process::Stdio::null())
                .output();
        }
    }
}

/// Deletes a link a test's CNI plugin made, also when the test fails.
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The CNI portmap plugin's shared chains (CNI-HOSTPORT-*), which the plugin leaves in
/// the host's nat tables by design: removed when dropped if this test made them, with
/// the tables themselves if nothing else is in them.
struct PortmapChains {
    made: bool,
    tables_before: (bool, bool),
}

fn nft_table(t: &str) -> bool {
    let mut args = vec!["list", "table"];
    args.extend(t.split(' '));
    Command::new("nft")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl PortmapChains {
    fn new() -> PortmapChains {
        let nat = Command::new("iptables").args(["-t", "nat", "-S"]).output();
        let existed =
            nat.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("CNI-HOSTPORT-DNAT"));
        PortmapChains {
            made: !existed,
            tables_before: (nft_table("ip nat"), nft_table("ip6 nat")),
        }
    }
}

impl Drop for PortmapChains {
    fn drop(&mut self) {
        if !self.made {
            return;
        }
        for tool in ["iptables", "ip6tables"] {
            let Ok(o) = Command::new(tool).args(["-t", "nat", "-S"]).output() else {
                continue;
            };
            let rules = String::from_utf8_lossy(&o.stdout).into_owned();
            for r in rules
                .lines()
                .filter(|l| l.starts_with("-A ") && l.contains("CNI-HOSTPORT"))
            {
                // The rules carry quoted comments: the shell splits them as iptables printed them.
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{tool} -t nat -D {}", &r[3..]))
                    .output();
            }
            for c in rules
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| c.starts_with("CNI-HOSTPORT"))
            {
                let _ = Command::new(tool).args(["-t", "nat", "-X", c]).output();
            }
        }
        for (table, before) in [
            ("ip nat", self.tables_before.0),
            ("ip6 nat", self.tables_before.1),
        ] {
            if before {
                continue;
            }
            let tool = if table == "ip nat" {
                "iptables"
            } else {
                "ip6tables"
            };
            let left = Command::new(tool).args(["-t", "nat", "-S"]).output();
            let empty = left.is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .all(|l| l.starts_with("-P "))
            });
            if empty {
                let mut args = vec!["delete", "table"];
                args.extend(table.split(' '));
                let _ = Command::new("nft").args(args).output();
            }
        }
    }
}

/// The ID a container's network objects go by: its sandbox's (docker's
/// NetworkSettings.SandboxID), which holds its namespace, lease and veth.
fn id_of(env: &Env, name: &str) -> String {
    inspect(env, name)["NetworkSettings"]["SandboxID"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An HTTP GET of /hostname from busybox httpd at `addr`.
fn http_hostname(addr: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn host_address() -> String {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines()
        .filter(|l| !l.contains(" berth0 ") && !l.contains(" br-"))
        .find_map(|l| l.split_whitespace().nth(3))
        .and_then(|a| a.split('/').next())
        .expect("the host has a global IPv4 address")
        .to_string()
}

#[test]
fn bridge_published_ports_and_outbound_nat() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let port = free_port();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-h",
        "webhost",
        "-p",
        &format!("{port}:80"),
        "busybox:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    let web_id = id_of(&env, "web");
    let ip = ip_of(&env, "web");
    assert!(ip.starts_with("10.87."), "{ip}");
    // Inside: eth0 with the address, the default route through the bridge.
    let o = env.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "ip -4 -o addr show eth0; ip route",
    ]);
    assert!(o.contains(&format!("inet {ip}/16")), "{o}");
    assert!(o.contains("default via 10.87.0.1 dev eth0"), "{o}");
    let ps = env.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(ps.contains(&format!("web 0.0.0.0:{port}->80/tcp")), "{ps}");
    // The published port from the host: its own address and localhost.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http_hostname(&format!("{}:{port}", host_address())),
        "webhost"
    );
    assert_eq!(http_hostname(&format!("127.0.0.1:{port}")), "webhost");
    // From another container, through the host's address (hairpin NAT), and directly.
    let req = "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n'";
    let o = env.ok(&[
        "run",
        "--rm",
        "busybox:1",
        "sh",
        "-c",
        &format!(
            "{req} | nc -w 3 {} {port} | tail -n1; {req} | nc -w 3 {ip} 80 | tail -n1",
            host_address()
        ),
    ]);
    assert_eq!(o, "webhost\nwebhost\n");
    // Outbound NAT: a namespace standing in for the world, reached through a veth from
    // the host; it sees the host's address, not the container's.
    let world = format!("bw{}", &web_id[..8]);
    let sh = |cmd: &str| {
        let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let (wa, wb) = (format!("{world}a"), format!("{world}b"));
    sh(&format!(
        "ip netns add {world} && ip link add {wa} type veth peer name {wb} && \
         ip link set {wb} netns {world} && ip addr add 198.18.77.1/30 dev {wa} && ip link set {wa} up && \
         ip -n {world} addr add 198.18.77.2/30 dev {wb} && ip -n {world} link set {wb} up && \
         ip -n {world} link set lo up"
    ));
    let mut listener = Command::new("ip")
        .args([
            "netns",
            "exec",
            &world,
            "/bin/busybox",
            "nc",
            "-l",
            "-p",
            "9000",
        ])
        .stdout(std::process::Stdio::null())
        // Input kept open: busybox nc ends the connection when its input ends.
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    env.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "busybox:1",
        "sh",
        "-c",
        "sleep 30 | nc 198.18.77.2 9000",
    ]);
    let mut peers = String::new();
    for _ in 0..50 {
        peers = sh(&format!("ip netns exec {world} ss -tn state established"));
        if peers.contains(":9000") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = listener.kill();
    let _ = listener.wait();
    let client_log = env.ok(&["logs", "client"]);
    env.ok(&["rm", "-f", "client"]);
    sh(&format!(
        "ip netns del {world}; ip link del {wa} 2>/dev/null; true"
    ));
    // (busybox nc listens on IPv6: the peer shows as ::ffff:198.18.77.1.)
    assert!(
        peers.contains("198.18.77.1"),
        "{peers} (client: {client_log})"
    );
    assert!(!peers.contains("10.87."), "{peers}");
    // Nothing left once the containers go; the port is free again.
    env.ok(&["rm", "-f", "web"]);
    let nft = Command::new("nft")
        .args(["list", "table", "ip", "berth"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&nft.stdout).contains(&format!("{port} : ")),
        "{nft:?}"
    );
    assert_no_net_leftovers(std::slice::from_ref(&web_id));
}

#[test]
fn user_networks_names_and_their_rules() {
    let net = format!("n{}", std::process::id());
    let other = format!("o{}", std::process::id());
    let _networks = Networks(vec![net.clone(), other.clone()]);
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let id = env.ok(&["network", "create", &net]).trim().to_string();
    let info: Value = serde_json::from_str(&env.ok(&["network", "inspect", &net])).unwrap();
    let subnet = info[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(subnet.starts_with("10.90."), "{subnet}");
    assert_eq!(info[0]["Id"], id);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        &net,
        "busybox:1",
        "sleep",
        "60",
    ]);
    // By name, from a container started later, and back.
    let o = env.ok(&[
        "run",
        "--rm",
        "--name",
        "app",
        "--network",
        &net,
        "busybox:1",
        "sh",
        "-c",
        "ping -c1 -W2 db >/dev/null && echo reached db",
    ]);
    assert_eq!(o, "reached db\n");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "app2",
        "--network",
        &net,
        "busybox:1",
        "sleep",
        "60",
    ]);
    let o = env.ok(&["exec", "db", "ping", "-c1", "-W2", "app2"]);
    assert!(o.contains("1 packets received"), "{o}");
    // Names come from berth's resolver on the gateway; a second container may not
    // claim a name the network already answers.
    let gw = info[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let db_ip = ip_of(&env, "db");
    let o = env.ok(&[
        "exec",
        "app2",
        "sh",
        "-c",
        "cat /etc/resolv.conf; nslookup db",
    ]);
    assert!(o.contains(&format!("nameserver {gw}")), "{o}");
    assert!(o.contains(&format!("Address: {db_ip}")), "{o}");
    let e = env.fails(&[
        "run",
        "--rm",
        "--network",
        &net,
        "-h",
        "db",
        "busybox:1",
        "true",
    ]);
    assert!(e.contains("already answered on network"), "{e}");
    // Networks are isolated from each other: neither the default bridge nor another
    // user network reaches db.
    env.ok(&["network", "create", &other]);
    for n in [other.as_str(), "bridge"] {
        let o = env.run(&[
            "run",
            "--rm",
            "--network",
            n,
            "busybox:1",
            "ping",
            "-c1",
            "-W1",
            &db_ip,
        ]);
        assert!(!o.status.success(), "{n} reached db: {o:?}");
    }
    // network connect: a second interface on the other network, names there answered
    // too; it comes back after a restart; disconnect takes it away.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        &other,
        "busybox:1",
        "sleep",
        "60",
    ]);
    env.ok(&["network", "connect", &other, "app2"]);
    let o = env.ok(&[
        "exec",
        "app2",
        "sh",
        "-c",
        "ip -4 -o addr show eth1; ping -c1 -W2 peer",
    ]);
    assert!(
        o.contains("eth1") && o.contains("1 packets received"),
        "{o}"
    );
    let e = env.fails(&["network", "connect", &other, "app2"]);
    assert!(e.contains("already on network"), "{e}");
    env.ok(&["restart", "-t", "1", "app2"]);
    let o = env.ok(&["exec", "app2", "ip", "-o", "link"]);
    assert!(o.contains("eth1"), "{o}");
    env.ok(&["network", "disconnect", &other, "app2"]);
    let o = env.ok(&["exec", "app2", "ip", "-o", "link"]);
    assert!(!o.contains("eth1"), "{o}");
    let e = env.fails(&["network", "disconnect", &other, "app2"]);
    assert!(e.contains("is not on network"), "{e}");
    let peer = id_of(&env, "peer");
    env.ok(&["rm", "-f", "peer"]);
    assert_no_net_leftovers(&[peer]);
    env.ok(&["network", "rm", &other]);
    // The default bridge and the user network are different subnets.
    assert!(!ip_of(&env, "db").starts_with("10.87."));
    // In use: no removal; a network whose subnet overlaps is refused; bad input named.
    let e = env.fails(&["network", "rm", &net]);
    assert!(e.contains("in use by 2 container(s)"), "{e}");
    let e = env.fails(&["network", "create", "--subnet", &subnet, "other"]);
    assert!(e.contains("overlaps network"), "{e}");
    let e = env.fails(&["network", "create", "--subnet", "10.91.0.0/33", "other"]);
    assert!(e.contains("not an IPv4 CIDR"), "{e}");
    let e = env.fails(&["network", "create", &net]);
    assert!(e.contains("already exists"), "{e}");
    let e = env.fails(&["run", "--rm", "--network", "nosuchnet", "busybox:1", "true"]);
    assert!(e.contains("network nosuchnet not found"), "{e}");
    let ids = vec![id_of(&env, "db"), id_of(&env, "app2")];
    env.ok(&["rm", "-f", "db", "app2"]);
    env.ok(&["network", "rm", &net]);
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!("br-{}", &id[..12])));
    assert_no_net_leftovers(&ids);
}

#[test]
fn network_faults_leave_nothing_behind() {
    let net = format!("x{}", std::process::id());
    let _networks = Networks(vec![net.clone()]);
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // A port a program on the host holds.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = env.fails(&[
        "run",
        "--rm",
        "-p",
        &format!("{port}:80"),
        "busybox:1",
        "true",
    ]);
    assert!(e.contains("already in use by a program on the host"), "{e}");
    drop(taken);
    // The same host port twice.
    let port = free_port();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "p1",
        "-p",
        &format!("{port}:80"),
        "busybox:1",
        "sleep",
        "60",
    ]);
    let e = env.fails(&[
        "run",
        "--rm",
        "-p",
        &format!("{port}:80"),
        "busybox:1",
        "true",
    ]);
    assert!(e.contains("already published by another container"), "{e}");
    let e = env.fails(&["run", "--rm", "-p", "80:http", "busybox:1", "true"]);
    assert!(e.contains("container port \"http\" is not a port"), "{e}");
    // An exhausted subnet: a /30 has room for one container besides the gateway.
    let sub = format!("10.91.{}.0/30", std::process::id() % 250);
    env.ok(&["network", "create", "--subnet", &sub, &net]);
    env.ok(&[
        "run",
        "-d",
        "--name",
        "only",
        "--network",
        &net,
        "busybox:1",
        "sleep",
        "60",
    ]);
    let e = env.fails(&["run", "--rm", "--network", &net, "busybox:1", "true"]);
    assert!(e.contains("has no free address"), "{e}");
    // nft missing: publishing says what to install.
    let o = env
        .cmd(&[
            "run",
            "--rm",
            "-p",
            &format!("{}:80", free_port()),
            "busybox:1",
            "true",
        ])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("nft is not installed"), "{e}");
    // A crash (kill -9) right after the veth pair was made (while the container's
    // root filesystem is made beside it): the next command undoes what the crash cut
    // short, and `rm` takes the rest.
    let sandboxes = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(env.root().join("sandboxes"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = sandboxes();
    let o = env
        .cmd(&["run", "-d", "--name", "crash", "busybox:1", "sleep", "60"])
        .env("BERTH_FAULT", "net-after-veth")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let crashed: Vec<String> = sandboxes().difference(&before).cloned().collect();
    assert_eq!(crashed.len(), 1, "the crashed run's sandbox: {crashed:?}");
    let crash = crashed[0].clone();
    assert!(std::path::Path::new("/run/berth/netns")
        .join(&crash)
        .exists());
    let _ = env.cmd(&["rm", "-f", "crash"]).output();
    assert_eq!(
        env.ok(&["ps", "-a", "--filter", "name=crash", "-q"]),
        "",
        "the crashed container is gone"
    );
    assert!(
        !env.root().join("sandboxes").join(&crash).exists(),
        "the crashed container's sandbox record is gone"
    );
    let mut ids = vec![crash, id_of(&env, "p1"), id_of(&env, "only")];
    env.ok(&["rm", "-f", "p1", "only"]);
    env.ok(&["network", "rm", &net]);
    // Failed runs left nothing either (their containers are gone with --rm).
    ids.retain(|i| !i.is_empty());
    assert_no_net_leftovers(&ids);
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn cni_plugins_wire_a_container_and_take_it_down() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    // Debian's containernetworking-plugins: bridge + host-local + portmap, on a bridge
    // and subnet of this test's own.
    let n = std::process::id() % 250;
    let (conf, data) = (env.path("cni"), env.path("cni-data"));
    std::fs::create_dir_all(&conf).unwrap();
    let bridge = format!("bcni{n}");
    let _bridge = Link(bridge.clone());
    let _portmap = PortmapChains::new();
    let list = serde_json::json!({
        "cniVersion": "1.0.0", "name": "tcni",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "dataDir": data, "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"subnet": format!("10.93.{n}.0/24")}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(conf.join("10-tcni.conflist"), list.to_string()).unwrap();
    let broken = serde_json::json!({"cniVersion": "1.0.0", "name": "broken",
        "plugins": [{"type": "no-such-plugin"}]});
    std::fs::write(conf.join("20-broken.conflist"), broken.to_string()).unwrap();
    let berth = |args: &[&str]| {
        env.cmd(args)
            .env("BERTH_CNI_CONF_DIR", &conf)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let port = free_port();
    let o = berth(&[
        "run",
        "-d",
        "--name",
        "cw",
        "-h",
        "cnihost",
        "--network",
        "cni:tcni",
        "-p",
        &format!("{port}:80"),
        "busybox:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    assert!(o.status.success(), "{o:?}");
    let id = id_of(&env, "cw");
    let ip = ip_of(&env, "cw");
    assert!(ip.starts_with(&format!("10.93.{n}.")), "{ip}");
    assert!(data.join("tcni").join(&ip).exists());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http_hostname(&format!("127.0.0.1:{port}")), "cnihost");
    assert_eq!(
        http_hostname(&format!("{}:{port}", host_address())),
        "cnihost"
    );
    // A plugin that does not exist: named, and nothing made.
    let o = berth(&[
        "run",
        "--rm",
        "--network",
        "cni:broken",
        "busybox:1",
        "true",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("CNI plugin \"no-such-plugin\""), "{e}");
    let o = berth(&["run", "--rm", "--network", "cni:nope", "busybox:1", "true"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no CNI network \"nope\""), "{e}");
    // DEL releases the address and the port rules.
    env.ok(&["rm", "-f", "cw"]);
    assert!(!data.join("tcni").join(&ip).exists());
    let nat = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&nat.stdout).contains(&id[..12]));
    assert!(!std::path::Path::new("/run/berth/netns").join(&id).exists());
}

#[test]
fn ipv6_networks_give_both_addresses_and_names() {
    let net = format!("six{}", std::process::id());
    let _networks = Networks(vec![net.clone()]);
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    env.ok(&["network", "create", "--ipv6", &net]);
    let info: Value = serde_json::from_str(&env.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(info[0]["EnableIPv6"], true);
    let gw6 = info[0]["IPAM"]["Config"][1]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(gw6.starts_with("fdb7:"), "{info}");
    for n in ["a6", "b6"] {
        env.ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--network",
            &net,
            "busybox:1",
            "sleep",
            "60",
        ]);
    }
    let a6 = inspect(&env, "a6")["NetworkSettings"]["GlobalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(a6.starts_with("fdb7:"), "{a6}");
    let o = env.ok(&[
        "exec",
        "b6",
        "sh",
        "-c",
        &format!(
            "ip -6 route; ping -6 -c1 -W2 {a6} | grep received; ping -6 -c1 -W2 a6 | grep received"
        ),
    ]);
    assert!(o.contains(&format!("default via {gw6}")), "{o}");
    assert_eq!(o.matches("1 packets received").count(), 2, "{o}");
    // The host reaches it across the bridge too.
    let ping = Command::new("/bin/busybox")
        .args(["ping", "-6", "-c1", "-W2", &a6])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    let e = env.fails(&["network", "create", "--subnet", "fdb7:9::/120", "tiny6"]);
    assert!(e.contains("/64 to /96"), "{e}");
    let ids = vec![id_of(&env, "a6"), id_of(&env, "b6")];
    env.ok(&["rm", "-f", "a6", "b6"]);
    env.ok(&["network", "rm", &net]);
    assert_no_net_leftovers(&ids);
}
