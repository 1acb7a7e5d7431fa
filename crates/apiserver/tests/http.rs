//! The API at the HTTP level: bad input gets kube's Status errors (400, 401, 409, 410,
//! 413, 415, 422), authentication by certificate and tokens, paging, watch
//! resumption, and every acknowledged write surviving a kill -9 of the server.

mod common;

use common::{file, Server};
use serde_json::Value;

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn bad_input_gets_clear_status_errors() {
    let s = Server::start();
    let d = s.dir.path();
    let cm = "/api/v1/namespaces/default/configmaps";
    // Malformed JSON and YAML.
    let (c, b) = s.curl(
        "POST",
        cm,
        "admin",
        "application/json",
        Some(&file(d, "a", "{\"kind\":")),
    );
    assert_eq!(c, 400, "{b}");
    assert_eq!(status(&b)["kind"], "Status");
    assert!(
        status(&b)["message"]
            .as_str()
            .unwrap()
            .contains("json parse error"),
        "{b}"
    );
    let (c, b) = s.curl(
        "POST",
        cm,
        "admin",
        "application/yaml",
        Some(&file(d, "y", "kind: [unclosed")),
    );
    assert_eq!(c, 400, "{b}");
    // YAML bodies are accepted.
    let (c, b) = s.curl(
        "POST",
        cm,
        "admin",
        "application/yaml",
        Some(&file(
            d,
            "y2",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-yaml}\ndata: {a: b}\n",
        )),
    );
    assert_eq!(c, 201, "{b}");
    // Wrong apiVersion, wrong kind.
    let (c, b) = s.curl(
        "POST",
        cm,
        "admin",
        "application/json",
        Some(&file(
            d,
            "b",
            r#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        )),
    );
    assert_eq!(
        (c, status(&b)["reason"].as_str()),
        (400, Some("BadRequest")),
        "{b}"
    );
    assert!(
        b.contains("does not match the expected API version (v1)"),
        "{b}"
    );
    let (c, b) = s.curl(
        "POST",
        cm,
        "admin",
        "application/json",
        Some(&file(
            d,
            "k",
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
        )),
    );
    assert_eq!(c, 400, "{b}");
    // A field of the wrong type names its path.
    let (c, b) = s.curl("POST", "/apis/apps/v1/namespaces/default/deployments", "admin", "application/json",
        Some(&file(d, "t", r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"two"}}"#)));
    assert_eq!(c, 400, "{b}");
    assert!(b.contains("spec.replicas"), "{b}");
    // Unknown fields under Strict: 400 naming the field; Warn: a Warning header.
    let (c, b) = s.curl("POST", &format!("{cm}?fieldValidation=Strict"), "admin", "application/json",
        Some(&file(d, "u", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","bogus":1},"dataa":{}}"#)));
    assert_eq!(c, 400, "{b}");
    assert!(
        b.contains(r#"unknown field \"dataa\""#)
            && b.contains(r#"unknown field \"metadata.bogus\""#),
        "{b}"
    );
    // Too large: 413.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let (c, b) = s.curl(
        "POST",
        cm,
        "admin",
        "application/json",
        Some(&file(d, "big", &big)),
    );
    assert_eq!(c, 413, "{b}");
    assert_eq!(status(&b)["reason"], "RequestEntityTooLarge");
    // Invalid names: 422 with causes.
    let (c, b) = s.curl("POST", cm, "admin", "application/json", Some(&file(d, "n", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name","labels":{"k":"-x"}}}"#)));
    assert_eq!(c, 422, "{b}");
    let st = status(&b);
    assert_eq!(st["reason"], "Invalid");
    let fields: Vec<&str> = st["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["metadata.name", "metadata.labels.k"], "{b}");
    // Unsupported patch type: 415.
    let (c, b) = s.curl(
        "PATCH",
        &format!("{cm}/from-yaml"),
        "admin",
        "text/plain",
        Some(&file(d, "p", "{}")),
    );
    assert_eq!(c, 415, "{b}");
    // Unknown resource and a missing object: 404 Status.
    let (c, b) = s.curl(
        "GET",
        "/api/v1/namespaces/default/widgets",
        "admin",
        "",
        None,
    );
    assert_eq!(c, 404, "{b}");
    let (c, b) = s.curl("GET", &format!("{cm}/nope"), "admin", "", None);
    assert_eq!((c, status(&b)["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(status(&b)["message"], "configmaps \"nope\" not found");
    // Hostile numbers and shapes: answered, never a dropped connection.
    let (c, b) = s.curl(
        "GET",
        &format!("{cm}?limit=9223372036854775807"),
        "admin",
        "",
        None,
    );
    assert_eq!(c, 200, "{b}");
    let (c, b) = s.curl(
        "PATCH",
        &format!("{cm}/from-yaml"),
        "admin",
        "application/json-patch+json",
        Some(&file(
            d,
            "jp",
            r#"[{"op":"replace","path":"","value":"x"}]"#,
        )),
    );
    assert_eq!(c, 422, "{b}");
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        "admin",
        "application/json",
        Some(&file(
            d,
            "tr",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":"x"}"#,
        )),
    );
    assert_eq!(c, 400, "{b}");
    let (c, b) = s.curl("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "admin", "application/json", Some(&file(d, "tr2", r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":9223372036854775807}}"#)));
    assert_eq!(c, 422, "{b}");
    // Explicit node ports are reserved: a second service cannot take one.
    let np = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"NAME"},"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":30080}]}}"#;
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces/default/services",
        "admin",
        "application/json",
        Some(&file(d, "np1", &np.replace("NAME", "np1"))),
    );
    assert_eq!(c, 201, "{b}");
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces/default/services",
        "admin",
        "application/json",
        Some(&file(d, "np2", &np.replace("NAME", "np2"))),
    );
    assert_eq!(c, 422, "{b}");
    assert!(b.contains("provided port is already allocated"), "{b}");
    // Pod subresources that run on a node, for a pod on none: kube-apiserver's 400.
    s.ok(&["run", "p", "--image=busybox"]);
    let (c, b) = s.curl(
        "GET",
        "/api/v1/namespaces/default/pods/p/log",
        "admin",
        "",
        None,
    );
    assert_eq!(
        (c, status(&b)["reason"].as_str()),
        (400, Some("BadRequest")),
        "{b}"
    );
    assert!(b.contains("pod p does not have a host assigned"), "{b}");
}

/// `--anonymous-auth=false`: requests without credentials get 401 everywhere, health
/// endpoints included, but `/cacerts` (a joining node checks it against its token's
/// CA hash); with credentials all is as before.
#[test]
fn anonymous_requests_refused_when_anonymous_auth_is_off() {
    let s = Server::start_with(|c| c.anonymous_auth = false);
    for p in ["/healthz", "/livez", "/readyz", "/version", "/api"] {
        let (c, b) = s.curl("GET", p, "none", "", None);
        assert_eq!(c, 401, "{p}: {b}");
    }
    let (c, ca) = s.curl("GET", "/cacerts", "none", "", None);
    assert_eq!(c, 200);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    assert_eq!(
        s.curl("GET", "/readyz", "admin", "", None),
        (200, "ok".to_string())
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn authentication_certificates_and_tokens() {
    let d = tempfile::tempdir().unwrap();
    let tokens = file(d.path(), "tokens.csv", "s3cret,alice,1001,\"dev,ops\"\n");
    let s = Server::start_with(|c| c.token_file = Some(tokens.clone()));
    // Anonymous, as kube serves it: system:anonymous, refused by RBAC (403 naming
    // it) but what system:public-info-viewer grants everyone.
    let (c, b) = s.curl("GET", "/api/v1/namespaces", "none", "", None);
    assert_eq!(c, 403, "{b}");
    assert_eq!(status(&b)["reason"], "Forbidden");
    assert!(
        b.contains(r#"User \"system:anonymous\" cannot list resource \"namespaces\""#),
        "{b}"
    );
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(
            s.curl("GET", p, "none", "", None),
            (200, "ok".to_string()),
            "{p}"
        );
    }
    let (c, b) = s.curl("GET", "/version", "none", "", None);
    assert_eq!(c, 200, "{b}");
    assert!(b.contains("gitVersion"), "{b}");
    assert_eq!(s.curl("GET", "/api", "none", "", None).0, 403);
    // An unknown token is refused, a known one works.
    assert_eq!(s.curl("GET", "/api", "Bearer nope", "", None).0, 401);
    let (c, b) = s.curl(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        "Bearer s3cret",
        "application/json",
        Some(&file(
            d.path(),
            "r",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        )),
    );
    assert_eq!(c, 201, "{b}");
    let r = status(&b);
    assert_eq!(r["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        r["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "ops", "system:authenticated"])
    );
    // ServiceAccount tokens: issued by TokenRequest, valid while the account exists.
    let (c, b) = s.curl("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "admin", "application/json",
        Some(&file(d.path(), "tr", r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#)));
    assert_eq!(c, 201, "{b}");
    let tok = status(&b)["status"]["token"].as_str().unwrap().to_string();
    let (c, b) = s.curl(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &format!("Bearer {tok}"),
        "application/json",
        Some(&file(
            d.path(),
            "r2",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        )),
    );
    assert_eq!(c, 201, "{b}");
    assert_eq!(
        status(&b)["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    s.ok(&["delete", "sa", "default"]);
    assert_eq!(
        s.curl("GET", "/api", &format!("Bearer {tok}"), "", None).0,
        401,
        "a deleted account's token"
    );
    // A client certificate from another CA is not a user.
    let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let crt = file(d.path(), "o.crt", &other.cert.pem());
    let key = file(d.path(), "o.key", &other.signing_key.serialize_pem());
    let o = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(s.pki().join("ca.crt"))
        .arg("--cert")
        .arg(&crt)
        .arg("--key")
        .arg(&key)
        .arg(format!("https://{}/api", s.addr))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        code == "000" || code == "401",
        "a foreign certificate got {code}"
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn paging_conflicts_and_watch_resumption() {
    let s = Server::start();
    for i in 0..25 {
        s.ok_in(&["create", "-f", "-"], &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{i:02}","labels":{{"even":"{}"}}}}}}"#, i % 2 == 0));
    }
    // limit/continue through every page, at one resourceVersion.
    let mut names = Vec::new();
    let mut cont = String::new();
    let mut rv = String::new();
    loop {
        let path = format!(
            "/api/v1/namespaces/default/configmaps?limit=10&labelSelector=even%3Dtrue{}",
            if cont.is_empty() {
                String::new()
            } else {
                format!("&continue={cont}")
            }
        );
        let (c, b) = s.curl("GET", &path, "admin", "", None);
        assert_eq!(c, 200, "{b}");
        let l = status(&b);
        if rv.is_empty() {
            rv = l["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert_eq!(
            l["metadata"]["resourceVersion"].as_str().unwrap(),
            rv,
            "pages share one resourceVersion"
        );
        names.extend(
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match l["metadata"]["continue"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
        // Writes between pages do not show up in the list.
        s.ok_in(&["create", "-f", "-"], &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"late{}","labels":{{"even":"true"}}}}}}"#, names.len()));
    }
    assert_eq!(names.len(), 13, "{names:?}");
    assert_eq!(
        s.ok(&[
            "get",
            "cm",
            "-l",
            "even=true",
            "--chunk-size=4",
            "-o",
            "name"
        ])
        .lines()
        .count(),
        14
    );
    // A watch from an old resourceVersion replays what happened since.
    let (c, b) = s.curl("GET", &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1"), "admin", "", None);
    assert_eq!(c, 200);
    let evs: Vec<Value> = b
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs.len(), 1, "{b}");
    assert_eq!(evs[0]["object"]["metadata"]["name"], "late10");
    assert!(evs.iter().all(|e| e["type"] == "ADDED"));
    // After compaction, reads at old revisions and old continue tokens are 410 Gone.
    let (_, b) = s.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps?limit=5",
        "admin",
        "",
        None,
    );
    let old_cont = status(&b)["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(&["label", "cm", "c00", "x=1"]);
    s.rt.block_on(async {
        use berth_store::Store;
        let r = s.api.store.revision().await.unwrap();
        s.api.store.compact(r).await.unwrap();
    });
    let (c, b) = s.curl(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?limit=5&continue={old_cont}"),
        "admin",
        "",
        None,
    );
    assert_eq!(c, 410, "{b}");
    assert!(b.contains("continue parameter is too old"), "{b}");
    let (c, b) = s.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps?resourceVersion=2&resourceVersionMatch=Exact",
        "admin",
        "",
        None,
    );
    assert_eq!(c, 410, "{b}");
    assert_eq!(status(&b)["reason"], "Expired");
}

/// With BERTH_TEST_SERVE=DIR, this binary is a server on DIR printing its port.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var("BERTH_TEST_SERVE") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut cfg = berth_apiserver::Config::new(dir.into());
            cfg.listen = "127.0.0.1:0".parse().unwrap();
            let srv = berth_apiserver::start(cfg).await.unwrap();
            while !srv.api.ready.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            println!("PORT {}", srv.addr.port());
            std::future::pending::<()>().await;
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_kill_9",
            "--nocapture",
        ])
        .env("BERTH_TEST_SERVE", &data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "the server never started"
        );
        if let Some(p) = line.trim().strip_prefix("PORT ") {
            break p.parse::<u16>().unwrap();
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kubeconfig = data.join("pki/admin.kubeconfig");
    let acked: Vec<String> = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        cfg.cluster_url = format!("https://127.0.0.1:{port}").parse().unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "default");
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // Four writers in parallel; the server dies under them.
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (api, acked) = (api.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"i": i.to_string()}})).unwrap();
                    match api.create(&Default::default(), &cm).await {
                        Ok(_) => acked.lock().unwrap().push(name),
                        Err(_) => return,
                    }
                }
            }));
        }
        while acked.lock().unwrap().len() < 150 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL mid-burst
        let _ = child.wait();
        for t in tasks {
            let _ = t.await;
        }
        let v = acked.lock().unwrap().clone();
        v
    });
    assert!(acked.len() >= 150);
    // Restart on the same data directory: every acknowledged write is there.
    let s2 = Server::start_in(dir, |_| {});
    let have = s2.ok(&["get", "cm", "-o", "name"]);
    for n in &acked {
        assert!(
            have.contains(&format!("configmap/{n}\n")),
            "acknowledged {n} is missing after kill -9"
        );
    }
    // The restarted server's watch history starts at its start: a watch from before
    // it gets, as from kube-apiserver, a 200 whose one event is an ERROR with the 410
    // Expired Status — what makes client-go and kube-rs relist (a plain 410 answer
    // made kube-rs's watcher retry the same resourceVersion forever).
    let (c, b) = s2.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2&timeoutSeconds=5",
        "admin",
        "",
        None,
    );
    assert_eq!(c, 200, "{b}");
    let ev: serde_json::Value = serde_json::from_str(b.trim()).expect("one watch event");
    assert_eq!(ev["type"], "ERROR", "{b}");
    assert_eq!(ev["object"]["code"], 410, "{b}");
    assert_eq!(ev["object"]["reason"], "Expired", "{b}");
}

