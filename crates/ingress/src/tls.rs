//! Certificates by SNI: the Secret an Ingress's `tls` names for the requested host
//! (a `kubernetes.io/tls` Secret's `tls.crt` and `tls.key`), parsed once per Secret
//! version; a self-signed default for hosts without one, as Traefik serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::Shared;

/// A Secret's contents as the proxy needs them: its resourceVersion, certificate
/// chain and key, in PEM.
pub struct TlsSecret {
    /// Changes whenever the Secret does.
    pub version: String,
    /// `tls.crt`.
    pub cert_pem: Vec<u8>,
    /// `tls.key`.
    pub key_pem: Vec<u8>,
}

/// Finds a Secret by namespace and name.
pub type SecretLookup = Box<dyn Fn(&str, &str) -> Option<TlsSecret> + Send + Sync>;

/// A Secret's namespace and name.
type SecretKey = (String, String);

/// Parsed certificates, by Secret, with the version they came from.
#[derive(Default)]
pub(crate) struct Cache(Mutex<HashMap<SecretKey, (String, Arc<CertifiedKey>)>>);

fn parse(s: &TlsSecret) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut s.cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut s.key_pem.as_slice())
        .map_err(|e| format!("tls.key: {e}"))?
        .ok_or("tls.key holds no private key")?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

/// A self-signed certificate for hosts without a Secret of their own.
pub(crate) fn default_cert() -> Arc<CertifiedKey> {
    let ck = rcgen::generate_simple_self_signed(vec!["berth-ingress-default".into()])
        .expect("a self-signed certificate from a valid name");
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .expect("rcgen's own key");
    let key = rustls::crypto::ring::sign::any_supported_type(&key).expect("rcgen's own key");
    Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], key))
}

/// Picks the certificate for the client's SNI name.
#[derive(Debug)]
pub(crate) struct Resolver(pub(crate) Arc<Shared>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let shared = &self.0;
        let name = hello.server_name();
        let snapshot = shared.snapshot();
        let Some((ns, secret)) = snapshot.routes.tls_secret(name) else {
            return Some(shared.default_cert.clone());
        };
        let Some(s) = (shared.secrets)(ns, secret) else {
            tracing::warn!(namespace = %ns, secret = %secret, host = ?name, "the Ingress's TLS Secret is missing: serving the default certificate");
            return Some(shared.default_cert.clone());
        };
        let key = (ns.clone(), secret.clone());
        let mut cache = shared.certs.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, ck)) = cache.get(&key) {
            if *v == s.version {
                return Some(ck.clone());
            }
        }
        match parse(&s) {
            Ok(ck) => {
                cache.insert(key, (s.version.clone(), ck.clone()));
                Some(ck)
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, secret = %secret, error = %e, "the Ingress's TLS Secret is unusable: serving the default certificate");
                Some(shared.default_cert.clone())
            }
        }
    }
}

/// The server side of TLS for the proxy.
pub(crate) fn server_config(shared: Arc<Shared>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(shared)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}
