//! Renewal, as the kubelet's certificate manager does it: a certificate is renewed
//! once most of its life has passed (here 80%), through a new
//! CertificateSigningRequest made as the node itself (approved as `selfnodeclient`);
//! the new one is written and presented from the next connection on. The serving
//! certificate of the node's endpoint is asked for the same way once the Node is
//! registered; until it is signed the endpoint serves a self-signed one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_join::identity as ni;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::client::{certified_key, Identity};
use super::{join, write_private, Files};
use crate::error::{Error, Result};

/// How long after `now` to renew a certificate valid from `from` to `to` (unix
/// seconds): 80% into its life, but never sooner than half of what is left — a
/// signer backdates `from` (berth's and kube's by 5 minutes), which for a short-lived
/// certificate puts the 80% mark in the past at once, and renewing at once would
/// never stop.
pub fn renew_in(from: i64, to: i64, now: i64) -> Duration {
    let at = from + (to - from) * 4 / 5;
    let wait = (at - now).max((to - now) / 2);
    Duration::from_secs(u64::try_from(wait).unwrap_or(0))
}

/// When to renew the certificate `pem` (now, if it does not parse).
fn renewal_wait(pem: &str) -> Duration {
    match berth_join::csr::validity(pem) {
        Ok((from, to)) => renew_in(from, to, jiff::Timestamp::now().as_second()),
        Err(_) => Duration::ZERO,
    }
}

/// Renews the client certificate under `files` before it expires, for as long as
/// the agent runs.
pub async fn client(
    client: kube::Client,
    identity: Arc<Identity>,
    files: Files,
    server: String,
    node: String,
) {
    loop {
        let pem = std::fs::read_to_string(files.client_cert()).unwrap_or_default();
        tokio::time::sleep(renewal_wait(&pem)).await;
        match renew_client(&client, &identity, &files, &server, &node).await {
            Ok(to) => tracing::info!(node, valid_until = to, "client certificate renewed"),
            Err(e) => {
                tracing::warn!(error = %e, "renewing the client certificate; trying again in 30s");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

async fn renew_client(
    client: &kube::Client,
    identity: &Identity,
    files: &Files,
    server: &str,
    node: &str,
) -> Result<i64> {
    let wanted = join::Wanted {
        signer: ni::SIGNER_KUBELET_CLIENT,
        usages: join::CLIENT_USAGES,
        node,
        dns: &[],
        ips: &[],
    };
    let (new_cert, new_key) = join::obtain(client, wanted, Duration::from_secs(120), false).await?;
    let ca = std::fs::read_to_string(files.ca())
        .map_err(|e| Error::Io(files.ca().display().to_string(), e))?;
    join::save(files, server, node, &ca, &new_cert, &new_key)?;
    identity.replace(certified_key(&new_cert, &new_key)?);
    let (_, to) =
        berth_join::csr::validity(&new_cert).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(to)
}

/// The serving certificate of the node's endpoint: self-signed until the cluster
/// signs one, then the signed one, replaced on renewal.
#[derive(Debug)]
pub struct ServingCert(RwLock<Arc<CertifiedKey>>);

impl ServingCert {
    /// Starts with the signed certificate kept under `files` if it is still good, else
    /// a self-signed one for `names`.
    pub fn new(names: Vec<String>, files: Option<&Files>) -> Result<Arc<ServingCert>> {
        if let Some(f) = files {
            let cert = std::fs::read_to_string(f.serving_cert()).ok();
            let key = std::fs::read_to_string(f.serving_key()).ok();
            if let (Some(c), Some(k)) = (cert, key) {
                let fresh = berth_join::csr::validity(&c)
                    .is_ok_and(|(_, to)| to > jiff::Timestamp::now().as_second() + 60);
                if fresh {
                    if let Ok(ck) = certified_key(&c, &k) {
                        return Ok(Arc::new(ServingCert(RwLock::new(ck))));
                    }
                }
            }
        }
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::Internal(format!("self-signed serving certificate: {e}")))?;
        let key = certified_key(&ck.cert.pem(), &ck.signing_key.serialize_pem())?;
        Ok(Arc::new(ServingCert(RwLock::new(key))))
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Usages of a kubelet serving certificate.
const SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];

/// Asks for the node's serving certificate (its name and address) once its Node is
/// registered, and renews it, for as long as the agent runs.
pub async fn serving(
    client: kube::Client,
    serving: Arc<ServingCert>,
    files: Files,
    node: String,
    ip: std::net::IpAddr,
) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    // The certificate in use, as signed: its life times the next request, whether or
    // not it could be kept on disk.
    let mut current = std::fs::read_to_string(files.serving_cert()).ok();
    loop {
        if let Some(pem) = &current {
            tokio::time::sleep(renewal_wait(pem)).await;
        }
        // The approver checks the names against the Node's addresses.
        if !matches!(nodes.get_opt(&node).await, Ok(Some(_))) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let wanted = join::Wanted {
            signer: ni::SIGNER_KUBELET_SERVING,
            usages: SERVING_USAGES,
            node: &node,
            dns: std::slice::from_ref(&node),
            ips: &[ip],
        };
        match join::obtain(&client, wanted, Duration::from_secs(120), false).await {
            Ok((cert, key)) => {
                let saved = write_private(&files.serving_key(), &key)
                    .and_then(|_| write_private(&files.serving_cert(), &cert));
                if let Err(e) = saved {
                    tracing::warn!(error = %e, "keeping the serving certificate");
                }
                match certified_key(&cert, &key) {
                    Ok(k) => {
                        serving.replace(k);
                        tracing::info!(node, "serving certificate signed by the nodes' serving CA");
                        current = Some(cert);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the signed serving certificate; asking again in 10 minutes");
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no serving certificate from the cluster; serving a self-signed one, asking again in 10 minutes");
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_four_fifths_of_the_life_or_half_what_is_left() {
        let s = Duration::from_secs;
        assert_eq!(renew_in(1000, 2000, 1000), s(800));
        assert_eq!(renew_in(0, 3600, 100), s(2780));
        // Backdated by 300 s and valid for 60 s more: not at once, in 30 s.
        assert_eq!(renew_in(0, 360, 300), s(30));
        assert_eq!(renew_in(0, 100, 200), s(0));
    }
}
