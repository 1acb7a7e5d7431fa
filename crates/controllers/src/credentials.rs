//! `--use-service-account-credentials` for a controller manager out of process: each
//! controller's client carries a token of its own ServiceAccount, asked for with the
//! manager's identity through TokenRequest and renewed before it runs out, as
//! kube-controller-manager does. In process no token is needed (the server names
//! the identity itself), so this is only for `berth controller-manager`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderValue;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

use crate::Identities;

/// How long each token is asked for (kube's minimum for TokenRequest is 10 minutes).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How long a failed renewal waits before the next attempt.
const RETRY: Duration = Duration::from_secs(10);

/// When a token that holds for `lifetime` is renewed: at four fifths of its life, as
/// the kubelet renews projected tokens, so that failed attempts have a fifth of it
/// to be retried in.
fn renew_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.8)
}

/// What went wrong making the controllers' clients.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// TokenRequest failed for one ServiceAccount.
    #[error("requesting a token for the ServiceAccount kube-system/{account}: {source} (the controller manager's identity needs create on serviceaccounts/token in kube-system, as system:kube-controller-manager has)")]
    Token {
        /// The ServiceAccount.
        account: String,
        /// Why.
        source: kube::Error,
    },
    /// The API server answered TokenRequest without a usable token.
    #[error("the API server's TokenRequest answer for kube-system/{0} has no usable token")]
    Unusable(String),
    /// A client could not be made from the configuration.
    #[error("making the client of {account}: {source}")]
    Client {
        /// The ServiceAccount.
        account: String,
        /// Why.
        source: kube::Error,
    },
}

/// The bearer header each controller's requests carry, replaced when renewed.
type Bearer = Arc<RwLock<HeaderValue>>;

/// The controllers' clients, one per ServiceAccount of [`berth_pods::identities`],
/// and the tasks that renew their tokens (they run until this is dropped).
pub struct ServiceAccountClients {
    /// What [`crate::Config::identities`] takes.
    pub identities: Identities,
    _renewals: tokio::task::JoinSet<()>,
}

/// Makes the controllers' ServiceAccounts when absent, asks for a token of each with
/// `own` (the manager's client), and builds each controller's client from `base` (the
/// connection to the API server: its URL and CA) with no credentials of the manager
/// but that token.
pub async fn service_account_clients(
    own: kube::Client,
    base: kube::Config,
) -> Result<ServiceAccountClients, CredentialsError> {
    use berth_pods::identities;
    crate::install_service_accounts(&own).await;
    let mut base = base;
    // The manager's own client certificate or token must not come along: the API
    // server would take that identity over the ServiceAccount's.
    base.auth_info = Default::default();
    let mut renewals = tokio::task::JoinSet::new();
    let mut clients: BTreeMap<&'static str, kube::Client> = BTreeMap::new();
    for account in identities::ALL {
        let (value, lifetime) = first_token(&own, account).await?;
        let bearer: Bearer = Arc::new(RwLock::new(value));
        let on_request = bearer.clone();
        let stamp = move |mut req: http::Request<kube::client::Body>| {
            let value = on_request
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            req.headers_mut().insert(http::header::AUTHORIZATION, value);
            req
        };
        let client = kube::client::ClientBuilder::try_from(base.clone())
            .map_err(|source| CredentialsError::Client {
                account: account.to_string(),
                source,
            })?
            .with_layer(&tower::util::MapRequestLayer::new(stamp))
            .build();
        clients.insert(account, client);
        renewals.spawn(renew(own.clone(), account, bearer, lifetime));
    }
    let fallback = own;
    let identities = Identities(Arc::new(move |account: &str| {
        clients.get(account).cloned().unwrap_or_else(|| {
            tracing::warn!(
                account,
                "no ServiceAccount client for this controller: it acts as the manager"
            );
            fallback.clone()
        })
    }));
    Ok(ServiceAccountClients {
        identities,
        _renewals: renewals,
    })
}

/// How many times the first token of an account is asked for (the API server may be
/// starting too) before the manager gives up.
const FIRST_ATTEMPTS: u32 = 30;

/// `account`'s first token, asked for again every [`RETRY`] / 5 while it fails.
async fn first_token(
    own: &kube::Client,
    account: &str,
) -> Result<(HeaderValue, Duration), CredentialsError> {
    let mut attempt = 1;
    loop {
        match request(own, account).await {
            Ok(t) => return Ok(t),
            Err(e) if attempt < FIRST_ATTEMPTS => {
                if attempt == 1 {
                    tracing::warn!(error = %e, "a controller's first token; retrying");
                }
                attempt += 1;
                tokio::time::sleep(RETRY / 5).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Renews `account`'s token at [`renew_after`] its life; a failure is retried every
/// [`RETRY`] while the old token still holds, and an account deleted meanwhile is
/// made again (as kube-controller-manager's client builder does).
async fn renew(own: kube::Client, account: &'static str, bearer: Bearer, lifetime: Duration) {
    let mut lifetime = lifetime;
    loop {
        tokio::time::sleep(renew_after(lifetime)).await;
        loop {
            match request(&own, account).await {
                Ok((value, held)) => {
                    *bearer
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = value;
                    lifetime = held;
                    tracing::debug!(account, "renewed the controller's token");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing a controller's token; retrying");
                    if matches!(&e, CredentialsError::Token { source: kube::Error::Api(s), .. } if s.code == 404)
                    {
                        crate::install_service_accounts(&own).await;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// A token of kube-system/`account` as an Authorization header, and how long it
/// holds (what the API server granted: it may differ from what was asked).
async fn request(
    own: &kube::Client,
    account: &str,
) -> Result<(HeaderValue, Duration), CredentialsError> {
    let api: Api<ServiceAccount> = Api::namespaced(own.clone(), berth_pods::identities::NAMESPACE);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api
        .create_token_request(account, &Default::default(), &req)
        .await
        .map_err(|source| CredentialsError::Token {
            account: account.to_string(),
            source,
        })?;
    let unusable = || CredentialsError::Unusable(account.to_string());
    let status = answer.status.ok_or_else(unusable)?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", status.token))
        .ok()
        .filter(|_| !status.token.is_empty())
        .ok_or_else(unusable)?;
    value.set_sensitive(true);
    let left = status.expiration_timestamp.0.as_second() - jiff::Timestamp::now().as_second();
    let lifetime = Duration::from_secs(left.clamp(60, TOKEN_LIFETIME.as_secs() as i64) as u64);
    Ok((value, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_with_a_fifth_of_their_life_left() {
        assert_eq!(renew_after(TOKEN_LIFETIME), Duration::from_secs(2880));
        assert_eq!(
            renew_after(Duration::from_secs(600)),
            Duration::from_secs(480)
        );
    }
}
