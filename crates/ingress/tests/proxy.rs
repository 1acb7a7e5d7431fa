//! The proxy on real sockets: two backends on loopback, requests routed by host and
//! path, round robin over endpoints, the client's address passed on, HTTPS with the
//! certificate of the SNI name (a client that trusts only that certificate verifies
//! it), 404/503 answers, absolute-form targets, a protocol switch joined end to end,
//! a route change seen by the next request of a kept-alive connection (a reload drops
//! nothing), and the serving threads a node runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use berth_ingress::{Endpoints, Proxy, Routes, Snapshot, TlsSecret};
use serde_json::json;
use tokio_rustls::rustls;

/// A backend answering every request on a kept-alive connection with its name, the
/// Host and X-Forwarded-For it got; a request with `Upgrade: echo` switches the
/// connection to echoing.
fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                loop {
                    let (mut host, mut xff, mut len) = (String::new(), String::new(), 0usize);
                    let mut upgrade = false;
                    let mut first = true;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_string();
                        if line.is_empty() && !first {
                            break;
                        }
                        first = false;
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("host: ") {
                            host = v.to_string();
                        } else if let Some(v) = lower.strip_prefix("x-forwarded-for: ") {
                            xff = v.to_string();
                        } else if let Some(v) = lower.strip_prefix("content-length: ") {
                            len = v.parse().unwrap_or(0);
                        } else if lower == "upgrade: echo" {
                            upgrade = true;
                        }
                    }
                    if upgrade {
                        // Switch to echoing bytes back until the client closes.
                        let _ = write!(
                            w,
                            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
                        );
                        let _ = std::io::copy(&mut r, &mut w);
                        return;
                    }
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body);
                    let text = format!("{name} {host} {xff}");
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                }
            });
        }
    });
    addr
}

fn objects(a: SocketAddr, b: SocketAddr) -> Snapshot {
    let ingress = |name: &str, spec: serde_json::Value| {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"namespace": "default", "name": name},
                "spec": spec}))
            .unwrap(),
        )
    };
    let routes = Routes::build(&[ingress(
        "web",
        json!({"tls": [{"hosts": ["a.example"], "secretName": "a-tls"}],
            "rules": [
            {"host": "a.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "both", "port": {"number": 80}}}}]}},
            {"host": "b.example", "http": {"paths": [
                {"path": "/only", "pathType": "Exact",
                 "backend": {"service": {"name": "one", "port": {"name": "http"}}}},
                {"path": "/none", "pathType": "Exact",
                 "backend": {"service": {"name": "empty", "port": {"number": 80}}}}]}},
        ]}),
    )]);
    let svc = |name: &str| {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"namespace": "default", "name": name},
                "spec": {"ports": [{"name": "http", "port": 80}]}}))
            .unwrap(),
        )
    };
    let slice = |name: &str, slice: &str, eps: &[SocketAddr]| {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": slice,
                    "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": eps.first().map_or(1, |e| e.port())}],
                "endpoints": eps.iter().map(|e| json!({"addresses": [e.ip().to_string()]}))
                    .collect::<Vec<_>>(),
            }))
            .unwrap(),
        )
    };
    // Both backends listen on their own port: "both" is given as two slices.
    let services = vec![svc("both"), svc("one"), svc("empty")];
    let slices = vec![
        slice("both", "both-a", &[a]),
        slice("both", "both-b", &[b]),
        slice("one", "one-b", &[b]),
        slice("empty", "empty-x", &[]),
    ];
    let endpoints = Endpoints::build(&routes, &services, &slices);
    Snapshot { routes, endpoints }
}

fn get(conn: &mut (impl Read + Write), host: &str, path: &str) -> (u16, String) {
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    read_response(conn)
}

