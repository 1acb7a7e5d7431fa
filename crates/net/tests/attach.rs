//! Attaching network namespaces to a real bridge, checked with iproute2 and ping from
//! inside, and torn down without leftovers.

use std::path::Path;
use std::process::Command;

use berth_net::attach::{attach, teardown, Attachment};
use berth_net::network::{Networks, NewNetwork};

fn links() -> String {
    let o = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn inside(ns: &Path, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .unwrap()
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{:x}{:08x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

#[test]
fn two_namespaces_on_a_bridge_reach_each_other_and_leave_nothing() {
    let root = tempfile::tempdir().unwrap();
    let nets = Networks::host();
    let name = unique("t");
    let n = nets
        .create(&NewNetwork {
            name: name.clone(),
            ..Default::default()
        })
        .unwrap();
    let before = links();
    let mut atts: Vec<Attachment> = Vec::new();
    for i in 0..2 {
        let id = format!("{}{i}{}", unique("c"), "0".repeat(40));
        let ns = Path::new("/run/berth/netns").join(&id);
        let rec = root.path().join(format!("net{i}.json"));
        atts.push(attach(&nets, &name, &id, &ns, Vec::new(), &[], &rec).unwrap());
    }
    let (a, b) = (&atts[0], &atts[1]);
    let addr = inside(&a.netns, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    let text = String::from_utf8_lossy(&addr.stdout);
    assert!(
        text.contains(&format!("{}/{}", a.ip.unwrap(), n.subnet.prefix_len())),
        "{text}"
    );
    let ping = inside(
        &a.netns,
        &[
            "/bin/busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &b.ip.unwrap().to_string(),
        ],
    );
    assert!(ping.status.success(), "{ping:?}");
    let ping = inside(
        &b.netns,
        &[
            "/bin/busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &n.gateway.to_string(),
        ],
    );
    assert!(ping.status.success(), "{ping:?}");
    // In use: the network cannot go.
    let e = nets.remove(&name).unwrap_err().to_string();
    assert!(e.contains("in use by 2 container(s)"), "{e}");
    for a in &atts {
        teardown(a);
        assert!(!a.netns.exists());
    }
    assert!(!nets.leases(&name).any());
    // The kernel frees a released namespace, and the veth in it, asynchronously.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while atts.iter().any(|a| links().contains(&a.host_veth)) {
        assert!(std::time::Instant::now() < end, "veths left: {}", links());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = links();
    assert!(after.contains(&n.bridge));
    nets.remove(&name).unwrap();
    assert!(!links().contains(&n.bridge));
    let _ = before;
    // What the network helper does once no container holds an address: without it
    // here, berth's (now empty) nft tables would stay behind.
    let _ = nets.prune();
}

#[test]
fn cni_add_check_del_with_debians_plugins() {
    let root = tempfile::tempdir().unwrap();
    let n = std::process::id() % 250;
    let conf = root.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let bridge = format!("bcnil{n}");
    let list = serde_json::json!({
        "cniVersion": "1.0.0", "name": "lcni",
        "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": root.path().join("data"),
                     "ranges": [[{"subnet": format!("10.94.{n}.0/24")}]]}}]
    });
    std::fs::write(conf.join("l.conflist"), list.to_string()).unwrap();
    let list = berth_net::cni::load_from(&conf, "lcni").unwrap();
    let id = format!("{}{}", unique("k"), "0".repeat(40));
    let ns = Path::new("/run/berth/netns").join(&id);
    let rec = root.path().join("net.json");
    let att =
        berth_net::attach::attach_cni("lcni", list.clone(), &id, &ns, Vec::new(), &rec).unwrap();
    let ip = att.ip.unwrap();
    assert!(ip.to_string().starts_with(&format!("10.94.{n}.")), "{ip}");
    let state = att.cni.as_ref().unwrap();
    berth_net::cni::check(&list, &id, &ns, "eth0", &[], &state.result).unwrap();
    // CHECK notices what was taken away: the container's address.
    let o = inside(&ns, &["ip", "addr", "flush", "dev", "eth0"]);
    assert!(o.status.success());
    let e = berth_net::cni::check(&list, &id, &ns, "eth0", &[], &state.result)
        .unwrap_err()
        .to_string();
    assert!(e.contains("CNI plugin bridge CHECK failed"), "{e}");
    teardown(&att);
    assert!(!ns.exists());
    assert!(!root.path().join("data/lcni").join(ip.to_string()).exists());
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
}

/// In a network namespace of its own (the test re-runs itself under `unshare --net`,
/// so that the firewall tables it deletes are its own): once the last container is
/// torn down, prune takes the bridge and berth's nft tables away, and a new container
/// brings them back.
#[test]
fn prune_leaves_nothing_once_the_last_container_is_gone() {
    if std::env::var_os("BERTH_PRUNE_TEST").is_none() {
        let o = Command::new("unshare")
            .arg("--net")
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "prune_leaves_nothing_once_the_last_container_is_gone",
                "--nocapture",
            ])
            .env("BERTH_PRUNE_TEST", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("pruned"),
            "{o:?}"
        );
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let nets = Networks::new(root.path());
    let n = nets
        .create(&NewNetwork {
            name: "p".into(),
            ..Default::default()
        })
        .unwrap();
    let id = format!("{}{}", unique("p"), "0".repeat(40));
    let ns = Path::new("/run/berth/netns").join(&id);
    let rec = root.path().join("net.json");
    let port = berth_net::ports::parse("80").unwrap();
    let att = attach(&nets, "p", &id, &ns, vec![port], &[], &rec).unwrap();
    let tables = || {
        let o = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(links().contains(&n.bridge));
    assert!(tables().contains("berth"));
    // A container still holds an address: nothing goes.
    assert!(!nets.prune().unwrap());
    teardown(&att);
    assert!(nets.prune().unwrap());
    assert!(!links().contains(&n.bridge), "{}", links());
    assert!(!tables().contains("berth"), "{}", tables());
    let att = attach(&nets, "p", &id, &ns, Vec::new(), &[], &rec).unwrap();
    assert!(links().contains(&n.bridge) && tables().contains("berth"));
    teardown(&att);
    assert!(nets.prune().unwrap());
    println!("pruned");
}

/// 1,000 namespaces attached and torn down one after another, as 1,000 pods made and
/// deleted do: every one gets an address, and nothing stays behind — no veth, no
/// namespace file, no lease, no route — so the network can be removed at the end.
#[test]
fn a_thousand_attach_teardown_cycles_leave_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let nets = Networks::host();
    let name = unique("k");
    let n = nets
        .create(&NewNetwork {
            name: name.clone(),
            ..Default::default()
        })
        .unwrap();
    let routes = || {
        let o = Command::new("ip").args(["-4", "route"]).output().unwrap();
        let all = String::from_utf8_lossy(&o.stdout).into_owned();
        // Only this network's: other tests add and remove theirs meanwhile. The
        // route's "linkdown" follows the bridge's carrier, which drops a moment
        // after its last port leaves: the route is the same either way.
        all.lines()
            .filter(|l| l.contains(&n.bridge))
            .map(|l| l.replace(" linkdown", ""))
            .collect::<Vec<_>>()
    };
    // The bridge (and its subnet's route) comes with the first attachment.
    let mut routes_before = Vec::new();
    let mut veths = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let id = format!("{}{i:04}{}", unique("c"), "0".repeat(36));
        let ns = Path::new("/run/berth/netns").join(&id);
        let rec = root.path().join("net.json");
        let a = attach(&nets, &name, &id, &ns, Vec::new(), &[], &rec).unwrap();
        assert!(a.ip.is_some_and(|ip| n.subnet.contains(&ip)), "{a:?}");
        teardown(&a);
        assert!(!a.netns.exists(), "{}", a.netns.display());
        veths.push(a.host_veth.clone());
        if i == 0 {
            routes_before = routes();
        }
    }
    eprintln!("1,000 cycles in {:?}", started.elapsed());
    assert!(!nets.leases(&name).any(), "no lease left");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let l = links();
        let left: Vec<&String> = veths.iter().filter(|v| l.contains(v.as_str())).collect();
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < end, "veths left: {left:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(routes(), routes_before);
    nets.remove(&name).unwrap();
    assert!(!links().contains(&n.bridge));
    let _ = nets.prune();
}
