//! Certificate signing requests for node credentials: made by the agent
//! ([`request`]), read by the API server's validation and the approver ([`parse`]),
//! and signed by the controller manager's signer ([`sign`]) with the cluster CA.

use std::net::IpAddr;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use x509_parser::prelude::FromDer;

use crate::Error;

/// What a certificate request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations (a client certificate's groups).
    pub organizations: Vec<String>,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses among the subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Whether other kinds of alternative names (e-mail, URI) are asked for.
    pub other_names: bool,
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Malformed(e.to_string())
}

fn der_of(pem_text: &[u8]) -> Result<Vec<u8>, Error> {
    let text = std::str::from_utf8(pem_text).map_err(|_| bad("the request is not PEM text"))?;
    let p = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| bad(format!("the request is not PEM: {e}")))?
        .1;
    if p.label != "CERTIFICATE REQUEST" {
        return Err(bad(format!(
            "the PEM block is a {:?}, not a CERTIFICATE REQUEST",
            p.label
        )));
    }
    Ok(p.contents)
}

/// Reads a PEM certificate and hands it to `f`.
fn with_cert<T>(
    cert_pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> Result<T, Error> {
    let pem = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| bad(format!("the certificate is not PEM: {e}")))?
        .1;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
    Ok(f(&cert))
}

/// Parses a PEM certificate request and checks its signature.
pub fn parse(pem_text: &[u8]) -> Result<Requested, Error> {
    parse_der(&der_of(pem_text)?)
}

fn parse_der(der: &[u8]) -> Result<Requested, Error> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| bad(format!("the certificate request does not parse: {e}")))?;
    csr.verify_signature()
        .map_err(|_| bad("the certificate request's signature does not verify"))?;
    let subject = &csr.certification_request_info.subject;
    // One reading of the subject only: a second CN (or several attributes in one
    // RDN) could be read one way here and another way when the certificate is made.
    if subject.iter_common_name().count() > 1 {
        return Err(bad("the subject has more than one CN"));
    }
    if subject.iter().any(|rdn| rdn.iter().count() != 1) {
        return Err(bad("the subject has an RDN of several attributes"));
    }
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        a.as_str().map(str::to_string).unwrap_or_default()
    };
    let mut out = Requested {
        common_name: subject
            .iter_common_name()
            .next()
            .map(text)
            .unwrap_or_default(),
        organizations: subject.iter_organization().map(text).collect(),
        ..Requested::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                use x509_parser::extensions::GeneralName;
                match n {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => out
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                        16 => out
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                        _ => out.other_names = true,
                    },
                    _ => out.other_names = true,
                }
            }
        }
    }
    Ok(out)
}