/// A watch client that stops reading is dropped (its memory is bounded); the server
/// keeps serving everyone else.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_stalled_watch_client_is_dropped_not_the_server() {
    use std::io::{Read, Write};
    let s = Server::start();
    let pki = s.pki();
    // A TLS client by hand: ask for a watch, read the headers, then never read again.
    let cfg = {
        let ca = std::fs::read(pki.join("ca.crt")).unwrap();
        let cert = std::fs::read(pki.join("admin.crt")).unwrap();
        let key = std::fs::read(pki.join("admin.key")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &ca[..]) {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<_> = rustls_pemfile::certs(&mut &cert[..])
            .map(Result::unwrap)
            .collect();
        let key = rustls_pemfile::private_key(&mut &key[..]).unwrap().unwrap();
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap()
    };
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), "localhost".try_into().unwrap())
            .unwrap();
    let sock = std::net::TcpStream::connect(s.addr).unwrap();
    // A small receive buffer so the stall shows quickly.
    let sock2 = sock.try_clone().unwrap();
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock2, 4096);
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET /api/v1/namespaces/default/configmaps?watch=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 512];
    let n = tls.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let watchers = |s: &Server| -> usize {
        let (_, m) = s.curl("GET", "/metrics", "admin", "", None);
        m.lines()
            .find_map(|l| l.strip_prefix("apiserver_registered_watchers "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(usize::MAX)
    };
    assert_eq!(watchers(&s), 1);
    // Plenty of events, far more than the socket and the watcher's buffer hold.
    let big = "x".repeat(16 * 1024);
    s.rt.block_on(async {
        let client = s.client().await;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "default");
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (api, big) = (api.clone(), big.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..300 {
                    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("b{w}-{i}")}, "data": {"x": big}})).unwrap();
                    api.create(&Default::default(), &cm).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while watchers(&s) != 0 {
        assert!(
            std::time::Instant::now() < end,
            "the stalled watcher was never dropped"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Everyone else is served as before.
    assert_eq!(
        s.ok(&["get", "cm", "b0-0", "-o", "jsonpath={.metadata.name}"]),
        "b0-0"
    );
    drop(tls);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn discovery_etags_and_openapi_documents() {
    let s = Server::start();
    let pki = s.pki();
    let o = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert").arg(pki.join("admin.crt")).arg("--key").arg(pki.join("admin.key"))
        .args(["-H", "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"])
        .arg(format!("https://{}/apis", s.addr))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(
        head.contains(
            "content-type: application/json;g=apidiscovery.k8s.io;v=v2;as=apigroupdiscoverylist"
        ),
        "{head}"
    );
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let o = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .args([
            "-H",
            "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ])
        .arg("-H")
        .arg(format!("If-None-Match: {}", etag.to_uppercase()))
        .arg(format!("https://{}/apis", s.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "304");
    let v2: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/openapi/v2"])).unwrap();
    assert_eq!(v2["swagger"], "2.0");
    assert!(v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"].is_object());
    assert!(
        v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"].is_object()
    );
    let idx: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/openapi/v3"])).unwrap();
    let url = idx["paths"]["apis/batch/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let v3: serde_json::Value = serde_json::from_str(&s.ok(&["get", "--raw", &url])).unwrap();
    assert_eq!(
        v3["components"]["schemas"]["io.k8s.api.batch.v1.Job"]["x-kubernetes-group-version-kind"]
            [0]["kind"],
        "Job"
    );
}

#[test]
fn reservations_whose_services_are_gone_are_released_on_the_second_look() {
    use berth_store::Store;
    let s = Server::start();
    s.rt.block_on(async {
        let ghost = "/registry/ranges/serviceips/10.96.77.77";
        s.api.store.create(ghost, b"default/ghost").await.unwrap();
        // The kubernetes Service's own address stays held.
        let kept = "/registry/ranges/serviceips/10.96.0.1";
        assert!(s.api.store.get(kept).await.unwrap().is_some());
        let first = berth_apiserver::repair::pass(&s.api, &Default::default()).await;
        assert_eq!(first.keys().collect::<Vec<_>>(), [ghost]);
        assert!(
            s.api.store.get(ghost).await.unwrap().is_some(),
            "released on first sight"
        );
        let second = berth_apiserver::repair::pass(&s.api, &first).await;
        assert!(second.is_empty(), "{second:?}");
        assert!(s.api.store.get(ghost).await.unwrap().is_none());
        assert!(s.api.store.get(kept).await.unwrap().is_some());
    });
}

/// Servers started together on one store race to record their join token (compare
/// and swap on one ConfigMap): one wins, every server ends with the winner's token
/// in its file, and the losers' Secrets are gone.
#[test]
fn servers_settling_their_join_tokens_at_once_agree_on_one() {
    use berth_apiserver::certificates::bootstrap::{ensure_join_token, settle_join_token};
    use berth_join::secret::{self, JoinRole};
    use berth_store::Store;

    const SERVERS: usize = 6;
    let s = Server::start();
    let configmaps = berth_apiserver::resources::find("", "v1", "configmaps").unwrap();
    let secrets = berth_apiserver::resources::find("", "v1", "secrets").unwrap();
    // A store without a record yet, as when no server has written one.
    let record = configmaps.key(Some(secret::NAMESPACE), secret::JOIN_TOKENS_RECORD);
    s.rt.block_on(async {
        let kv = s
            .api
            .store
            .get(&record)
            .await
            .unwrap()
            .expect("recorded at start");
        s.api.store.delete(&record, kv.mod_revision).await.unwrap();
    });
    let d = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..SERVERS)
        .map(|i| {
            let p = d.path().join(format!("token-{i}"));
            let t = ensure_join_token(&p, &s.api.ca_bundle).unwrap();
            (p, t)
        })
        .collect();
    let settled = s.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        // All at once, so that their reads of the record and claims interleave.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(SERVERS));
        for (i, (p, t)) in files.iter().cloned().enumerate() {
            let (api, start) = (s.api.clone(), start.clone());
            set.spawn(async move {
                start.wait().await;
                let r = settle_join_token(&api, &p, &t, JoinRole::Servers).await;
                (i, r.map_err(|e| e.message))
            });
        }
        let mut out = vec![None; SERVERS];
        while let Some(r) = set.join_next().await {
            let (i, r) = r.unwrap();
            out[i] = Some(r.unwrap().expect("a usable token"));
        }
        out
    });
    let winner = settled[0].clone().unwrap();
    assert!(
        files.iter().any(|(_, t)| *t == winner),
        "the winner is one of the servers' own tokens"
    );
    for (i, (p, t)) in files.iter().enumerate() {
        assert_eq!(settled[i].as_ref(), Some(&winner), "server {i}");
        assert_eq!(
            std::fs::read_to_string(p).unwrap().trim(),
            winner.to_string(),
            "server {i}'s file"
        );
        let name = secret::secret_name(&t.token.id);
        let found = s.rt.block_on(berth_apiserver::objects::read(
            &s.api,
            secrets,
            Some(secret::NAMESPACE),
            &name,
        ));
        if *t == winner {
            assert!(found.is_ok(), "the winner's Secret is kept");
        } else {
            assert_eq!(found.err().map(|e| e.code), Some(404), "loser {i}'s Secret");
        }
    }
    let (rec, _) =
        s.rt.block_on(berth_apiserver::objects::read(
            &s.api,
            configmaps,
            Some(secret::NAMESPACE),
            secret::JOIN_TOKENS_RECORD,
        ))
        .unwrap();
    assert_eq!(
        rec["data"][JoinRole::Servers.key()],
        winner.token.id.as_str()
    );
}
