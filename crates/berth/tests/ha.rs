//! Several servers on one etcd (a 3-member cluster of Debian's etcd-server): a second
//! server joins with the first's token and serves the same cluster (same CA, both in
//! the `kubernetes` Service's endpoints); the server leading the controllers is killed
//! with SIGKILL while a Deployment scales, and the other takes over within its lease;
//! joining is refused on SQLite, with an agent's token, and by a server on SQLite.
//! Needs kubectl 1.32.

mod common;

// The etcd harness brings its own copy of the port helper `common` uses too.
#[allow(clippy::duplicate_mod)]
#[path = "../../store/tests/support/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use common::cluster::Cluster;

const LEASE: [&str; 6] = [
    "--leader-elect-lease-duration",
    "5s",
    "--leader-elect-renew-deadline",
    "4s",
    "--leader-elect-retry-period",
    "1s",
];

/// The `kubernetes` Service's endpoints as `IP:PORT,` each.
fn endpoints(c: &Cluster) -> String {
    c.ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={range .subsets[*]}{.addresses[0].ip}:{.ports[0].port},{end}",
    ])
}

/// `berth server` joining `url` with a token, expected to fail: its stderr.
fn join_refused(env: &common::Env, etcd: Option<&str>, url: &str, token: &[&str]) -> String {
    let mut args = vec![
        "server",
        "--disable-agent",
        "--listen",
        "127.0.0.1:0",
        "--server",
        url,
    ];
    if let Some(e) = etcd {
        args.extend(["--datastore-endpoint", e]);
    }
    args.extend(token);
    let o = env.cmd(&args).output().unwrap();
    assert!(!o.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn holder(c: &Cluster, lease: &str) -> String {
    c.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        lease,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_second_server_joins_on_etcd_and_takes_over_when_the_leader_dies() {
    let etcd = etcd::Cluster::start(3);
    let eps = etcd.endpoints().join(",");
    let mut flags = vec!["--datastore-endpoint", eps.as_str()];
    flags.extend(LEASE);
    // The first server, and a node agent joined to it.
    let mut a_flags = vec!["--disable-agent"];
    a_flags.extend(&flags);
    let mut a = Cluster::start_with(&a_flags);
    let a_url = format!("https://127.0.0.1:{}", a.port);
    let a_token = a.env.root().join("server/token");
    let mut b_flags = flags.clone();
    b_flags.extend([
        "--server",
        &a_url,
        "--token-file",
        a_token.to_str().unwrap(),
    ]);
    let b = Cluster::api_only_with(&b_flags);

    // One cluster: the same CA, each server's writes seen by the other, both
    // servers behind the kubernetes Service.
    let ca = |c: &Cluster| std::fs::read(c.env.root().join("server/pki/ca.crt")).unwrap();
    assert_eq!(ca(&a), ca(&b));
    assert!(
        b.log().contains("joined the cluster's servers"),
        "{}",
        b.log()
    );
    b.ok(&[
        "create",
        "deployment",
        "web",
        "--image=localhost/busybox:1",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    let running = |c: &Cluster| {
        c.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "--no-headers",
        ])
        .lines()
        .count()
    };
    a.until("two pods running", 60, || (running(&a) == 2).then_some(()));
    let both = format!(
        "127.0.0.1:{},127.0.0.1:{}",
        a.port.min(b.port),
        a.port.max(b.port)
    );
    a.until("both servers in the endpoints", 30, || {
        let e = endpoints(&a);
        (e.trim_end_matches(',') == both).then_some(())
    });
    a.until("the agent knowing both servers", 30, || {
        a.agent_log()
            .contains(&format!("127.0.0.1:{}", b.port))
            .then_some(())
    });

    // Kill -9 the first server, which leads (it started first): the second's
    // controllers and scheduler take over within the lease (5 s here) and finish the
    // scale-up begun just before, with no pod made twice; the agent goes on through
    // the second server.
    let leader = holder(&b, "kube-controller-manager");
    assert!(
        a.log().contains(&format!("identity={leader}")),
        "the first server should lead: {leader}"
    );
    b.ok(&["scale", "deployment", "web", "--replicas=5"]);
    let t0 = Instant::now();
    a.kill();
    let took = b.until("a new controller-manager leader", 30, || {
        (holder(&b, "kube-controller-manager") != leader).then(|| t0.elapsed())
    });
    eprintln!(
        "controller-manager takeover after kill -9 of the leading server: {took:?} (lease 5 s)"
    );
    assert!(took < Duration::from_secs(12), "took {took:?}");
    b.until("five pods running", 60, || (running(&b) == 5).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    let pods = b.ok(&["get", "pods", "-l", "app=web", "--no-headers"]);
    assert_eq!(pods.lines().count(), 5, "{pods}");
    let rs = b.ok(&["get", "rs", "-l", "app=web", "--no-headers"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
    let lease = |c: &Cluster| {
        c.ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            &a.node,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let before = lease(&b);
    b.until("the node's heartbeat through the second server", 30, || {
        (lease(&b) != before).then_some(())
    });
    assert!(
        a.agent_log()
            .contains("API server unreachable; using another"),
        "{}",
        a.agent_log()
    );
    // The dead server leaves the endpoints once its Lease lapses.
    let alone = format!("127.0.0.1:{},", b.port);
    b.until("the dead server out of the endpoints", 60, || {
        (endpoints(&b) == alone).then_some(())
    });
    let live = &b;

    // Refusals: no shared store here; an agent's token; a first server on SQLite.
    let env = common::Env::new();
    let live_url = format!("https://127.0.0.1:{}", live.port);
    let live_token = live.env.root().join("server/token");
    let e = join_refused(
        &env,
        None,
        &live_url,
        &["--token-file", live_token.to_str().unwrap()],
    );
    assert!(e.contains("--datastore-endpoint (etcd)"), "{e}");
    let agent_token = live
        .env
        .cmd(&["token", "create"])
        .env("KUBECONFIG", live.kubeconfig())
        .output()
        .unwrap();
    let agent_token = String::from_utf8_lossy(&agent_token.stdout)
        .trim()
        .to_string();
    let e = join_refused(&env, Some(&eps), &live_url, &["--token", &agent_token]);
    assert!(e.contains("may join agents but not servers"), "{e}");
    // Nor the agents' own token, which nodes carry.
    let nodes_token = live.env.root().join("server/agent-token");
    let e = join_refused(
        &env,
        Some(&eps),
        &live_url,
        &["--token-file", nodes_token.to_str().unwrap()],
    );
    assert!(e.contains("may join agents but not servers"), "{e}");
    let lone = Cluster::api_only();
    let lone_url = format!("https://127.0.0.1:{}", lone.port);
    let lone_token = lone.env.root().join("server/token");
    let e = join_refused(
        &env,
        Some(&eps),
        &lone_url,
        &["--token-file", lone_token.to_str().unwrap()],
    );
    assert!(e.contains("keeps its state in SQLite"), "{e}");
}
