//! Bootstrap token Secrets, as kube defines them: `kube-system/bootstrap-token-ID` of
//! type `bootstrap.kubernetes.io/token`, whose data holds the token's id and secret,
//! an optional expiry, its usages and extra groups. The API server authenticates
//! bootstrap tokens from them; `berth token` writes and lists them.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::token::BootstrapToken;
use crate::Error;

/// The namespace bootstrap token Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// The Secret type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token's user is in.
pub const GROUP: &str = "system:bootstrappers";
/// The extra group of a server's own join token: it may fetch what another server
/// needs to join ([`crate::ServerBootstrap`]); tokens made for agents are not in it.
pub const SERVERS_GROUP: &str = "system:bootstrappers:berth:servers";
/// The usage that lets the token authenticate to the API server.
pub const USAGE_AUTHENTICATION: &str = "authentication";
/// The usage kubeadm's discovery signs the cluster-info ConfigMap with.
pub const USAGE_SIGNING: &str = "signing";

/// The ConfigMap (in [`NAMESPACE`]) that records which bootstrap token is each of
/// the servers' join tokens: by [`JoinRole::key`], the token's id. Servers install
/// their join tokens from it at start, so a token revoked (its Secret deleted) stays
/// revoked, and one rotated reaches every server.
pub const JOIN_TOKENS_RECORD: &str = "berth-join-tokens";

/// Which of the servers' two join tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRole {
    /// The servers' (DATA_DIR/token): joins servers and agents.
    Servers,
    /// The agents' (DATA_DIR/agent-token): joins agents only.
    Agents,
}

impl JoinRole {
    /// Its key in [`JOIN_TOKENS_RECORD`].
    pub fn key(self) -> &'static str {
        match self {
            JoinRole::Servers => "servers",
            JoinRole::Agents => "agents",
        }
    }

    /// The Secret's data of `token` as this join token: no expiry (as k3s's), and for
    /// the servers' the group that may fetch what a joining server needs.
    pub fn secret(self, token: &BootstrapToken) -> TokenSecret {
        let (extra_groups, description) = match self {
            JoinRole::Servers => (
                vec![SERVERS_GROUP.to_string()],
                "The servers' join token (berth server, DATA_DIR/token): joins servers and agents.",
            ),
            JoinRole::Agents => (
                Vec::new(),
                "The agents' join token (berth server, DATA_DIR/agent-token): joins agents only.",
            ),
        };
        TokenSecret {
            token: token.clone(),
            expiration: None,
            usages: vec![USAGE_AUTHENTICATION.into(), USAGE_SIGNING.into()],
            extra_groups,
            description: description.into(),
        }
    }
}

/// The Secret's name for token `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// The user a token authenticates as.
pub fn user_name(id: &str) -> String {
    format!("system:bootstrap:{id}")
}

/// A bootstrap token Secret's data, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSecret {
    /// The token (id and secret).
    pub token: BootstrapToken,
    /// When it stops working; None: never.
    pub expiration: Option<Timestamp>,
    /// Usages: authentication, signing.
    pub usages: Vec<String>,
    /// Groups beyond system:bootstrappers (each system:bootstrappers:...).
    pub extra_groups: Vec<String>,
    /// What the token is for.
    pub description: String,
}

impl TokenSecret {
    /// The Secret's data entries (plain text; the caller encodes them as the API does).
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert("token-id".into(), self.token.id.clone());
        d.insert("token-secret".into(), self.token.secret.clone());
        if let Some(exp) = self.expiration {
            d.insert(
                "expiration".into(),
                exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
        }
        for u in &self.usages {
            d.insert(format!("usage-bootstrap-{u}"), "true".into());
        }
        if !self.extra_groups.is_empty() {
            d.insert("auth-extra-groups".into(), self.extra_groups.join(","));
        }
        if !self.description.is_empty() {
            d.insert("description".into(), self.description.clone());
        }
        d
    }

