//! networking.k8s.io objects as kube-apiserver checks them: NetworkPolicy's peers,
//! ports and policy types; Ingress's hosts, paths, path types and backends.

use serde_json::Value;

use super::{arr, s};
use crate::names;
use crate::status::Cause;

/// A label selector's keys, values and operators.
pub(super) fn label_selector(sel: &Value, path: &str, out: &mut Vec<Cause>) {
    for (k, v) in sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(why) = names::qualified_name(k) {
            out.push(Cause::invalid(format!("{path}.matchLabels"), k, why));
        }
        if let Some(why) = v.as_str().and_then(names::label_value) {
            out.push(Cause::invalid(
                format!("{path}.matchLabels"),
                v.as_str().unwrap_or(""),
                why,
            ));
        }
    }
    for (i, e) in arr(sel, "/matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        match s(e, "/key") {
            None | Some("") => out.push(Cause::required(format!("{p}.key"))),
            Some(k) => {
                if let Some(why) = names::qualified_name(k) {
                    out.push(Cause::invalid(format!("{p}.key"), k, why));
                }
            }
        }
        let values = arr(e, "/values");
        match s(e, "/operator").unwrap_or("") {
            "In" | "NotIn" if values.is_empty() => out.push(Cause::required_because(
                format!("{p}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => out.push(Cause::forbidden(
                format!("{p}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => out.push(Cause::not_supported(
                format!("{p}.operator"),
                op,
                &["DoesNotExist", "Exists", "In", "NotIn"],
            )),
        }
    }
}

fn port_number(v: i64) -> bool {
    (1..=65535).contains(&v)
}

