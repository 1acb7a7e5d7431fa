//! cluster-info signed by bootstrap tokens, as kube-controller-manager's
//! bootstrapsigner does: for every bootstrap token Secret with the `signing` usage,
//! not expired and not being deleted, `kube-public/cluster-info` carries the detached
//! JWS of its kubeconfig made with the token (`jws-kubeconfig-ID`); signatures of
//! tokens that are gone, expired or no longer signing are removed. A node given
//! bare `ID.SECRET` credentials trusts the CA in cluster-info on that signature.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_join::discovery;
use berth_join::secret::USAGE_SIGNING;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::{Error, Shared};

struct Ctx {
    client: kube::Client,
    secrets: Store<Secret>,
}

/// The informer's settings: cluster-info alone, in kube-public.
pub fn watched() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default()
        .fields(&format!("metadata.name={}", discovery::CLUSTER_INFO))
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::BOOTSTRAP_SIGNER),
        secrets: shared.token_secrets.store(),
    });
    // Any token's change may change the signatures: cluster-info is looked at again.
    let tokens = shared.token_secrets.trigger(|_| {
        vec![ObjectRef::<ConfigMap>::new(discovery::CLUSTER_INFO).within(discovery::NAMESPACE)]
    });
    let itself = shared.cluster_info.trigger(crate::informer::itself);
    crate::drive(
        "bootstrap-signer",
        shared.cluster_info.store(),
        futures_util::stream::select(itself, tokens),
        reconcile,
        ctx,
    )
}

/// The signatures cluster-info should carry for `content`, from the tokens in
/// `secrets` at `now`, and when the soonest of those tokens expires.
fn signatures(
    content: &str,
    secrets: &[Arc<Secret>],
    now: jiff::Timestamp,
) -> (BTreeMap<String, String>, Option<jiff::Timestamp>) {
    let mut want = BTreeMap::new();
    let mut soonest: Option<jiff::Timestamp> = None;
    for s in secrets {
        if s.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // A malformed Secret signs nothing, as it authenticates nobody.
        let Ok(ts) = crate::tokencleaner::decode(s) else {
            continue;
        };
        if !ts.usages.iter().any(|u| u == USAGE_SIGNING) || ts.expired(now) {
            continue;
        }
        if let Some(e) = ts.expiration {
            soonest = Some(soonest.map_or(e, |x| x.min(e)));
        }
        match discovery::sign(content, &ts.token) {
            Ok(jws) => {
                want.insert(discovery::signature_key(&ts.token.id), jws);
            }
            Err(e) => tracing::warn!(token = %ts.token.id, "signing cluster-info: {e}"),
        }
    }
    (want, soonest)
}

async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let data = cm.data.clone().unwrap_or_default();
    // Without its kubeconfig there is nothing to sign (the API server writes it).
    let Some(content) = data.get(discovery::KUBECONFIG_KEY) else {
        return Ok(Action::await_change());
    };
    let now = jiff::Timestamp::now();
    let (want, soonest) = signatures(content, &ctx.secrets.state(), now);
    let have: BTreeMap<String, String> = data
        .iter()
        .filter(|(k, _)| k.starts_with(discovery::SIGNATURE_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if have != want {
        let mut updated = (*cm).clone();
        let mut data: BTreeMap<String, String> = data
            .into_iter()
            .filter(|(k, _)| !k.starts_with(discovery::SIGNATURE_PREFIX))
            .collect();
        data.extend(want.clone());
        updated.data = Some(data);
        // Replaced at the revision read: a concurrent change makes this a conflict,
        // and the key is tried again on what is then current.
        Api::<ConfigMap>::namespaced(ctx.client.clone(), discovery::NAMESPACE)
            .replace(discovery::CLUSTER_INFO, &PostParams::default(), &updated)
            .await?;
        tracing::info!(
            signatures = want.len(),
            "cluster-info signed by the bootstrap tokens with the signing usage"
        );
    }
    // An expiring token's signature goes when it expires, even before the token
    // cleaner deletes its Secret.
    Ok(match soonest {
        Some(e) => {
            let left = (e - now).total(jiff::Unit::Second).unwrap_or(0.0);
            Action::requeue(Duration::from_secs_f64(left.max(0.0) + 1.0))
        }
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_join::secret::{TokenSecret, USAGE_AUTHENTICATION};
    use berth_join::BootstrapToken;
    use k8s_openapi::ByteString;

    fn secret(id: &str, usages: &[&str], expiration: Option<jiff::Timestamp>) -> Arc<Secret> {
        let ts = TokenSecret {
            token: BootstrapToken::parse(&format!("{id}.0123456789abcdef")).unwrap(),
            expiration,
            usages: usages.iter().map(|u| u.to_string()).collect(),
            extra_groups: vec![],
            description: String::new(),
        };
        Arc::new(Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(berth_join::secret::secret_name(id)),
                namespace: Some(berth_join::secret::NAMESPACE.into()),
                ..Default::default()
            },
            type_: Some(berth_join::secret::SECRET_TYPE.into()),
            data: Some(
                ts.to_data()
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        })
    }

    #[test]
    fn only_live_signing_tokens_sign() {
        // Whole seconds: a Secret's expiration has no finer ones.
        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
        let later = now + jiff::SignedDuration::from_secs(3600);
        let earlier = now - jiff::SignedDuration::from_secs(1);
        let mut deleting = (*secret("dddddd", &[USAGE_SIGNING], None)).clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        let secrets = vec![
            secret("aaaaaa", &[USAGE_AUTHENTICATION, USAGE_SIGNING], None),
            secret("bbbbbb", &[USAGE_SIGNING], Some(later)),
            secret("cccccc", &[USAGE_AUTHENTICATION], None),
            secret("eeeeee", &[USAGE_SIGNING], Some(earlier)),
            Arc::new(deleting),
        ];
        let (want, soonest) = signatures("content", &secrets, now);
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            ["jws-kubeconfig-aaaaaa", "jws-kubeconfig-bbbbbb"]
        );
        assert_eq!(soonest, Some(later));
        let t = BootstrapToken::parse("aaaaaa.0123456789abcdef").unwrap();
        discovery::verify("content", &want["jws-kubeconfig-aaaaaa"], &t).unwrap();
    }
}
