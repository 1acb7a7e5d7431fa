//! The join token: `K10<sha256 of the cluster CA, hex>::<id>.<secret>`, the form k3s
//! prints, holding a bootstrap token (kube's `[a-z0-9]{6}.[a-z0-9]{16}`) and the hash
//! of the CA the joining side must find at the server — so it verifies the server
//! before it trusts it, with nothing taken on first use.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::Error;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const PREFIX: &str = "K10";

/// The hash a join token carries of the cluster CA: SHA-256 of the CA bundle exactly
/// as the server serves it at `/cacerts`, in lower-case hex.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

/// A bootstrap token: a public id (it names the Secret, and the user
/// `system:bootstrap:ID`) and a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, 6 characters of [a-z0-9].
    pub id: String,
    /// The secret part, 16 characters of [a-z0-9].
    pub secret: String,
}

impl fmt::Debug for BootstrapToken {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.****)", self.id)
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn random_chars(n: usize) -> Result<String, Error> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf)
            .map_err(|e| Error::Malformed(format!("no randomness from the kernel: {e}")))?;
        // 252 is the largest multiple of 36 below 256: rejecting the rest keeps every
        // character equally likely.
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> Result<BootstrapToken, Error> {
        Ok(BootstrapToken {
            id: random_chars(ID_LEN)?,
            secret: random_chars(SECRET_LEN)?,
        })
    }

    /// Parses `ID.SECRET`; None when the text does not have that form (it may be
    /// another kind of bearer token).
    pub fn parse(s: &str) -> Option<BootstrapToken> {
        let (id, secret) = s.split_once('.')?;
        (is_token_part(id, ID_LEN) && is_token_part(secret, SECRET_LEN)).then(|| BootstrapToken {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// Whether `id` has the form of a token id.
    pub fn is_id(id: &str) -> bool {
        is_token_part(id, ID_LEN)
    }
}

/// A join token: the CA hash and the bootstrap token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA bundle, hex (see [`ca_hash`]).
    pub ca_hash: String,
    /// The credentials.
    pub token: BootstrapToken,
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}::{}", self.ca_hash, self.token)
    }
}

impl std::str::FromStr for JoinToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<JoinToken, Error> {
        let s = s.trim();
        let Some(rest) = s.strip_prefix(PREFIX) else {
            return Err(Error::Malformed(if BootstrapToken::parse(s).is_some() {
                "the token has no CA hash: use the whole join token the server printed \
                 (K10<hash>::<id>.<secret>, in DATA_DIR/token or from `berth token create`), \
                 so the server can be verified"
                    .into()
            } else {
                "the token is not a join token: expected K10<sha256 of the CA>::<id>.<secret>, \
                 as `berth server` writes to DATA_DIR/token and `berth token create` prints"
                    .into()
            }));
        };
        let (hash, creds) = rest.split_once("::").ok_or_else(|| {
            Error::Malformed(
                "the join token lacks `::` between the CA hash and the credentials".into(),
            )
        })?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Malformed(format!(
                "the join token's CA hash {hash:?} is not 64 hex digits (a SHA-256)"
            )));
        }
        let token = BootstrapToken::parse(creds).ok_or_else(|| {
            Error::Malformed(
                "the join token's credentials are not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})"
                    .into(),
            )
        })?;
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            token,
        })
    }
}

/// What an agent joins with: the whole join token (the server verified against the
/// CA hash it carries), or bare bootstrap credentials `ID.SECRET`, as kubeadm's
/// `--token` takes them (the server verified through cluster-info's signature made
/// with the same secret, see [`crate::discovery`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinCredentials {
    /// `K10<hash>::ID.SECRET`.
    Whole(JoinToken),
    /// `ID.SECRET`.
    Bare(BootstrapToken),
}

impl JoinCredentials {
    /// The bootstrap token either form holds.
    pub fn token(&self) -> &BootstrapToken {
        match self {
            JoinCredentials::Whole(j) => &j.token,
            JoinCredentials::Bare(t) => t,
        }
    }

    /// The CA hash, when the whole join token was given.
    pub fn ca_hash(&self) -> Option<&str> {
        match self {
            JoinCredentials::Whole(j) => Some(&j.ca_hash),
            JoinCredentials::Bare(_) => None,
        }
    }
}

impl std::str::FromStr for JoinCredentials {
    type Err = Error;

    fn from_str(s: &str) -> Result<JoinCredentials, Error> {
        match BootstrapToken::parse(s.trim()) {
            Some(t) => Ok(JoinCredentials::Bare(t)),
            None => s.parse().map(JoinCredentials::Whole),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_round_trip() {
        let t = BootstrapToken::generate().unwrap();
        assert_eq!(BootstrapToken::parse(&t.to_string()), Some(t.clone()));
        let j = JoinToken {
            ca_hash: ca_hash(b"pem"),
            token: t,
        };
        assert_eq!(j.to_string().parse::<JoinToken>().unwrap(), j);
        assert!(!format!("{:?}", j.token).contains(&j.token.secret));
    }

    #[test]
    fn malformed_tokens_are_explained() {
        let bare = "abcdef.0123456789abcdef";
        assert!(BootstrapToken::parse(bare).is_some());
        let e = bare.parse::<JoinToken>().unwrap_err().to_string();
        assert!(e.contains("no CA hash"), "{e}");
        let e = "K10abc::abcdef.0123456789abcdef"
            .parse::<JoinToken>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex"), "{e}");
        let good_hash = ca_hash(b"x");
        let e = format!("K10{good_hash}::ABCDEF.0123456789abcdef")
            .parse::<JoinToken>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("bootstrap token"), "{e}");
        assert!(BootstrapToken::parse("abcdef.0123").is_none());
        // An agent may join with the bare credentials; a malformed text is explained
        // as a join token's.
        assert_eq!(bare.parse::<JoinCredentials>().unwrap().ca_hash(), None);
        let whole = format!("K10{good_hash}::{bare}");
        let c = whole.parse::<JoinCredentials>().unwrap();
        assert_eq!(c.ca_hash(), Some(good_hash.as_str()));
        assert_eq!(c.token().to_string(), bare);
        let e = "K10abc::x"
            .parse::<JoinCredentials>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex"), "{e}");
        assert!(BootstrapToken::parse("eyJhbGciOi.x").is_none());
    }
}