fn ports(rule: &Value, path: &str, out: &mut Vec<Cause>) {
    for (i, p) in arr(rule, "/ports").iter().enumerate() {
        let path = format!("{path}.ports[{i}]");
        if let Some(proto) = s(p, "/protocol") {
            let ok = ["SCTP", "TCP", "UDP"];
            if !ok.contains(&proto) {
                out.push(Cause::not_supported(format!("{path}.protocol"), proto, &ok));
            }
        }
        let end = p.get("endPort").and_then(Value::as_i64);
        match p.get("port") {
            None | Some(Value::Null) => {
                if end.is_some() {
                    out.push(Cause::required_because(
                        format!("{path}.port"),
                        "must be specified when endPort is specified",
                    ));
                }
            }
            Some(Value::Number(n)) => {
                let n = n.as_i64().unwrap_or(0);
                if !port_number(n) {
                    out.push(Cause::invalid(
                        format!("{path}.port"),
                        &n.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if let Some(e) = end {
                    if e < n {
                        out.push(Cause::invalid(
                            format!("{path}.endPort"),
                            &e.to_string(),
                            "must be greater than or equal to `port`",
                        ));
                    } else if !port_number(e) {
                        out.push(Cause::invalid(
                            format!("{path}.endPort"),
                            &e.to_string(),
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
            }
            Some(Value::String(name)) => {
                if let Some(why) = names::iana_svc_name(name) {
                    out.push(Cause::invalid(format!("{path}.port"), name, why));
                }
                if end.is_some() {
                    out.push(Cause::forbidden(
                        format!("{path}.endPort"),
                        "may not be specified when `port` is non-numeric",
                    ));
                }
            }
            Some(other) => out.push(Cause::invalid(
                format!("{path}.port"),
                &other.to_string(),
                "must be a port number or name",
            )),
        }
    }
}

fn ip_block(block: &Value, path: &str, out: &mut Vec<Cause>) {
    let cidr = match s(block, "/cidr") {
        None | Some("") => {
            out.push(Cause::required(format!("{path}.cidr")));
            return;
        }
        Some(c) => c,
    };
    let Ok(net) = cidr.parse::<ipnet::IpNet>() else {
        out.push(Cause::invalid(
            format!("{path}.cidr"),
            cidr,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
        return;
    };
    for (i, e) in arr(block, "/except").iter().enumerate() {
        let p = format!("{path}.except[{i}]");
        let text = e.as_str().unwrap_or("");
        match text.parse::<ipnet::IpNet>() {
            Err(_) => out.push(Cause::invalid(
                p,
                text,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
            Ok(x) => {
                if !(net.contains(&x) && x.prefix_len() > net.prefix_len()) {
                    out.push(Cause::invalid(p, text, "must be a strict subset of `cidr`"));
                }
            }
        }
    }
}

fn peers(rule: &Value, key: &str, path: &str, out: &mut Vec<Cause>) {
    for (i, peer) in arr(rule, &format!("/{key}")).iter().enumerate() {
        let p = format!("{path}.{key}[{i}]");
        let has = |k: &str| peer.get(k).is_some_and(|v| !v.is_null());
        let count = ["podSelector", "namespaceSelector", "ipBlock"]
            .iter()
            .filter(|k| has(k))
            .count();
        if count == 0 {
            out.push(Cause::required_because(p.clone(), "must specify a peer"));
        } else if has("ipBlock") && count > 1 {
            out.push(Cause::forbidden(
                p.clone(),
                "may not specify both ipBlock and another peer",
            ));
        }
        for k in ["podSelector", "namespaceSelector"] {
            if let Some(sel) = peer.get(k).filter(|v| !v.is_null()) {
                label_selector(sel, &format!("{p}.{k}"), out);
            }
        }
        if let Some(b) = peer.get("ipBlock").filter(|v| !v.is_null()) {
            ip_block(b, &format!("{p}.ipBlock"), out);
        }
    }
}

/// A NetworkPolicy's spec.
pub(super) fn network_policy(o: &Value, out: &mut Vec<Cause>) {
    let Some(spec) = o.get("spec") else {
        out.push(Cause::required("spec"));
        return;
    };
    if let Some(sel) = spec.get("podSelector").filter(|v| !v.is_null()) {
        label_selector(sel, "spec.podSelector", out);
    }
    for (key, peer_key) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr(spec, &format!("/{key}")).iter().enumerate() {
            let path = format!("spec.{key}[{i}]");
            ports(rule, &path, out);
            peers(rule, peer_key, &path, out);
        }
    }
    let types = arr(spec, "/policyTypes");
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if !["Ingress", "Egress"].contains(&t) {
            out.push(Cause::not_supported(
                format!("spec.policyTypes[{i}]"),
                t,
                &["Egress", "Ingress"],
            ));
        }
    }
    if types.len() > 2 {
        out.push(Cause::invalid(
            "spec.policyTypes",
            &Value::Array(types.to_vec()).to_string(),
            "may not have more than 2 policyTypes",
        ));
    }
}

/// An Ingress backend: a Service with a port by number or name, or a resource.
fn ingress_backend(b: &Value, path: &str, out: &mut Vec<Cause>) {
    match (b.get("service"), b.get("resource")) {
        (Some(_), Some(_)) => out.push(Cause::invalid(
            path,
            "",
            "cannot set both service and resource backends",
        )),
        (None, None) => out.push(Cause::invalid(
            path,
            "",
            "must specify a service or a resource backend",
        )),
        (Some(svc), None) => {
            if s(svc, "/name").is_none_or(str::is_empty) {
                out.push(Cause::required(format!("{path}.service.name")));
            }
            let number = svc.pointer("/port/number").and_then(Value::as_i64);
            let name = s(svc, "/port/name");
            match (number, name) {
                (Some(_), Some(_)) => out.push(Cause::invalid(
                    format!("{path}.service.port"),
                    "",
                    "cannot set both port name & port number",
                )),
                (None, None) => out.push(Cause::invalid(
                    format!("{path}.service.port"),
                    "",
                    "port name or number is required",
                )),
                (Some(n), None) if !port_number(n) => out.push(Cause::invalid(
                    format!("{path}.service.port.number"),
                    &n.to_string(),
                    "must be between 1 and 65535, inclusive",
                )),
                (None, Some(n)) => {
                    if let Some(why) = names::iana_svc_name(n) {
                        out.push(Cause::invalid(format!("{path}.service.port.name"), n, why));
                    }
                }
                _ => {}
            }
        }
        (None, Some(_)) => {}
    }
}

/// An Ingress's spec: rules' hosts, paths and path types, backends, TLS hosts.
pub(super) fn ingress(o: &Value, out: &mut Vec<Cause>) {
    let Some(spec) = o.get("spec") else {
        out.push(Cause::required("spec"));
        return;
    };
    let rules = arr(spec, "/rules");
    if let Some(b) = spec.get("defaultBackend") {
        ingress_backend(b, "spec.defaultBackend", out);
    } else if rules.is_empty() {
        out.push(Cause::invalid(
            "spec.rules",
            "[]",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        if let Some(host) = s(rule, "/host").filter(|h| !h.is_empty()) {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if bare.parse::<std::net::IpAddr>().is_ok() {
                out.push(Cause::invalid(
                    format!("{p}.host"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            } else if let Some(why) = names::dns1123_subdomain(bare) {
                out.push(Cause::invalid(format!("{p}.host"), host, why));
            }
        }
        for (j, hp) in arr(rule, "/http/paths").iter().enumerate() {
            let pp = format!("{p}.http.paths[{j}]");
            let path = s(hp, "/path");
            match s(hp, "/pathType") {
                None => out.push(Cause::required(format!("{pp}.pathType"))),
                Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                Some(t) => out.push(Cause::not_supported(
                    format!("{pp}.pathType"),
                    t,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            match path {
                Some(pth) if !pth.starts_with('/') => out.push(Cause::invalid(
                    format!("{pp}.path"),
                    pth,
                    "must be an absolute path",
                )),
                None if s(hp, "/pathType") != Some("ImplementationSpecific") => out.push(
                    Cause::invalid(format!("{pp}.path"), "", "must be an absolute path"),
                ),
                _ => {}
            }
            match hp.get("backend") {
                Some(b) => ingress_backend(b, &format!("{pp}.backend"), out),
                None => out.push(Cause::required(format!("{pp}.backend"))),
            }
        }
    }
    for (i, t) in arr(spec, "/tls").iter().enumerate() {
        for (j, h) in arr(t, "/hosts").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            if let Some(why) = names::dns1123_subdomain(h.strip_prefix("*.").unwrap_or(h)) {
                out.push(Cause::invalid(format!("spec.tls[{i}].hosts[{j}]"), h, why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(f: fn(&Value, &mut Vec<Cause>), o: Value) -> Vec<String> {
        let mut out = Vec::new();
        f(&o, &mut out);
        out.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn network_policy_peers_ports_and_types() {
        let got = fields(
            network_policy,
            json!({"spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
                "policyTypes": ["Ingress", "Egress", "Ingress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}],
                    "ports": [{"protocol": "ICMP"}, {"endPort": 10}, {"port": 10, "endPort": 5}]}]}}),
        );
        for want in [
            "spec.podSelector.matchExpressions[0].values: Required value",
            "spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer",
            "spec.egress[0].ports[0].protocol: Unsupported value: \"ICMP\"",
            "spec.egress[0].ports[1].port: Required value: must be specified when endPort is specified",
            "spec.egress[0].ports[2].endPort: Invalid value: \"5\": must be greater than or equal to `port`",
            "spec.policyTypes: Invalid value",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "{want} in {got:#?}");
        }
        let ok = json!({"spec": {"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
            "ports": [{"port": "http"}, {"port": 80, "endPort": 90}]}]}});
        assert!(fields(network_policy, ok).is_empty());
    }

    #[test]
    fn ingress_paths_and_backends() {
        let got = fields(
            ingress,
            json!({"spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
                {"path": "relative", "pathType": "Prefix",
                 "backend": {"service": {"name": "s", "port": {"number": 80, "name": "http"}}}},
                {"path": "/", "pathType": "Sometimes", "backend": {}},
            ]}}]}}),
        );
        for want in [
            "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name",
            "spec.rules[0].http.paths[0].path: Invalid value: \"relative\": must be an absolute path",
            "spec.rules[0].http.paths[0].backend.service.port: Invalid value",
            "spec.rules[0].http.paths[1].pathType: Unsupported value: \"Sometimes\"",
            "spec.rules[0].http.paths[1].backend: Invalid value",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "{want} in {got:#?}");
        }
        assert_eq!(fields(ingress, json!({"spec": {}})).len(), 1);
        // An empty host (as charts render it) is no host.
        let ok = json!({"spec": {"rules": [{"host": "", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}});
        assert!(fields(ingress, ok).is_empty());
        let ok = json!({"spec": {"rules": [{"host": "*.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "s", "port": {"name": "http"}}}}]}}]}});
        assert!(fields(ingress, ok).is_empty());
    }
}
