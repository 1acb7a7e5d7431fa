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
    let after = links();
    for a in &atts {
        assert!(!after.contains(&a.host_veth), "{after}");
    }
    assert!(after.contains(&n.bridge));
    nets.remove(&name).unwrap();
    assert!(!links().contains(&n.bridge));
    let _ = before;
}