    /// Reads a Secret named `name` from its decoded data; an error says what is wrong.
    pub fn from_data(name: &str, data: &BTreeMap<String, String>) -> Result<TokenSecret, Error> {
        let field = |k: &str| data.get(k).map(|v| v.trim().to_string());
        let id = field("token-id")
            .ok_or_else(|| Error::Malformed(format!("Secret {name} has no token-id")))?;
        if name != secret_name(&id) {
            return Err(Error::Malformed(format!(
                "Secret {name} holds token id {id:?}: it must be named {}",
                secret_name(&id)
            )));
        }
        let secret = field("token-secret").unwrap_or_default();
        let token = BootstrapToken::parse(&format!("{id}.{secret}")).ok_or_else(|| {
            Error::Malformed(format!(
                "Secret {name}: token-id and token-secret must be 6 and 16 characters of [a-z0-9]"
            ))
        })?;
        let expiration = match field("expiration") {
            None => None,
            Some(e) => Some(e.parse::<Timestamp>().map_err(|err| {
                Error::Malformed(format!(
                    "Secret {name}: expiration {e:?} is not RFC 3339: {err}"
                ))
            })?),
        };
        let usages = data
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("usage-bootstrap-")?, v)))
            .filter(|(_, v)| v.trim() == "true")
            .map(|(u, _)| u.to_string())
            .collect();
        let extra_groups = field("auth-extra-groups")
            .map(|g| {
                g.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(TokenSecret {
            token,
            expiration,
            usages,
            extra_groups,
            description: field("description").unwrap_or_default(),
        })
    }

    /// [`TokenSecret::from_data`] of a Secret's data as the API hands it over, bytes
    /// by key (an entry that is not UTF-8 is read lossily, and fails the check of
    /// whatever reads it).
    pub fn from_bytes<'a>(
        name: &str,
        data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<TokenSecret, Error> {
        let data = data
            .into_iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        TokenSecret::from_data(name, &data)
    }

    /// Whether the token has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }

    /// The groups a presented `secret` authenticates into at `now` (system:bootstrappers
    /// and the extra groups), or why it is refused. As kube's authenticator, extra
    /// groups outside system:bootstrappers: are refused.
    pub fn authenticate(&self, secret: &str, now: Timestamp) -> Result<Vec<String>, Error> {
        // Compared in full whatever the first difference, so timing tells nothing.
        let same = self.token.secret.len() == secret.len()
            && self
                .token
                .secret
                .bytes()
                .zip(secret.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(Error::Refused(format!(
                "bootstrap token {}: wrong secret",
                self.token.id
            )));
        }
        if self.expired(now) {
            return Err(Error::Refused(format!(
                "bootstrap token {} has expired",
                self.token.id
            )));
        }
        if !self.usages.iter().any(|u| u == USAGE_AUTHENTICATION) {
            return Err(Error::Refused(format!(
                "bootstrap token {} is not for authentication",
                self.token.id
            )));
        }
        let mut groups = vec![GROUP.to_string()];
        for g in &self.extra_groups {
            if !g.starts_with("system:bootstrappers:") {
                return Err(Error::Refused(format!(
                    "bootstrap token {}: extra group {g:?} is outside system:bootstrappers:",
                    self.token.id
                )));
            }
            groups.push(g.clone());
        }
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(exp: Option<&str>) -> TokenSecret {
        TokenSecret {
            token: BootstrapToken::parse("abcdef.0123456789abcdef").unwrap(),
            expiration: exp.map(|e| e.parse().unwrap()),
            usages: vec![USAGE_AUTHENTICATION.into(), USAGE_SIGNING.into()],
            extra_groups: vec!["system:bootstrappers:berth:default-node-token".into()],
            description: "test".into(),
        }
    }

    #[test]
    fn data_round_trips_and_authenticates() {
        let s = sample(Some("2030-01-01T00:00:00Z"));
        let back = TokenSecret::from_data("bootstrap-token-abcdef", &s.to_data()).unwrap();
        assert_eq!(back, s);
        let now: Timestamp = "2029-01-01T00:00:00Z".parse().unwrap();
        let groups = back.authenticate("0123456789abcdef", now).unwrap();
        assert_eq!(groups[0], GROUP);
        assert!(matches!(
            back.authenticate("0123456789abcdeX", now),
            Err(Error::Refused(_))
        ));
        let later: Timestamp = "2031-01-01T00:00:00Z".parse().unwrap();
        let e = back.authenticate("0123456789abcdef", later).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn secrets_of_the_wrong_shape_are_refused() {
        let s = sample(None);
        let e = TokenSecret::from_data("bootstrap-token-zzzzzz", &s.to_data()).unwrap_err();
        assert!(e.to_string().contains("must be named"), "{e}");
        let mut bad = s.clone();
        bad.extra_groups = vec!["system:masters".into()];
        let e = bad
            .authenticate("0123456789abcdef", Timestamp::now())
            .unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        let mut signing_only = s;
        signing_only.usages = vec![USAGE_SIGNING.into()];
        assert!(signing_only
            .authenticate("0123456789abcdef", Timestamp::now())
            .is_err());
    }
}
