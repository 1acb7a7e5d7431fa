//! What RBAC costs a read: GETs of one ConfigMap by a user whose right comes from a
//! RoleBinding, among thousands of RoleBindings for other users, beside the same GETs
//! by a member of system:masters (whom no rule is looked up for) — same server, same
//! transport (bearer tokens over HTTP/2), rounds interleaved. Medians of throughput
//! and p99 latency, and the ratio.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;

use crate::apiserver::{drive, ok, start_with};
use crate::stats::{median, percentile};

/// An HTTP/2 client sending `token` as its bearer token, trusting the server's CA.
fn bearer_client(pki: &Path, token: &str) -> Result<reqwest::Client> {
    let ca = std::fs::read(pki.join("ca.crt"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .http2_prior_knowledge()
        .default_headers(headers)
        .build()?)
}

/// Runs the comparison: `rounds` rounds of `gets` GETs each way, with `bindings`
/// RoleBindings in the cluster.
pub fn run(berth: &Path, rounds: usize, gets: usize, bindings: usize) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        let tokens = tmp.path().join("tokens.csv");
        std::fs::write(
            &tokens,
            "master-token,bench-admin,1,system:masters\nuser-token,alice,2\n",
        )?;
        let dir = tmp.path().join("server");
        let (s, _) = start_with(
            berth,
            &dir,
            None,
            &[
                "--disable-agent",
                "--disable",
                "scheduler",
                "--disable",
                "controllers",
                "--token-auth-file",
                tokens.to_str().context("a UTF-8 temp path")?,
            ],
        )
        .await?;
        let pki = dir.join("pki");
        let master = bearer_client(&pki, "master-token")?;
        let user = bearer_client(&pki, "user-token")?;
        // Namespaces of 50 bindings each, for users other than alice; alice's own
        // binding (view, in the first namespace) among them.
        let spaces = bindings.div_ceil(50).max(1);
        println!("setting up: {spaces} namespaces, {bindings} RoleBindings");
        for n in 0..spaces {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("rbac-{n}")}});
            ok(master.post(format!("{}/api/v1/namespaces", s.url)).json(&body)).await?;
        }
        let url = s.url.clone();
        let m = master.clone();
        drive(bindings, 32, move |i| {
            let (m, url) = (m.clone(), url.clone());
            async move {
                let ns = format!("rbac-{}", i / 50);
                let body = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": format!("rb-{i}"), "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("user-{i}")},
                                 {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": format!("group-{}", i % 97)}]});
                ok(m.post(format!("{url}/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings")).json(&body)).await
            }
        })
        .await?;
        let alice = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "alice-view", "namespace": "rbac-0"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]});
        ok(master.post(format!("{}/apis/rbac.authorization.k8s.io/v1/namespaces/rbac-0/rolebindings", s.url)).json(&alice)).await?;
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "target"}, "data": {"k": "v"}});
        ok(master.post(format!("{}/api/v1/namespaces/rbac-0/configmaps", s.url)).json(&cm)).await?;
        let target = format!("{}/api/v1/namespaces/rbac-0/configmaps/target", s.url);
        // Alice may read it (and nothing of another namespace).
        ok(user.get(&target)).await.context("alice's GET, allowed by her RoleBinding")?;
        let denied = user
            .get(format!("{}/api/v1/namespaces/rbac-1/configmaps", s.url))
            .send()
            .await?
            .status();
        anyhow::ensure!(denied == 403, "alice listed another namespace: {denied}");
        let mut rates = [Vec::new(), Vec::new()];
        let mut p99s = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            for (i, c) in [&master, &user].into_iter().enumerate() {
                let (c, t) = (c.clone(), target.clone());
                let (rate, lat) = drive(gets, 32, move |_| ok(c.get(&t))).await?;
                rates[i].push(rate);
                p99s[i].push(percentile(&lat, 99.0));
            }
            println!(
                "round {}: system:masters {:.0}/s, RBAC user {:.0}/s",
                round + 1,
                rates[0].last().copied().unwrap_or(0.0),
                rates[1].last().copied().unwrap_or(0.0)
            );
        }
        let (rm, ru) = (median(&rates[0]), median(&rates[1]));
        let (pm, pu) = (median(&p99s[0]), median(&p99s[1]));
        println!("\nGET of one ConfigMap, {gets} a round, 32 in flight, {rounds} rounds, {bindings} RoleBindings:");
        println!("  {:<34} {:>10} {:>10}", "", "GET/s", "p99 ms");
        println!("  {:<34} {:>10.0} {:>10.2}", "system:masters (no RBAC lookup)", rm, pm);
        println!("  {:<34} {:>10.0} {:>10.2}", "user allowed by a RoleBinding", ru, pu);
        println!(
            "  RBAC user / masters: throughput {:.3}, p99 {:.3} (target: throughput >= 0.95)",
            ru / rm,
            pu / pm
        );
        Ok(())
    })
}
