//! Joining nodes by token, driven as users would: the server's join token and
//! `berth token create|list|delete`; CertificateSigningRequests made with kubectl as a
//! bootstrap token, approved and signed by the controller manager, or left for an
//! administrator, denied, refused; tokens expired, deleted or for another CA; and
//! `berth agent --server --token-file` joining, getting a serving certificate, and
//! renewing its client certificate before it expires; cluster-info signed by the
//! tokens with the signing usage, and an agent joining with the bare `ID.SECRET`
//! through it. Needs kubectl 1.32.

mod common;

use std::process::Output;
use std::time::Duration;

use berth_join::JoinToken;
use common::cluster::Cluster;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// kubectl with a kubeconfig of `user` (YAML lines), trusting the cluster CA.
fn kubectl_as(c: &Cluster, label: &str, user: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let kc = c.env.path(&format!("kubeconfig-{label}"));
    let ca = c.env.root().join("server/pki/ca.crt");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: u\n  context:\n    cluster: berth\n    user: u\ncurrent-context: u\n",
            c.port,
            ca.display()
        ),
    )
    .unwrap();
    c.kubectl_with(args, stdin, &[("KUBECONFIG", kc.to_str().unwrap())])
}

fn as_token(c: &Cluster, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_as(
        c,
        &token[..6],
        &format!("    token: {token}\n"),
        args,
        stdin,
    )
}

/// A CSR manifest for `cn` in `orgs` for `signer`.
fn csr_yaml(name: &str, cn: &str, orgs: &[&str], signer: &str, usages: &str) -> String {
    let (req, _key) = berth_join::csr::request(cn, orgs, &[], &[]).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(req);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {b64}\n  signerName: {signer}\n  usages: [{usages}]\n  username: system:admin\n  groups: [system:masters]\n"
    )
}

/// Creates a CSR as the bootstrap `token`, expecting it accepted.
fn submit(
    c: &Cluster,
    token: &str,
    name: &str,
    cn: &str,
    orgs: &[&str],
    signer: &str,
    usages: &str,
) {
    let o = as_token(
        c,
        token,
        &["create", "-f", "-"],
        Some(&csr_yaml(name, cn, orgs, signer, usages)),
    );
    assert!(o.status.success(), "{}", text(&o));
}

const CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const CLIENT_USAGES: &str = "digital signature, key encipherment, client auth";

/// The CONDITION column of `kubectl get csr NAME`.
fn condition(c: &Cluster, name: &str) -> String {
    let out = c.ok(&["get", "csr", name, "--no-headers"]);
    out.split_whitespace().last().unwrap_or("").to_string()
}

