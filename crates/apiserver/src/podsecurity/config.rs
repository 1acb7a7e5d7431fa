//! The cluster's PodSecurity configuration, as kube-apiserver reads it from its
//! admission configuration file (k3s's `--pod-security-admission-config-file`): an
//! AdmissionConfiguration whose PodSecurity plugin carries a
//! PodSecurityConfiguration, or that configuration alone. It gives the levels of
//! namespaces without labels and the exemptions: users, namespaces and runtime
//! classes whose pods are not checked.

use std::path::Path;

use serde_json::Value;

use super::standards::Level;

/// The defaults and exemptions (none of either by default: every level privileged).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Config {
    /// The levels of a namespace without labels: (enforce, warn, audit).
    pub defaults: [Option<Level>; 3],
    /// Requests by these users are not checked.
    pub exempt_users: Vec<String>,
    /// Pods in these namespaces are not checked.
    pub exempt_namespaces: Vec<String>,
    /// Pods of these runtime classes are not checked.
    pub exempt_runtime_classes: Vec<String>,
}

/// The modes, in the order [`Config::defaults`] holds them.
pub const MODES: [&str; 3] = ["enforce", "warn", "audit"];

impl Config {
    /// Reads the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let doc: Value = serde_yaml::from_str(&text)
            .map_err(|e| format!("{}: not YAML: {e}", path.display()))?;
        Config::parse(&doc).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The configuration a document gives (an AdmissionConfiguration or a
    /// PodSecurityConfiguration).
    pub fn parse(doc: &Value) -> Result<Config, String> {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let conf = match kind {
            "AdmissionConfiguration" => {
                let plugin = doc
                    .get("plugins")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some("PodSecurity"))
                    .ok_or("an AdmissionConfiguration without a PodSecurity plugin (plugins: [{name: PodSecurity, configuration: ...}])")?;
                plugin
                    .get("configuration")
                    .ok_or("the PodSecurity plugin has no configuration (a path: to another file is not supported: inline it)")?
            }
            "PodSecurityConfiguration" => doc,
            other => {
                return Err(format!(
                    "kind {other:?}: expected AdmissionConfiguration (apiserver.config.k8s.io/v1) or PodSecurityConfiguration (pod-security.admission.config.k8s.io/v1)"
                ))
            }
        };
        let mut c = Config::default();
        for (i, mode) in MODES.iter().enumerate() {
            let Some(level) = conf.pointer(&format!("/defaults/{mode}")) else {
                continue;
            };
            let name = level.as_str().unwrap_or("");
            c.defaults[i] = Some(Level::parse(name).ok_or_else(|| {
                format!(
                    "defaults.{mode}: {level} is not a level (privileged, baseline or restricted)"
                )
            })?);
            if let Some(v) = conf
                .pointer(&format!("/defaults/{mode}-version"))
                .and_then(Value::as_str)
                .filter(|v| *v != "latest")
            {
                // Kube keeps each release's standards; berth has the 1.32 ones.
                tracing::warn!(
                    "PodSecurity defaults.{mode}-version {v:?}: checked against the latest (1.32) standards"
                );
            }
        }
        let names = |k: &str| -> Result<Vec<String>, String> {
            match conf.pointer(&format!("/exemptions/{k}")) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("exemptions.{k}: {v} is not a name"))
                    })
                    .collect(),
                Some(other) => Err(format!("exemptions.{k}: {other} is not a list of names")),
            }
        };
        c.exempt_users = names("usernames")?;
        c.exempt_namespaces = names("namespaces")?;
        c.exempt_runtime_classes = names("runtimeClasses")?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn admission_configurations_parse_or_say_why() {
        let doc: Value = serde_yaml::from_str(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults: {enforce: baseline, enforce-version: latest, warn: restricted}\n    exemptions: {usernames: [ci-bot], namespaces: [kube-system], runtimeClasses: []}\n",
        )
        .unwrap();
        let c = Config::parse(&doc).unwrap();
        // An older version of the standards is checked as the latest.
        let pinned = json!({"kind": "PodSecurityConfiguration", "defaults": {"warn": "baseline", "warn-version": "v1.29"}});
        assert_eq!(
            Config::parse(&pinned).unwrap().defaults[1],
            Some(Level::Baseline)
        );
        assert_eq!(
            c.defaults,
            [Some(Level::Baseline), Some(Level::Restricted), None]
        );
        assert_eq!(c.exempt_users, ["ci-bot"]);
        assert_eq!(c.exempt_namespaces, ["kube-system"]);
        for (bad, why) in [
            (
                json!({"kind": "PodSecurityConfiguration", "defaults": {"enforce": "strict"}}),
                "defaults.enforce: \"strict\" is not a level",
            ),
            (
                json!({"kind": "PodSecurityConfiguration", "exemptions": {"namespaces": "a"}}),
                "exemptions.namespaces",
            ),
            (
                json!({"kind": "AdmissionConfiguration", "plugins": []}),
                "without a PodSecurity plugin",
            ),
            (json!({"kind": "Pod"}), "expected AdmissionConfiguration"),
        ] {
            let e = Config::parse(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
