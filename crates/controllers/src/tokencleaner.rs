//! Expired bootstrap tokens removed, as kube-controller-manager's tokencleaner
//! does: a `bootstrap.kubernetes.io/token` Secret in kube-system whose expiration
//! has passed is deleted (its UID as precondition), so an expired join token is
//! gone, not only refused; one not expired yet is looked at again when it expires.

use std::sync::Arc;
use std::time::Duration;

use berth_join::{secret, TokenSecret};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;

use crate::{Error, Shared};

struct Ctx {
    client: kube::Client,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::TOKEN_CLEANER),
    });
    crate::drive(
        "token-cleaner",
        shared.token_secrets.store(),
        shared.token_secrets.trigger(crate::informer::itself),
        reconcile,
        ctx,
    )
}

/// The informer's settings: bootstrap token Secrets in kube-system only.
pub fn watched() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().fields(&format!("type={}", secret::SECRET_TYPE))
}

/// A bootstrap token Secret's data, decoded.
pub(crate) fn decode(s: &Secret) -> Result<TokenSecret, berth_join::Error> {
    let data = s.data.iter().flatten();
    TokenSecret::from_bytes(
        s.metadata.name.as_deref().unwrap_or_default(),
        data.map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
}

async fn reconcile(s: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = s.metadata.name.clone().unwrap_or_default();
    // A malformed Secret authenticates nobody; it is the user's to fix or remove.
    let Ok(ts) = decode(&s) else {
        return Ok(Action::await_change());
    };
    let Some(expiration) = ts.expiration else {
        return Ok(Action::await_change());
    };
    let now = jiff::Timestamp::now();
    if expiration > now {
        let left = (expiration - now).total(jiff::Unit::Second).unwrap_or(0.0);
        return Ok(Action::requeue(Duration::from_secs_f64(
            left.max(0.0) + 1.0,
        )));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), secret::NAMESPACE);
    let dp = berth_watch::delete_exactly(s.metadata.uid.clone(), None, false);
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(token = %ts.token.id, "deleted an expired bootstrap token"),
        Err(kube::Error::Api(st)) if st.code == 404 || st.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
