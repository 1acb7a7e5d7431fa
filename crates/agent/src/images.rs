//! Images for pods: the default pull policy, and registry credentials from a pod's
//! imagePullSecrets (kubernetes.io/dockerconfigjson and kubernetes.io/dockercfg).

use berth_engine::cri::AuthConfig;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;

use crate::error::{ApiContext, Result};

/// The pull policy Kubernetes defaults to: Always for `:latest` or no tag, else
/// IfNotPresent.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// The registry host of an image reference (docker.io for short names).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".into(),
    }
}

/// A docker config key (`https://host/v1/`, `host`) reduced to its host.
fn host_of_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// Finds credentials for `registry` in a docker config's `auths` map.
pub fn auth_in(auths: &serde_json::Value, registry: &str) -> Option<AuthConfig> {
    let map = auths.as_object()?;
    let (_, entry) = map.iter().find(|(k, _)| host_of_key(k) == registry)?;
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    Some(AuthConfig {
        username: s("username"),
        password: s("password"),
        auth: s("auth"),
        registry_token: s("registrytoken"),
    })
}

/// Credentials for pulling `image` from the pod's imagePullSecrets, if any matches.
pub async fn auth_for(client: &kube::Client, pod: &Pod, image: &str) -> Result<Option<AuthConfig>> {
    let registry = registry_of(image);
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for r in pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
    {
        let Some(secret) = api
            .get_opt(&r.name)
            .await
            .api(|| format!("get imagePullSecret {ns}/{}", r.name))?
        else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let parsed = if let Some(b) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&b.0)
                .ok()
                .and_then(|v| v.get("auths").cloned())
        } else if let Some(b) = data.get(".dockercfg") {
            serde_json::from_slice::<serde_json::Value>(&b.0).ok()
        } else {
            None
        };
        if let Some(a) = parsed.as_ref().and_then(|p| auth_in(p, &registry)) {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_registries_and_keys() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("127.0.0.1:5000/busybox:1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:00"), "IfNotPresent");
        assert_eq!(registry_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("localhost/busybox:1"), "localhost");
        let auths = serde_json::json!({"https://index.docker.io/v1/": {"auth": "dTpw"},
            "127.0.0.1:5000": {"username": "u", "password": "p"}});
        assert_eq!(auth_in(&auths, "docker.io").unwrap().auth, "dTpw");
        assert_eq!(auth_in(&auths, "127.0.0.1:5000").unwrap().username, "u");
        assert!(auth_in(&auths, "quay.io").is_none());
    }
}
