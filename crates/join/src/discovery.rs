//! Discovery by token signature, as kubeadm's token discovery works: the public
//! ConfigMap `kube-public/cluster-info` holds a kubeconfig naming the server and the
//! cluster CA, and for every bootstrap token with the `signing` usage a detached JWS
//! of that kubeconfig (HS256, keyed by the token's secret, `kid` the token's id)
//! under `jws-kubeconfig-ID`. A node given only `ID.SECRET` reads the ConfigMap
//! without trusting the server, and trusts the CA in it only when the signature
//! under its token's id verifies: only someone holding the token's secret can have
//! made it. The controller manager's bootstrap signer keeps the signatures current;
//! this module is the one definition of their form, for it and for the agent.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::token::BootstrapToken;
use crate::Error;

/// The namespace of the cluster-info ConfigMap, readable by anyone.
pub const NAMESPACE: &str = "kube-public";
/// The ConfigMap's name.
pub const CLUSTER_INFO: &str = "cluster-info";
/// The key of the kubeconfig in its data.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// The prefix of the signatures' keys, followed by the token's id.
pub const SIGNATURE_PREFIX: &str = "jws-kubeconfig-";

/// The data key of the signature made with token `id`.
pub fn signature_key(id: &str) -> String {
    format!("{SIGNATURE_PREFIX}{id}")
}

/// The JWS protected header kube's bootstrap signer writes, byte for byte: a
/// verifier recomputes the whole detached signature and compares, so the header's
/// text is part of the format.
fn header(id: &str) -> String {
    format!(r#"{{"alg":"HS256","kid":"{id}"}}"#)
}

/// The detached JWS (`HEADER..SIGNATURE`, the payload left out) of `content` made
/// with `token`.
pub fn sign(content: &str, token: &BootstrapToken) -> Result<String, Error> {
    let protected = URL_SAFE_NO_PAD.encode(header(&token.id));
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(content));
    let key = EncodingKey::from_secret(token.secret.as_bytes());
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256)
        .map_err(|e| Error::Malformed(format!("signing with token {}: {e}", token.id)))?;
    Ok(format!("{protected}..{signature}"))
}

/// Checks that `jws` is `token`'s detached signature of `content`.
pub fn verify(content: &str, jws: &str, token: &BootstrapToken) -> Result<(), Error> {
    let refused = |why: &str| {
        Error::Refused(format!(
            "the cluster-info signature for token {} {why}: the token is wrong, or the server \
             answering is not the cluster's; nothing was trusted or sent",
            token.id
        ))
    };
    let (protected, rest) = jws.split_once('.').ok_or_else(|| refused("is not a JWS"))?;
    let signature = rest
        .strip_prefix('.')
        .ok_or_else(|| refused("is not a detached JWS"))?;
    if protected != URL_SAFE_NO_PAD.encode(header(&token.id)) {
        return Err(refused(
            "has another header than HS256 with this token's id",
        ));
    }
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(content));
    let key = DecodingKey::from_secret(token.secret.as_bytes());
    match jsonwebtoken::crypto::verify(signature, input.as_bytes(), &key, Algorithm::HS256) {
        Ok(true) => Ok(()),
        Ok(false) => Err(refused("does not verify")),
        Err(e) => Err(refused(&format!("cannot be checked ({e})"))),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

/// The kubeconfig cluster-info holds: clusters only, as kubeadm writes it.
#[derive(Serialize, Deserialize)]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    clusters: Vec<NamedCluster>,
}

/// The kubeconfig cluster-info publishes: the server at `server` with CA `ca_pem`.
pub fn kubeconfig(server: &str, ca_pem: &str) -> String {
    let k = Kubeconfig {
        api_version: "v1".into(),
        kind: "Config".into(),
        clusters: vec![NamedCluster {
            name: String::new(),
            cluster: ClusterEntry {
                server: server.into(),
                certificate_authority_data: STANDARD.encode(ca_pem),
            },
        }],
    };
    serde_yaml::to_string(&k).unwrap_or_default()
}

/// The CA (PEM) of a cluster-info kubeconfig: of its one cluster.
pub fn ca_of(kubeconfig: &str) -> Result<String, Error> {
    let bad = |why: String| Error::Malformed(format!("cluster-info's kubeconfig {why}"));
    let k: Kubeconfig =
        serde_yaml::from_str(kubeconfig).map_err(|e| bad(format!("does not parse: {e}")))?;
    let [c] = k.clusters.as_slice() else {
        return Err(bad(format!("has {} clusters, not one", k.clusters.len())));
    };
    let pem = STANDARD
        .decode(c.cluster.certificate_authority_data.trim())
        .map_err(|e| bad(format!("has CA data that is not base64: {e}")))?;
    String::from_utf8(pem).map_err(|_| bad("has a CA that is not PEM text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> BootstrapToken {
        BootstrapToken::parse(s).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_with_its_token_and_content() {
        let t = token("abcdef.0123456789abcdef");
        let content = kubeconfig("https://10.0.0.1:6443", "-----BEGIN CERTIFICATE-----\nx\n");
        let jws = sign(&content, &t).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts[1].is_empty(), "detached: {jws}");
        verify(&content, &jws, &t).unwrap();
        // Another secret, another id, other content, another header: all refused.
        let e = verify(&content, &jws, &token("abcdef.0123456789abcdee")).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        let e = verify(&content, &jws, &token("abcdeg.0123456789abcdef")).unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
        assert!(verify(&format!("{content} "), &jws, &t).is_err());
        let none = format!(
            "{}..{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[2]
        );
        assert!(verify(&content, &none, &t).is_err());
        assert!(verify(&content, "garbage", &t).is_err());
    }

    #[test]
    fn the_signature_is_the_one_kube_computes() {
        // kube's cluster-bootstrap computes this for this content, id and secret; a
        // signature kubeadm's discovery (or kube's signer) checks must match it.
        let t = BootstrapToken {
            id: "joshua".into(),
            secret: "my voice is my passcode".into(),
        };
        let content = "Hello from the other side. I must have called a thousand times.";
        assert_eq!(
            sign(content, &t).unwrap(),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
    }

    #[test]
    fn the_ca_comes_back_out_of_the_kubeconfig() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let k = kubeconfig("https://h:6443", pem);
        assert!(k.contains("certificate-authority-data:"), "{k}");
        assert!(k.contains("server: https://h:6443"), "{k}");
        assert_eq!(ca_of(&k).unwrap(), pem);
        assert!(ca_of("clusters: []\napiVersion: v1\nkind: Config\n").is_err());
        assert!(ca_of("{").is_err());
    }
}
