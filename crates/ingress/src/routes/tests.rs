use std::sync::Arc;

use serde_json::json;

use super::*;

fn ingress(name: &str, ts: &str, spec: serde_json::Value) -> Arc<Ingress> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name, "creationTimestamp": ts},
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn svc(name: &str, port: u16) -> serde_json::Value {
    json!({"service": {"name": name, "port": {"number": port}}})
}

fn routes() -> Routes {
    Routes::build(&[
        ingress(
            "a",
            "2024-01-01T00:00:00Z",
            json!({"rules": [
                {"host": "a.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": svc("root", 80)},
                    {"path": "/api/", "pathType": "Prefix", "backend": svc("api", 80)},
                    {"path": "/api/exact", "pathType": "Exact", "backend": svc("exact", 80)},
                ]}},
                {"host": "*.wild.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": svc("wild", 80)},
                ]}},
            ],
            "tls": [{"hosts": ["a.example"], "secretName": "a-tls"},
                    {"hosts": ["*.wild.example"], "secretName": "wild-tls"}]}),
        ),
        ingress(
            "b",
            "2024-01-02T00:00:00Z",
            json!({"defaultBackend": svc("fallback", 8080),
            "tls": [{"secretName": "catch-all"}],
            "rules": [{"host": "", "http": {"paths": [
                {"path": "/any", "pathType": "Prefix", "backend": svc("anyhost", 80)},
            ]}}]}),
        ),
        ingress(
            "other-class",
            "2024-01-03T00:00:00Z",
            json!({"ingressClassName": "nginx", "rules": [{"host": "c.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": svc("nginx", 80)},
            ]}}]}),
        ),
        // Classes named the old way, by annotation: another's, and berth's.
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "annotated-nginx",
                    "creationTimestamp": "2024-01-04T00:00:00Z",
                    "annotations": {"kubernetes.io/ingress.class": "nginx"}},
                "spec": {"rules": [{"host": "d.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": svc("nginx", 80)}]}}]},
            }))
            .unwrap(),
        ),
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "annotated-berth",
                    "creationTimestamp": "2024-01-05T00:00:00Z",
                    "annotations": {"kubernetes.io/ingress.class": "berth"}},
                "spec": {"rules": [{"host": "e.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": svc("e", 80)}]}}]},
            }))
            .unwrap(),
        ),
    ])
}

fn to(r: &Routes, host: &str, path: &str) -> Option<String> {
    r.route(host, path).map(|b| b.service.clone())
}

#[test]
fn hosts_and_paths_route_as_kubernetes_orders_them() {
    let r = routes();
    assert_eq!(to(&r, "a.example", "/").as_deref(), Some("root"));
    assert_eq!(to(&r, "A.Example", "/x").as_deref(), Some("root"));
    assert_eq!(
        to(&r, "a.example", "/api").as_deref(),
        Some("api"),
        "Prefix ignores the trailing slash"
    );
    assert_eq!(to(&r, "a.example", "/api/v1").as_deref(), Some("api"));
    assert_eq!(
        to(&r, "a.example", "/apix").as_deref(),
        Some("root"),
        "whole path elements"
    );
    assert_eq!(to(&r, "a.example", "/api/exact").as_deref(), Some("exact"));
    assert_eq!(
        to(&r, "a.example", "/api/exact/more").as_deref(),
        Some("api")
    );
    // Wildcards: exactly one label.
    assert_eq!(to(&r, "x.wild.example", "/").as_deref(), Some("wild"));
    assert_eq!(to(&r, "x.y.wild.example", "/").as_deref(), Some("fallback"));
    assert_eq!(to(&r, "wild.example", "/").as_deref(), Some("fallback"));
    // Host-less rules (an empty host is none) for every host; the default backend
    // for the rest.
    assert_eq!(to(&r, "zzz", "/any/thing").as_deref(), Some("anyhost"));
    assert_eq!(to(&r, "zzz", "/nothing").as_deref(), Some("fallback"));
    // Another class's Ingress is not ours, by spec or by annotation.
    assert_eq!(to(&r, "c.example", "/").as_deref(), Some("fallback"));
    assert_eq!(to(&r, "d.example", "/").as_deref(), Some("fallback"));
    assert_eq!(to(&r, "e.example", "/").as_deref(), Some("e"));
}

#[test]
fn certificates_by_host_and_wildcard() {
    let r = routes();
    let secret = |h: Option<&str>| r.tls_secret(h).map(|s| s.1.clone());
    assert_eq!(secret(Some("a.example")).as_deref(), Some("a-tls"));
    assert_eq!(secret(Some("q.wild.example")).as_deref(), Some("wild-tls"));
    // A tls entry without hosts covers the rest, and clients without SNI.
    assert_eq!(secret(Some("b.example")).as_deref(), Some("catch-all"));
    assert_eq!(secret(None).as_deref(), Some("catch-all"));
    let bare = Routes::build(&[ingress("x", "2024-01-01T00:00:00Z", json!({}))]);
    assert!(bare.tls_secret(Some("b.example")).is_none());
}

#[test]
fn endpoints_follow_the_service_port_and_readiness() {
    let r = routes();
    let services: Vec<Arc<Service>> = vec![Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "root"},
            "spec": {"ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
        }))
        .unwrap(),
    )];
    let slices: Vec<Arc<EndpointSlice>> = vec![Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "root-abc",
                "labels": {"kubernetes.io/service-name": "root"}},
            "addressType": "IPv4",
            "ports": [{"name": "web", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.42.1.5"], "conditions": {"ready": true}},
                {"addresses": ["10.42.1.6"], "conditions": {"ready": false}},
                {"addresses": ["10.42.2.5"]},
            ],
        }))
        .unwrap(),
    )];
    let e = Endpoints::build(&r, &services, &slices);
    let root = r.route("a.example", "/").unwrap();
    assert_eq!(
        e.of(root)
            .unwrap()
            .iter()
            .map(|e| e.addr)
            .collect::<Vec<_>>(),
        [
            "10.42.1.5:8080".parse().unwrap(),
            "10.42.2.5:8080".parse().unwrap()
        ]
    );
    // A Service that does not exist, as opposed to one without endpoints.
    assert!(e.of(r.route("a.example", "/api").unwrap()).is_none());
}
