//! The Pod Security Standards — privileged, baseline, restricted — as checks of a
//! pod spec, each violation named with the field to fix, as published for
//! Kubernetes 1.32 ("latest").

use serde_json::Value;

/// The three levels, least restrictive first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations prevented.
    Baseline,
    /// Hardened as the standard's best practice.
    Restricted,
}

impl Level {
    /// The level a label or configuration names.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    /// The level's name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

pub(super) fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn list<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every container of a pod spec with its name: init, regular and ephemeral.
pub(super) fn containers(spec: &Value) -> Vec<(&str, &Value)> {
    ["/initContainers", "/containers", "/ephemeralContainers"]
        .iter()
        .flat_map(|k| list(spec, k).iter())
        .map(|c| (s(c, "/name").unwrap_or(""), c))
        .collect()
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "container "a"" or "containers "a", "b"".
fn which(names: &[&str]) -> String {
    if names.len() == 1 {
        format!("container {}", quoted(names))
    } else {
        format!("containers {}", quoted(names))
    }
}

/// The violations of `level` by a pod spec, as kube words them.
pub fn violations(spec: &Value, level: Level) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let cs = containers(spec);
    // Baseline.
    let hosts: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec.get(**k).and_then(Value::as_bool) == Some(true))
        .map(|k| format!("{k}=true"))
        .collect();
    if !hosts.is_empty() {
        out.push(format!("host namespaces ({})", hosts.join(", ")));
    }
    let privileged: Vec<&str> = cs
        .iter()
        .filter(|(_, c)| {
            c.pointer("/securityContext/privileged")
                .and_then(Value::as_bool)
                == Some(true)
        })
        .map(|(n, _)| *n)
        .collect();
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            which(&privileged)
        ));
    }
    let mut bad_caps: Vec<&str> = Vec::new();
    let mut bad_cap_containers: Vec<&str> = Vec::new();
    for (n, c) in &cs {
        let added: Vec<&str> = list(c, "/securityContext/capabilities/add")
            .iter()
            .filter_map(Value::as_str)
            .filter(|cap| !BASELINE_CAPS.contains(cap))
            .collect();
        if !added.is_empty() {
            bad_cap_containers.push(n);
            for a in added {
                if !bad_caps.contains(&a) {
                    bad_caps.push(a);
                }
            }
        }
    }
    if !bad_caps.is_empty() {
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            which(&bad_cap_containers),
            quoted(&bad_caps)
        ));
    }
    let host_paths: Vec<&str> = list(spec, "/volumes")
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .filter_map(|v| s(v, "/name"))
        .collect();
    if !host_paths.is_empty() {
        out.push(format!(
            "hostPath volumes (volume{} {})",
            if host_paths.len() == 1 { "" } else { "s" },
            quoted(&host_paths)
        ));
    }
    let mut ports: Vec<String> = Vec::new();
    let mut port_containers: Vec<&str> = Vec::new();
    for (n, c) in &cs {
        let hp: Vec<String> = list(c, "/ports")
            .iter()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
            .filter(|p| *p != 0)
            .map(|p| p.to_string())
            .collect();
        if !hp.is_empty() {
            port_containers.push(n);
            ports.extend(hp);
        }
    }
    if !ports.is_empty() {
        out.push(format!(
            "hostPort ({} uses hostPort{} {})",
            which(&port_containers),
            if ports.len() == 1 { "" } else { "s" },
            ports.join(", ")
        ));
    }
    let unconfined_apparmor =
        |v: &Value| s(v, "/securityContext/appArmorProfile/type") == Some("Unconfined");
    if unconfined_apparmor(spec) || cs.iter().any(|(_, c)| unconfined_apparmor(c)) {
        out.push("forbidden AppArmor profile (appArmorProfile.type=\"Unconfined\")".into());
    }
    let selinux_ok = |v: &Value| {
        let t = s(v, "/securityContext/seLinuxOptions/type");
        t.is_none_or(|t| {
            matches!(
                t,
                "" | "container_t" | "container_init_t" | "container_kvm_t" | "container_engine_t"
            )
        }) && s(v, "/securityContext/seLinuxOptions/user").is_none_or(str::is_empty)
            && s(v, "/securityContext/seLinuxOptions/role").is_none_or(str::is_empty)
    };
    if !selinux_ok(spec) || cs.iter().any(|(_, c)| !selinux_ok(c)) {
        out.push("seLinuxOptions (the type may only be container_t, container_init_t, container_kvm_t or container_engine_t; user and role must be unset)".into());
    }
    let proc_mount: Vec<&str> = cs
        .iter()
        .filter(|(_, c)| s(c, "/securityContext/procMount").is_some_and(|m| m != "Default"))
        .map(|(n, _)| *n)
        .collect();
    if !proc_mount.is_empty() {
        out.push(format!(
            "procMount ({} must not set securityContext.procMount to \"Unmasked\")",
            which(&proc_mount)
        ));
    }
    let unconfined_seccomp =
        |v: &Value| s(v, "/securityContext/seccompProfile/type") == Some("Unconfined");
    let mut seccomp_bad: Vec<&str> = cs
        .iter()
        .filter(|(_, c)| unconfined_seccomp(c))
        .map(|(n, _)| *n)
        .collect();
    if unconfined_seccomp(spec) {
        out.push("seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")".into());
    }
    if !seccomp_bad.is_empty() {
        out.push(format!("seccompProfile ({} must not set securityContext.seccompProfile.type to \"Unconfined\")", which(&seccomp_bad)));
    }
    let sysctls: Vec<&str> = list(spec, "/securityContext/sysctls")
        .iter()
        .filter_map(|x| s(x, "/name"))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if !sysctls.is_empty() {
        out.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }
    if level == Level::Baseline {
        return out;
    }
    // Restricted.
    let volumes: Vec<String> = list(spec, "/volumes")
        .iter()
        .filter_map(|v| {
            let o = v.as_object()?;
            let kind = o.keys().find(|k| *k != "name")?;
            (!RESTRICTED_VOLUMES.contains(&kind.as_str()) && kind != "hostPath")
                .then(|| format!("{:?} uses {kind}", s(v, "/name").unwrap_or("")))
        })
        .collect();
    if !volumes.is_empty() {
        out.push(format!(
            "restricted volume types (volume {})",
            volumes.join(", ")
        ));
    }
    let escalation: Vec<&str> = cs
        .iter()
        .filter(|(_, c)| {
            c.pointer("/securityContext/allowPrivilegeEscalation")
                .and_then(Value::as_bool)
                != Some(false)
        })
        .map(|(n, _)| *n)
        .collect();
    if !escalation.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            which(&escalation)
        ));
    }
    let mut caps: Vec<&str> = Vec::new();
    for (n, c) in &cs {
        let drops_all = list(c, "/securityContext/capabilities/drop")
            .iter()
            .any(|d| d == "ALL");
        let adds_more = list(c, "/securityContext/capabilities/add")
            .iter()
            .any(|a| a != "NET_BIND_SERVICE");
        if !drops_all || adds_more {
            caps.push(n);
        }
    }
    if !caps.is_empty() {
        out.push(format!(
            "unrestricted capabilities ({} must set securityContext.capabilities.drop=[\"ALL\"]; container{} may only add \"NET_BIND_SERVICE\")",
            which(&caps),
            if caps.len() == 1 { "" } else { "s" }
        ));
    }
    let pod_non_root = spec
        .pointer("/securityContext/runAsNonRoot")
        .and_then(Value::as_bool);
    let non_root: Vec<&str> = cs
        .iter()
        .filter(|(_, c)| {
            match c
                .pointer("/securityContext/runAsNonRoot")
                .and_then(Value::as_bool)
            {
                Some(v) => !v,
                None => pod_non_root != Some(true),
            }
        })
        .map(|(n, _)| *n)
        .collect();
    if pod_non_root == Some(false) || !non_root.is_empty() {
        out.push(format!(
            "runAsNonRoot != true (pod or {} must set securityContext.runAsNonRoot=true)",
            which(if non_root.is_empty() { &[] } else { &non_root })
        ));
    }
    let root_user = spec
        .pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
        == Some(0)
        || cs.iter().any(|(_, c)| {
            c.pointer("/securityContext/runAsUser")
                .and_then(Value::as_i64)
                == Some(0)
        });
    if root_user {
        out.push("runAsUser=0 (pod and containers must not set runAsUser=0)".into());
    }
    let pod_seccomp = s(spec, "/securityContext/seccompProfile/type");
    seccomp_bad.clear();
    for (n, c) in &cs {
        let t = s(c, "/securityContext/seccompProfile/type").or(pod_seccomp);
        if !matches!(t, Some("RuntimeDefault" | "Localhost")) {
            seccomp_bad.push(n);
        }
    }
    if !seccomp_bad.is_empty() {
        out.push(format!(
            "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            which(&seccomp_bad)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_standards_name_each_violation() {
        let plain = json!({"containers": [{"name": "c", "image": "x"}]});
        assert!(violations(&plain, Level::Baseline).is_empty());
        let r = violations(&plain, Level::Restricted);
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[0].starts_with("allowPrivilegeEscalation != false (container \"c\" must set"));
        let hardened = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]});
        assert!(violations(&hardened, Level::Restricted).is_empty());
        let bad = json!({"hostNetwork": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}}]});
        let b = violations(&bad, Level::Baseline);
        assert_eq!(
            b,
            [
                "host namespaces (hostNetwork=true)",
                "privileged (container \"c\" must not set securityContext.privileged=true)",
                "non-default capabilities (container \"c\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "hostPath volumes (volume \"h\")",
                "hostPort (container \"c\" uses hostPort 8080)",
            ]
        );
        assert!(violations(&bad, Level::Privileged).is_empty());
    }
}
