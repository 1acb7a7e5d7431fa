//! Authentication: who a request is from (a client certificate signed by the cluster
//! CA, a static bearer token from a token file, or a ServiceAccount token the server
//! signed). Whether it may do what it asks is [`crate::authz`]'s.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use crate::request::User;

/// The user of a connection's client certificate, and when the certificate expires:
/// as kube-apiserver, each request checks it anew, so a connection opened with a
/// certificate does not outlive it.
#[derive(Clone, Debug)]
pub struct CertIdentity {
    /// The certificate's user.
    pub user: User,
    /// Its notAfter (unix seconds).
    pub not_after: i64,
}

impl CertIdentity {
    /// The identity of a client certificate (DER).
    pub fn of(der: &[u8]) -> Option<CertIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(CertIdentity {
            user: User::of_certificate(&cert)?,
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether the certificate has expired.
    pub fn expired(&self) -> bool {
        jiff::Timestamp::now().as_second() > self.not_after
    }
}

impl User {
    /// The user of a client certificate: CN is the name, O the groups.
    fn of_certificate(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<User> {
        let subject = cert.subject();
        let cn = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(User::new(&cn, "", groups))
    }
}

/// The claims of a ServiceAccount token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: system:serviceaccount:NS:NAME.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// kube's own claims: the namespace and the ServiceAccount (and pod) bound to.
    #[serde(rename = "kubernetes.io")]
    pub kube: KubeClaims,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Serialize, Deserialize)]
pub struct KubeClaims {
    /// The namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: NameUid,
    /// The pod the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<NameUid>,
}

/// A name and uid.
#[derive(Debug, Serialize, Deserialize)]
pub struct NameUid {
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

/// Who can be authenticated, and how.
pub struct Authenticator {
    tokens: HashMap<String, User>,
    sign: EncodingKey,
    verify: DecodingKey,
    /// The issuer of ServiceAccount tokens.
    pub issuer: String,
    /// Whether requests without credentials are served as system:anonymous in
    /// system:unauthenticated, authorized by RBAC as anyone is (kube's
    /// --anonymous-auth, on by default: /version, /healthz and cluster-info are
    /// theirs to read, anything else is 403); off, they get 401 (but `/cacerts`, which
    /// a joining node checks against its token's CA hash).
    pub anonymous: bool,
}

/// The issuer and default audience of ServiceAccount tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

impl Authenticator {
    /// Loads the token file (kube's CSV: `token,user,uid,"group1,group2"`) and the
    /// ServiceAccount signing key under `pki_dir` (made on first start); `anonymous`:
    /// see [`Authenticator::anonymous`].
    pub fn load(
        token_file: Option<&Path>,
        pki_dir: &Path,
        anonymous: bool,
    ) -> Result<Authenticator, Error> {
        let mut tokens = HashMap::new();
        if let Some(p) = token_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::Setup(format!("reading token file {}: {e}", p.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let fields = split_csv(line);
                if fields.len() < 3 {
                    return Err(Error::Setup(format!(
                        "{}:{}: expected token,user,uid[,\"group1,group2\"]",
                        p.display(),
                        n + 1
                    )));
                }
                let groups = fields
                    .get(3)
                    .map(|g| {
                        g.split(',')
                            .map(|x| x.trim().to_string())
                            .filter(|x| !x.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                tokens.insert(fields[0].clone(), User::new(&fields[1], &fields[2], groups));
            }
        }
        let key_path = pki_dir.join(crate::pki::SERVICE_ACCOUNT_KEY);
        if !key_path.exists() {
            let k = rcgen::KeyPair::generate()
                .map_err(|e| Error::Setup(format!("generating the ServiceAccount key: {e}")))?;
            std::fs::write(&key_path, k.serialize_pem())
                .map_err(|e| Error::Setup(format!("writing {}: {e}", key_path.display())))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600));
        }
        let pem = std::fs::read_to_string(&key_path)
            .map_err(|e| Error::Setup(format!("reading {}: {e}", key_path.display())))?;
        let kp = rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| Error::Setup(format!("{}: {e}", key_path.display())))?;
        let sign = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| Error::Setup(format!("{}: {e}", key_path.display())))?;
        let verify = DecodingKey::from_ec_pem(kp.public_key_pem().as_bytes())
            .map_err(|e| Error::Setup(format!("{}: {e}", key_path.display())))?;
        Ok(Authenticator {
            tokens,
            sign,
            verify,
            issuer: ISSUER.into(),
            anonymous,
        })
    }

    /// The user of a bearer token: a static token, or a ServiceAccount token whose
    /// signature, expiry and audience check out. (Whether the ServiceAccount still
    /// exists is checked by the caller, which has the store.)
    pub fn token(&self, token: &str) -> Option<(User, Option<Claims>)> {
        if let Some(u) = self.tokens.get(token) {
            return Some((u.clone(), None));
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.issuer, "api", "https://kubernetes.default.svc"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.verify, &v).ok()?;
        let c = data.claims;
        let ns = &c.kube.namespace;
        let mut u = User::new(
            &c.sub,
            &c.kube.serviceaccount.uid,
            vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ],
        );
        if let Some(p) = &c.kube.pod {
            u.extra.push((
                "authentication.kubernetes.io/pod-name".into(),
                p.name.clone(),
            ));
            u.extra
                .push(("authentication.kubernetes.io/pod-uid".into(), p.uid.clone()));
        }
        Some((u, Some(c)))
    }

    /// Signs a ServiceAccount token.
    pub fn issue(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.sign)
            .map_err(|e| e.to_string())
    }
}

/// Splits one CSV line with double-quoted fields.
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_parse_like_kube() {
        assert_eq!(
            split_csv(r#"abc,alice,1001,"dev,ops""#),
            ["abc", "alice", "1001", "dev,ops"]
        );
    }
}