/// A new key and a PEM certificate request for `common_name` in `organizations`, with
/// `dns_names` and `ips` as alternative names: returns (request PEM, key PEM).
pub fn request(
    common_name: &str,
    organizations: &[&str],
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(bad)?;
    let mut p = CertificateParams::new(dns_names.to_vec()).map_err(bad)?;
    p.subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.distinguished_name = rcgen::DistinguishedName::new();
    for o in organizations {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    p.distinguished_name.push(DnType::CommonName, common_name);
    let csr = p.serialize_request(&key).map_err(bad)?;
    Ok((csr.pem().map_err(bad)?, key.serialize_pem()))
}

/// Signs the PEM request `pem_text` with the CA (`ca_cert`, `ca_key`, PEM), for the
/// CSR's `usages` (kube's names: "digital signature", "key encipherment", "client
/// auth", "server auth"), valid from a little before now for `valid_for`, never past
/// the CA. Subject and alternative names are the request's.
pub fn sign(
    pem_text: &[u8],
    usages: &[String],
    ca_cert: &str,
    ca_key: &str,
    valid_for: std::time::Duration,
) -> Result<String, Error> {
    let der = der_of(pem_text)?;
    let wanted = parse_der(&der)?;
    if wanted.organizations.len() > 1 {
        return Err(bad(
            "berth signs certificates with one organization (O) at the most",
        ));
    }
    let req = CertificateSigningRequestParams::from_der(&der.into()).map_err(bad)?;
    let ca_keypair = KeyPair::from_pem(ca_key).map_err(|e| bad(format!("the CA key: {e}")))?;
    let ca_not_after = with_cert(ca_cert, |c| c.validity().not_after.to_datetime())
        .map_err(|e| bad(format!("the CA certificate: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_keypair)
        .map_err(|e| bad(format!("the CA certificate: {e}")))?;
    let mut params = req.params;
    // The subject as checked, not as another parser reads it.
    params.distinguished_name = rcgen::DistinguishedName::new();
    for o in &wanted.organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, o.as_str());
    }
    params
        .distinguished_name
        .push(DnType::CommonName, wanted.common_name.as_str());
    params.is_ca = IsCa::NoCa;
    params.key_usages.clear();
    params.extended_key_usages.clear();
    for u in usages {
        match u.as_str() {
            "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "client auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth),
            other => return Err(bad(format!("usage {other:?} cannot be signed"))),
        }
    }
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(bad)?;
    serial[0] &= 0x7f;
    params.serial_number = Some(serial.to_vec().into());
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    if ca_not_after <= now + time::Duration::hours(1) {
        return Err(bad(format!(
            "the cluster CA expires at {ca_not_after}: it signs nothing more; rotate it"
        )));
    }
    // A little back, so a node whose clock is slightly behind accepts it at once.
    params.not_before = now - time::Duration::minutes(5);
    let until = now + time::Duration::try_from(valid_for).map_err(bad)?;
    params.not_after = until.min(ca_not_after);
    let pem = params
        .signed_by(&req.public_key, &issuer)
        .map_err(|e| bad(format!("signing: {e}")))?
        .pem();
    // What was signed is what was checked.
    let cn = subject_common_name(&pem)?;
    if cn != wanted.common_name {
        return Err(bad(format!(
            "the signed subject {cn:?} is not the one checked"
        )));
    }
    Ok(pem)
}

/// When a PEM certificate stops being valid, and when it started (unix seconds).
pub fn validity(cert_pem: &str) -> Result<(i64, i64), Error> {
    with_cert(cert_pem, |c| {
        let v = c.validity();
        (v.not_before.timestamp(), v.not_after.timestamp())
    })
}

/// The subject's common name of a PEM certificate.
pub fn subject_common_name(cert_pem: &str) -> Result<String, Error> {
    with_cert(cert_pem, |c| {
        c.subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_node_request_is_read_and_signed() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let (csr, _key) =
            request("system:node:n1", &["system:nodes"], &["n1".into()], &[ip]).unwrap();
        let r = parse(csr.as_bytes()).unwrap();
        assert_eq!(r.common_name, "system:node:n1");
        assert_eq!(r.organizations, vec!["system:nodes".to_string()]);
        assert_eq!(r.dns_names, vec!["n1".to_string()]);
        assert_eq!(r.ip_addresses, vec![ip]);
        let (ca_cert, ca_key) = ca();
        let usages = ["digital signature", "client auth"].map(String::from);
        let hour = std::time::Duration::from_secs(3600);
        let cert = sign(csr.as_bytes(), &usages, &ca_cert, &ca_key, hour).unwrap();
        let (from, to) = validity(&cert).unwrap();
        assert!((to - from - 3600 - 300).abs() < 5, "{from} {to}");
        // Never past the CA.
        let year = std::time::Duration::from_secs(365 * 86400);
        let cert = sign(csr.as_bytes(), &usages, &ca_cert, &ca_key, year).unwrap();
        let (_, ca_to) = validity(&ca_cert).unwrap();
        assert_eq!(validity(&cert).unwrap().1, ca_to);
    }

    #[test]
    fn a_subject_read_two_ways_is_refused() {
        // Two CNs (the second under CN's OID as a custom type, as an attacker can
        // write any DER): one parser may take the first, another the last.
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        p.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 3]),
            "system:kube-controller-manager",
        );
        let two = p.serialize_request(&key).unwrap().pem().unwrap();
        let e = parse(two.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("more than one CN"), "{e}");
        let (ca_cert, ca_key) = ca();
        let usages = ["client auth"].map(String::from);
        assert!(sign(
            two.as_bytes(),
            &usages,
            &ca_cert,
            &ca_key,
            std::time::Duration::from_secs(3600)
        )
        .is_err());
    }

    #[test]
    fn tampered_and_foreign_requests_are_refused() {
        let (csr, _) = request("x", &[], &[], &[]).unwrap();
        let mut der = der_of(csr.as_bytes()).unwrap();
        let n = der.len();
        der[n - 3] ^= 0xff;
        assert!(parse_der(&der).is_err());
        assert!(parse(b"not pem").is_err());
        let (ca_cert, _) = ca();
        let e = parse(ca_cert.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("not a CERTIFICATE REQUEST"), "{e}");
    }
}