fn berth(c: &Cluster, args: &[&str]) -> Output {
    c.env
        .cmd(args)
        .env("KUBECONFIG", c.kubeconfig())
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn bootstrap_tokens_get_node_certificates_and_nothing_else() {
    let c = Cluster::api_only();
    // The server's join token names the CA it serves.
    let server_token: JoinToken = std::fs::read_to_string(c.env.root().join("server/token"))
        .unwrap()
        .parse()
        .unwrap();
    let ca = std::fs::read(c.env.root().join("server/pki/ca.crt")).unwrap();
    assert_eq!(server_token.ca_hash, berth_join::ca_hash(&ca));

    // A token of one's own, listed with its expiry.
    let o = berth(
        &c,
        &["token", "create", "--ttl", "1h", "--description", "for j1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let made: JoinToken = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(made.ca_hash, server_token.ca_hash);
    let token = made.token.to_string();
    let list = berth(&c, &["token", "list"]);
    let list = text(&list);
    let row = list
        .lines()
        .find(|l| l.starts_with(&token))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("for j1") && row.contains("authentication,signing"),
        "{row}"
    );
    assert!(list.contains("<forever>"), "the server's own token: {list}");

    // A node client certificate asked for with the token: approved, signed, and the
    // requester recorded whatever the request claimed.
    submit(
        &c,
        &token,
        "j1-client",
        "system:node:j1",
        &["system:nodes"],
        CLIENT,
        CLIENT_USAGES,
    );
    c.until("j1-client issued", 30, || {
        (condition(&c, "j1-client") == "Approved,Issued").then_some(())
    });
    let requester = c.ok(&[
        "get",
        "csr",
        "j1-client",
        "-o",
        "jsonpath={.spec.username} {.spec.groups}",
    ]);
    assert_eq!(
        requester,
        format!(
            "system:bootstrap:{} [\"system:bootstrappers\",\"system:authenticated\"]",
            made.token.id
        )
    );
    let cert = c.ok(&[
        "get",
        "csr",
        "j1-client",
        "-o",
        "jsonpath={.status.certificate}",
    ]);
    use base64::Engine;
    let cert = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(cert)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        berth_join::csr::subject_common_name(&cert).unwrap(),
        "system:node:j1"
    );

    // Anything but a node's client certificate waits for an administrator, and the
    // signer refuses what is not a node's even once approved.
    submit(
        &c,
        &token,
        "eve",
        "eve",
        &["system:masters"],
        CLIENT,
        CLIENT_USAGES,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(condition(&c, "eve"), "Pending");
    c.ok(&["certificate", "approve", "eve"]);
    c.until("eve failed", 30, || {
        (condition(&c, "eve") == "Approved,Failed").then_some(())
    });
    let why = c.ok(&[
        "get",
        "csr",
        "eve",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].message}",
    ]);
    assert!(why.contains("CN=system:node:NAME"), "{why}");

    // A serving certificate is a node's own to ask for: the token's request waits,
    // the token may not approve it, an administrator denies it.
    submit(
        &c,
        &token,
        "j2-by-token",
        "system:node:j2",
        &["system:nodes"],
        "kubernetes.io/kubelet-serving",
        "digital signature, key encipherment, server auth",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(condition(&c, "j2-by-token"), "Pending");
    let o = as_token(&c, &token, &["certificate", "approve", "j2-by-token"], None);
    assert!(!o.status.success());
    assert!(text(&o).contains("forbidden"), "{}", text(&o));
    c.ok(&["certificate", "deny", "j2-by-token"]);
    assert_eq!(condition(&c, "j2-by-token"), "Denied");

    // A request that is not one: 422 naming the fields.
    let bad = "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: bad\nspec:\n  request: aGVsbG8=\n  signerName: nodomain\n  usages: [bogus]\n";
    let o = c.kubectl_in(&["create", "-f", "-"], Some(bad));
    assert!(!o.status.success());
    let e = text(&o);
    for f in ["spec.request", "spec.signerName", "spec.usages[0]"] {
        assert!(e.contains(f), "{f}: {e}");
    }

    // Expired and deleted tokens authenticate nobody.
    let o = berth(&c, &["token", "create", "--ttl", "1s"]);
    let short: JoinToken = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let o = as_token(&c, &short.token.to_string(), &["get", "csr"], None);
    assert!(text(&o).contains("Unauthorized"), "{}", text(&o));
    // And the token cleaner removes it.
    let short_secret = format!("bootstrap-token-{}", short.token.id);
    c.until("the expired token's Secret removed", 30, || {
        let o = c.kubectl(&["get", "secret", "-n", "kube-system", &short_secret]);
        text(&o).contains("NotFound").then_some(())
    });
    let o = berth(&c, &["token", "delete", &made.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = as_token(&c, &token, &["get", "csr"], None);
    assert!(text(&o).contains("Unauthorized"), "{}", text(&o));

    // An agent given a token for another CA stops before trusting or sending
    // anything; one given a deleted token is told so.
    let foreign = JoinToken {
        ca_hash: berth_join::ca_hash(b"another CA"),
        token: server_token.token.clone(),
    };
    let e = agent_refused(&c, &foreign.to_string());
    assert!(e.contains("the join token expects"), "{e}");
    let e = agent_refused(&c, &made.to_string());
    assert!(e.contains("401 Unauthorized"), "{e}");
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn revoked_join_tokens_stay_revoked_and_rotated_ones_reach_every_server() {
    let mut c = Cluster::api_only();
    let servers_file = c.env.root().join("server/token");
    let agents_file = c.env.root().join("server/agent-token");
    let read =
        |f: &std::path::Path| -> JoinToken { std::fs::read_to_string(f).unwrap().parse().unwrap() };
    let works = |c: &Cluster, t: &JoinToken| {
        let o = as_token(c, &t.token.to_string(), &["get", "csr"], None);
        !text(&o).contains("Unauthorized")
    };
    // On the server's host, without a kubeconfig: the server's own admin one.
    let rotate = |c: &Cluster, extra: &[&str]| -> JoinToken {
        let o = c
            .env
            .cmd(&[&["token", "rotate"], extra].concat())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let first = read(&servers_file);
    assert!(works(&c, &first));

    // Rotated: a new token for the same CA, the old one refused at once, and this
    // server's file holds the new one.
    let second = rotate(&c, &[]);
    assert_ne!(second.token.id, first.token.id);
    assert_eq!(second.ca_hash, first.ca_hash);
    assert_eq!(read(&servers_file), second);
    assert!(works(&c, &second));
    assert!(!works(&c, &first));

    // A server whose file predates the rotation takes the new token at its start,
    // and does not bring the old one back.
    std::fs::write(&servers_file, format!("{first}\n")).unwrap();
    c.kill();
    c.spawn();
    c.wait_api();
    assert_eq!(read(&servers_file), second);
    assert!(works(&c, &second));
    assert!(!works(&c, &first));

    // Revoked by deleting it: it stays revoked across a restart, and the log says
    // how to make a new one.
    let o = berth(&c, &["token", "delete", &second.token.id]);
    assert!(o.status.success(), "{}", text(&o));
    c.kill();
    c.spawn();
    c.wait_api();
    assert!(!works(&c, &second));
    let log = c.log();
    assert!(
        log.contains("was revoked") && log.contains("berth token rotate"),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );

    // The agents' token rotates on its own; the servers' stays as it was.
    let agents_before = read(&agents_file);
    let agents_after = rotate(&c, &["--agents"]);
    assert_eq!(read(&agents_file), agents_after);
    assert!(works(&c, &agents_after));
    assert!(!works(&c, &agents_before));
    assert!(!works(&c, &second));
    // And a rotation ends the servers' token's revocation with a new one.
    let third = rotate(&c, &[]);
    assert!(works(&c, &third));

    // The record alone cannot make another bootstrap token a join token (one that
    // never expires and joins servers): it is not adopted.
    let o = berth(&c, &["token", "create", "--ttl", "1h"]);
    assert!(o.status.success(), "{}", text(&o));
    let plain: JoinToken = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    c.ok(&[
        "patch",
        "configmap",
        "-n",
        "kube-system",
        "berth-join-tokens",
        "--type=merge",
        "-p",
        &format!("{{\"data\":{{\"servers\":\"{}\"}}}}", plain.token.id),
    ]);
    c.kill();
    c.spawn();
    c.wait_api();
    assert_eq!(read(&servers_file), third);
    assert!(c.log().contains("not adopted"));
    let expiry = c.ok(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{}", plain.token.id),
        "-o",
        "jsonpath={.data.expiration}",
    ]);
    assert!(!expiry.trim().is_empty(), "the token still expires");
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn an_agent_joins_with_the_token_serves_with_a_signed_certificate_and_renews() {
    // Certificates of 40 s (backdated 5 minutes, as kube's signer does): the agent
    // renews its client certificate within a minute.
    let mut c = Cluster::start_with(&["--disable-agent", "--cluster-signing-duration", "40s"]);
    let node_user = format!("system:node:{}", c.node);
    let server_token: JoinToken = std::fs::read_to_string(c.env.root().join("server/agent-token"))
        .unwrap()
        .parse()
        .unwrap();
    // Joined with the server's token: the bootstrap identity asked for the client
    // certificate, the node itself for its serving one.
    let csrs = c.ok(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.signerName} {.spec.username} {.status.conditions[0].type}{\"\\n\"}{end}",
    ]);
    assert!(
        csrs.contains(&format!(
            "{CLIENT} system:bootstrap:{} Approved",
            server_token.token.id
        )),
        "{csrs}"
    );
    c.until("the serving certificate", 30, || {
        let csrs = c.ok(&["get", "csr", "-o", "jsonpath={range .items[*]}{.spec.signerName} {.spec.username} {.status.certificate}{\"\\n\"}{end}"]);
        csrs.lines()
            .any(|l| l.starts_with(&format!("kubernetes.io/kubelet-serving {node_user} ")) && l.len() > 100)
            .then_some(())
    });
    // kubectl as the node, with the kubeconfig the join wrote.
    let node_kc = c.env.root().join("agent/pki/node.kubeconfig");
    let as_node = |args: &[&str], stdin: Option<&str>| {
        c.kubectl_with(args, stdin, &[("KUBECONFIG", node_kc.to_str().unwrap())])
    };
    let who = as_node(
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        node_user,
        "{}",
        text(&who)
    );
    // The node asking for another node's client certificate: left pending, and it may
    // not approve it.
    let o = as_node(
        &["create", "-f", "-"],
        Some(&csr_yaml(
            "other-node",
            "system:node:other",
            &["system:nodes"],
            CLIENT,
            CLIENT_USAGES,
        )),
    );
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(condition(&c, "other-node"), "Pending");
    let o = as_node(&["certificate", "approve", "other-node"], None);
    assert!(text(&o).contains("forbidden"), "{}", text(&o));

    // The API server reaches the agent's endpoint (now with the signed certificate).
    c.apply(&c.pod_yaml(
        "hello",
        "  containers:\n  - name: main\n    image: localhost/busybox:1\n    command: [\"sh\", \"-c\", \"echo joined; sleep 1000\"]\n",
    ));
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/hello",
        "--timeout=60s",
    ]);
    c.until("the pod's log", 20, || {
        c.ok(&["logs", "hello"]).contains("joined").then_some(())
    });

    // Renewal: a client certificate asked for by the node itself, signed, and the
    // node still heartbeating after the first one has expired.
    let first = std::fs::read_to_string(c.env.root().join("agent/pki/client.crt")).unwrap();
    let (_, first_expiry) = berth_join::csr::validity(&first).unwrap();
    c.until("a renewed client certificate", 90, || {
        let now =
            std::fs::read_to_string(c.env.root().join("agent/pki/client.crt")).unwrap_or_default();
        (now != first && !now.is_empty()).then_some(())
    });
    let csrs = c.ok(&["get", "csr", "-o", "jsonpath={range .items[*]}{.spec.signerName} {.spec.username} {.status.conditions[0].reason}{\"\\n\"}{end}"]);
    assert!(
        csrs.contains(&format!("{CLIENT} {node_user} AutoApproved")),
        "{csrs}"
    );
    let wait = first_expiry - k8s_openapi::jiff::Timestamp::now().as_second() + 2;
    if wait > 0 {
        std::thread::sleep(Duration::from_secs(wait as u64));
    }
    let lease = |c: &Cluster| {
        c.ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            &c.node,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let before = lease(&c);
    c.until(
        "a heartbeat after the first certificate expired",
        30,
        || (lease(&c) != before).then_some(()),
    );
    assert!(
        c.agent_log().contains("client certificate renewed"),
        "{}",
        c.agent_log()
    );
    // Restarted, the agent uses the renewed certificate it kept: no second join.
    c.kill_agent();
    c.spawn_agent();
    c.until("the agent back with its kept certificate", 30, || {
        c.agent_log()
            .contains("using the node's certificate from before")
            .then_some(())
    });
    let before = lease(&c);
    c.until("a heartbeat from the restarted agent", 30, || {
        (lease(&c) != before).then_some(())
    });
    let joins = c.ok(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.username}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        joins
            .lines()
            .filter(|l| l.starts_with("system:bootstrap:"))
            .count(),
        1,
        "{joins}"
    );
}

/// GET `path` of the server with no credentials (kubectl would prompt for some):
/// (HTTP status, body).
fn anonymous_get(c: &Cluster, path: &str) -> (String, String) {
    let o = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(c.env.root().join("server/pki/ca.crt"))
        .arg(format!("https://127.0.0.1:{}{path}", c.port))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.to_string(), body.to_string())
}

/// cluster-info as anyone reads it: `kube-public/cluster-info`'s data; None until
/// the server has made it (and the role that lets anyone read it).
fn cluster_info(c: &Cluster) -> Option<serde_json::Map<String, serde_json::Value>> {
    let (code, body) = anonymous_get(c, "/api/v1/namespaces/kube-public/configmaps/cluster-info");
    if code != "200" {
        return None;
    }
    let cm: serde_json::Value = serde_json::from_str(&body).unwrap();
    cm["data"].as_object().cloned()
}

/// `berth agent` joining with `token`, expected to stop before it joins: what it said.
fn agent_refused(c: &Cluster, token: &str) -> String {
    let server = format!("https://127.0.0.1:{}", c.port);
    let o = c
        .env
        .cmd(&[
            "agent",
            "--server",
            &server,
            "--token",
            token,
            "--node-name",
            "j8",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    text(&o)
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn bare_token_credentials_join_through_the_signed_cluster_info() {
    use berth_join::discovery;
    let mut c = Cluster::api_only();
    let agents: JoinToken = std::fs::read_to_string(c.env.root().join("server/agent-token"))
        .unwrap()
        .parse()
        .unwrap();
    let servers: JoinToken = std::fs::read_to_string(c.env.root().join("server/token"))
        .unwrap()
        .parse()
        .unwrap();
    // Anyone reads cluster-info: the server and the CA, signed by the servers' two
    // tokens with their secrets; nothing else in kube-public is theirs to read.
    let signed = |c: &Cluster, t: &berth_join::BootstrapToken| -> Option<String> {
        let info = cluster_info(c)?;
        let content = info[discovery::KUBECONFIG_KEY]
            .as_str()
            .unwrap()
            .to_string();
        let jws = info.get(&discovery::signature_key(&t.id))?.as_str()?;
        discovery::verify(&content, jws, t).unwrap();
        Some(content)
    };
    let content = c.until("cluster-info signed by the agents' token", 30, || {
        signed(&c, &agents.token)
    });
    c.until("cluster-info signed by the servers' token", 30, || {
        signed(&c, &servers.token)
    });
    let ca = std::fs::read_to_string(c.env.root().join("server/pki/ca.crt")).unwrap();
    assert_eq!(discovery::ca_of(&content).unwrap(), ca);
    assert!(
        content.contains(&format!(":{}", c.port)),
        "the server's address: {content}"
    );
    let (code, body) = anonymous_get(&c, "/api/v1/namespaces/kube-public/configmaps");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains(r#"User \"system:anonymous\" cannot list"#),
        "{body}"
    );

    // A token made for authentication alone signs nothing, and an agent given it
    // bare is told why; an unknown usage is refused by name.
    let o = berth(&c, &["token", "create", "--usages", "authentication"]);
    assert!(o.status.success(), "{}", text(&o));
    let auth_only: JoinToken = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let list = text(&berth(&c, &["token", "list"]));
    let row = list
        .lines()
        .find(|l| l.starts_with(&auth_only.token.to_string()))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("authentication") && !row.contains("signing"),
        "{row}"
    );
    let o = berth(&c, &["token", "create", "--usages", "signing,bogus"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("\"bogus\" is not a bootstrap token usage"),
        "{}",
        text(&o)
    );
    let e = agent_refused(&c, &auth_only.token.to_string());
    assert!(e.contains("holds no signature for token"), "{e}");

    // A signing token's signature comes with it and goes with it.
    let o = berth(&c, &["token", "create", "--ttl", "1h"]);
    let made: JoinToken = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    c.until("the new token's signature", 30, || signed(&c, &made.token));
    let o = berth(&c, &["token", "delete", &made.token.id]);
    assert!(o.status.success(), "{}", text(&o));
    let key = discovery::signature_key(&made.token.id);
    c.until("the deleted token's signature gone", 30, || {
        cluster_info(&c)
            .is_some_and(|info| !info.contains_key(&key))
            .then_some(())
    });

    // The right id with a wrong secret: the signature does not verify, and nothing
    // is sent.
    let mut wrong = agents.token.clone();
    wrong.secret = "0123456789abcdef".into();
    let e = agent_refused(&c, &wrong.to_string());
    assert!(e.contains("does not verify"), "{e}");
    let o = c.ok(&["get", "csr", "-o", "name"]);
    assert!(o.trim().is_empty(), "no request was made: {o}");

    // The agents' token, bare: the node joins, its certificate asked for as the token.
    c.node = format!("bare-{}", std::process::id());
    let file = c.env.path("bare-token");
    std::fs::write(&file, format!("{}\n", agents.token)).unwrap();
    c.spawn_agent_with_token(&file);
    c.wait_ready();
    assert!(
        c.agent_log().contains("trusted on the signature"),
        "{}",
        c.agent_log()
    );
    let csrs = c.ok(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.username} {.status.conditions[0].type}{\"\\n\"}{end}",
    ]);
    assert!(
        csrs.contains(&format!("system:bootstrap:{} Approved", agents.token.id)),
        "{csrs}"
    );
    // Restarted with the same bare token: the node's certificate from before is used,
    // and nothing is asked anew.
    c.kill_agent();
    c.spawn_agent_with_token(&file);
    c.until("the agent restarted on its certificate", 30, || {
        c.agent_log()
            .contains("using the node's certificate from before")
            .then_some(())
    });
    c.wait_ready();
    let after = c.ok(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.username}{\"\\n\"}{end}",
    ]);
    let by_token = format!("system:bootstrap:{}", agents.token.id);
    assert_eq!(
        after.lines().filter(|l| *l == by_token).count(),
        1,
        "one request made with the token: {after}"
    );
}
