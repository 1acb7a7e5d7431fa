//! Image references as docker and podman read them: `[registry[:port]/]path[:tag][@digest]`,
//! with Docker Hub (`docker.io`, `library/`) as the default registry.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry names without a dot that still are registries.
const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port): `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path: `library/busybox`.
    pub repository: String,
    /// Tag, if any (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Digest, if pinned.
    pub digest: Option<Digest>,
}

fn valid_component(c: &str) -> bool {
    // lower-case alphanumerics separated by '.', '_', '__' or any number of '-'.
    !c.is_empty()
        && c.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference> {
        let bad = |why: &str| Error::invalid(format!("invalid image reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match s.rsplit_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(&format!(
                    "tag {t:?} is not valid (letters, digits, '_', '.', '-'; up to 128)"
                )));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                // Docker Hub's other names are Docker Hub.
                let first = match first {
                    "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY,
                    f => f,
                };
                (first.to_string(), p.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if registry.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("the registry name must be lower-case"));
        }
        let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !path.split('/').all(valid_component) {
            return Err(bad("repository names are lower-case letters, digits and '.', '_', '-' separated by '/'"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository: path,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker shows: no `docker.io/library/`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        }
    }

    /// What the registry is asked for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn docker_hub_defaults() {
        let hub: Reference = "index.docker.io/library/busybox".parse().unwrap();
        assert_eq!(hub.to_string(), "docker.io/library/busybox:latest");
        let x = r("busybox");
        assert_eq!(x.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(x.familiar_name(), "busybox");
        assert_eq!(r("user/app:1.0").to_string(), "docker.io/user/app:1.0");
    }

    #[test]
    fn registries_ports_and_digests() {
        let x = r("localhost:5000/team/app:v2");
        assert_eq!(x.registry, "localhost:5000");
        assert_eq!(x.repository, "team/app");
        assert_eq!(x.tag.as_deref(), Some("v2"));
        let d = Digest::of(b"x");
        let y = r(&format!("quay.io/a/b@{d}"));
        assert_eq!(y.tag, None);
        assert_eq!(y.manifest_ref(), d.to_string());
        assert_eq!(r("localhost/x").registry, "localhost");
    }

    #[test]
    fn bad_references() {
        for bad in ["", "UPPER", "a//b", "a:bad tag", "x@sha256:zz", "-lead"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
