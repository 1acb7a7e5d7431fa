//! Joining nodes: bootstrap token authentication and the server's own join token
//! ([`bootstrap`]), and the certificates.k8s.io/v1 CertificateSigningRequest rules
//! ([`csr`]): who asked is recorded, approval and signing are authorized against the
//! signer, and what each subresource may change.

pub mod bootstrap;
pub mod csr;