/// One response's status and body.
fn read_response(conn: &mut impl Read) -> (u16, String) {
    let mut r = BufReader::new(conn);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length: ") {
            len = v.parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn routes_balances_terminates_tls_and_reloads_without_dropping() {
    let (a, b) = (backend("A"), backend("B"));
    let ck = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    let (cert2, key2) = (cert_pem.clone(), key_pem.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = Proxy::new(
        Box::new(move |ns, name| {
            (ns == "default" && name == "a-tls").then(|| TlsSecret {
                version: "1".into(),
                cert_pem: cert2.clone().into_bytes(),
                key_pem: key2.clone().into_bytes(),
            })
        }),
        Some(0x0b),
    );
    proxy.update(objects(a, b));
    let (http, https) = rt.block_on(async {
        let h = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (h.local_addr().unwrap(), s.local_addr().unwrap());
        tokio::spawn(proxy.clone().serve(h, false));
        tokio::spawn(proxy.clone().serve(s, true));
        addrs
    });

    // Round robin over both endpoints, on one kept-alive connection; the client's
    // address passed on.
    let mut conn = TcpStream::connect(http).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (code, body) = get(&mut conn, "a.example", "/x");
        assert_eq!(code, 200);
        assert!(body.ends_with(" a.example 127.0.0.1"), "{body}");
        seen.insert(body[..1].to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A named Service port, an Exact path; no route: 404; no endpoints: 503.
    assert!(get(&mut conn, "b.example", "/only").1.starts_with("B "));
    assert_eq!(get(&mut conn, "b.example", "/only/more").0, 404);
    assert_eq!(get(&mut conn, "b.example", "/none").0, 503);
    assert_eq!(get(&mut conn, "nobody.example", "/").0, 404);
    // A request in absolute form is routed by its target's host, which the endpoint
    // gets as Host; earlier X-Forwarded-For lines are kept, in order.
    let mut c = TcpStream::connect(http).unwrap();
    write!(
        c,
        "GET http://b.example/only HTTP/1.1\r\nHost: nobody.example\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n\r\n"
    )
    .unwrap();
    let (code, body) = read_response(&mut c);
    assert_eq!(
        (code, body.as_str()),
        (200, "B b.example 10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1")
    );

    // A protocol switch (as WebSocket asks): the 101 comes back with its Upgrade
    // header, then bytes go both ways through the proxy.
    let mut ws = TcpStream::connect(http).unwrap();
    write!(
        ws,
        "GET /chat HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(ws.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for word in ["ping\n", "pong, twice\n"] {
        ws.write_all(word.as_bytes()).unwrap();
        let mut back = String::new();
        r.read_line(&mut back).unwrap();
        assert_eq!(back, word);
    }

    // HTTPS: the SNI name's certificate, verified by a client that trusts only it.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tls_get = |sni: &str| -> Result<(u16, String), rustls::Error> {
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(client_cfg.clone(), name).unwrap();
        let mut sock = TcpStream::connect(https).unwrap();
        c.complete_io(&mut sock).map_err(|e| {
            e.into_inner()
                .and_then(|i| i.downcast::<rustls::Error>().ok())
                .map(|b| *b)
                .unwrap_or(rustls::Error::HandshakeNotComplete)
        })?;
        let mut stream = rustls::Stream::new(&mut c, &mut sock);
        Ok(get(&mut stream, sni, "/"))
    };
    let (code, body) = tls_get("a.example").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(" a.example "), "{body}");
    // Another name gets the self-signed default, which that client does not trust.
    assert!(tls_get("b.example").is_err());

    // A route added: the kept-alive connection's next request takes it.
    let mut changed = objects(a, b);
    changed.routes = Routes::build(&[Arc::new(
        serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "new"},
            "spec": {"rules": [{"host": "new.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "one", "port": {"number": 80}}}}]}}]}}))
        .unwrap(),
    )]);
    changed.endpoints = Endpoints::build(
        &changed.routes,
        &[Arc::new(
            serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "one"},
                "spec": {"ports": [{"name": "http", "port": 80}]}}))
            .unwrap(),
        )],
        &[Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "one-x",
                    "labels": {"kubernetes.io/service-name": "one"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": b.port()}],
                "endpoints": [{"addresses": ["127.0.0.1"]}]}))
            .unwrap(),
        )],
    );
    proxy.update(changed);
    let (code, body) = get(&mut conn, "new.example", "/");
    assert_eq!((code, &body[..2]), (200, "B "));
    assert_eq!(
        get(&mut conn, "a.example", "/").0,
        404,
        "the old route is gone"
    );
    drop(rt);
}

#[test]
fn worker_threads_serve_kept_alive_connections_and_stop_with_their_accept_loop() {
    let (a, b) = (backend("A"), backend("B"));
    let proxy = Proxy::new(Box::new(|_, _| None), None);
    proxy.update(objects(a, b));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let workers = proxy.spawn_workers(2).unwrap();
    let (addr, accepting) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (addr, tokio::spawn(workers.clone().serve(l, false)))
    });
    drop(workers);
    // One thread per worker (each names itself once it runs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ingress_threads() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} serving threads, not 2",
            ingress_threads()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Several connections, handed out over the threads, each kept alive over several
    // requests, and both endpoints reached.
    let mut seen = std::collections::BTreeSet::new();
    let mut conns: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for _ in 0..3 {
        for c in &mut conns {
            let (code, body) = get(c, "a.example", "/");
            assert_eq!(code, 200, "{body}");
            seen.insert(body[..1].to_string());
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The accept loop ends and the threads with it: the port is closed, and the
    // threads close the connections they served.
    accepting.abort();
    rt.block_on(async {
        while !accepting.is_finished() {
            tokio::task::yield_now().await
        }
    });
    assert!(TcpStream::connect(addr).is_err(), "the port still accepts");
    for c in &mut conns {
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            c.read(&mut buf).expect("closed within 5 s, not still open"),
            0
        );
    }
    // And the threads are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ingress_threads() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "serving threads still run 5 s after their accept loop ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How many of this process's threads are the proxy's serving threads.
fn ingress_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("ingress-"))
        })
        .count()
}
