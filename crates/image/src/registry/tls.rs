//! TLS for registries: the system's roots plus per-registry CAs from certs.d directories
//! (`<dir>/<host[:port]>/*.crt`, the layout docker and podman use), or no verification
//! at all when the user turns it off for a registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{Context, Error, Result};

/// Where per-registry CA certificates are looked for, first match wins per file.
pub fn default_cert_dirs() -> Vec<PathBuf> {
    [
        "/etc/berth/certs.d",
        "/etc/containers/certs.d",
        "/etc/docker/certs.d",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates configured for `host` (e.g. `localhost:5000`) under `dirs`.
pub fn registry_cas(dirs: &[PathBuf], host: &str) -> Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    for d in dirs {
        let dir = d.join(host);
        if dir.is_dir() {
            out.extend(dir_cas(&dir)?);
        }
    }
    Ok(out)
}

/// The certificates of every `*.crt` file in `dir`.
pub fn dir_cas(dir: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ctx(|| format!("read certificate directory {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        out.extend(read_pem_certs(&p)?);
    }
    Ok(out)
}

fn read_pem_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(p).ctx(|| format!("read CA certificate {}", p.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &data[..])
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid(format!("CA certificate {}: {e}", p.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no PEM certificate",
            p.display()
        )));
    }
    Ok(certs)
}

/// A rustls client config trusting the system roots and `extra`, or anything when
/// `verify` is false.
pub fn client_config(
    extra: &[CertificateDer<'static>],
    verify: bool,
) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS setup: {e}")))?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    // A missing or partly unreadable system store is not fatal: certs.d may be enough.
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    for c in extra {
        roots
            .add(c.clone())
            .map_err(|e| Error::invalid(format!("CA certificate rejected: {e}")))?;
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any server certificate (`--tls-verify=false`), still checking signatures so
/// the handshake itself is sound.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
