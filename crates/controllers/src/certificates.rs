//! Certificate signing requests, as kube-controller-manager's csrapproving,
//! csrsigning and csrcleaner controllers do it:
//! - **approving**: a node client certificate (`system:node:NAME` in `system:nodes`,
//!   client auth only, no alternative names) for the kubelet client signer is approved
//!   when a SubjectAccessReview says its requester may create
//!   `certificatesigningrequests/nodeclient` (bootstrap tokens, through the binding
//!   berth installs) or, for its own name, `selfnodeclient` (renewal). berth also
//!   approves a kubelet serving certificate a node asks for itself, when every name
//!   in it is the node's name or one of its Node's addresses.
//! - **signing**: approved requests for the kubelet client, kubelet serving and
//!   kube-apiserver-client signers are signed with the cluster CA, for
//!   `spec.expirationSeconds` or the signer's default duration;
//!   a request its signer will not sign gets a Failed condition saying why.
//! - **cleaning**: issued, denied and failed requests go after an hour, pending ones
//!   after a day (kube's).

use std::sync::Arc;
use std::time::Duration;

use berth_join::identity as ni;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;

use crate::{Error, Shared};

/// The CAs the signer signs with, and for how long by default (kube's
/// --cluster-signing-duration, a year).
#[derive(Clone)]
pub struct Signer {
    /// The cluster CA certificate (PEM): client certificates.
    pub ca_cert: String,
    /// The cluster CA key (PEM).
    pub ca_key: String,
    /// The nodes' serving CA (certificate, key; PEM), kube's
    /// --cluster-signing-kubelet-serving-*-file: kept apart so a node's serving
    /// certificate is never one the API server's clients trust. None: not signed.
    pub kubelet_serving: Option<(String, String)>,
    /// How long a certificate is valid when the request does not say.
    pub duration: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(cluster CA, {:?})", self.duration)
    }
}

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
    signer: Option<Signer>,
}

/// How long finished requests are kept.
const FINISHED_TTL: Duration = Duration::from_secs(3600);
/// How long a request may wait for approval.
const PENDING_TTL: Duration = Duration::from_secs(24 * 3600);

/// The controller, ready to run once the shared informers run.
pub fn controller(
    shared: &Shared,
    signer: Option<Signer>,
) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::CERTIFICATE),
        nodes: shared.nodes.store(),
        signer,
    });
    crate::drive(
        "certificate",
        shared.csrs.store(),
        shared.csrs.trigger(crate::informer::itself),
        reconcile,
        ctx,
    )
}

fn has(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
}

fn issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

fn age(csr: &CertificateSigningRequest) -> Duration {
    let created = csr
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(jiff::Timestamp::now);
    let secs = (jiff::Timestamp::now() - created)
        .total(jiff::Unit::Second)
        .unwrap_or(0.0);
    Duration::from_secs_f64(secs.max(0.0))
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let finished = issued(&csr) || has(&csr, "Denied") || has(&csr, "Failed");
    let ttl = if finished { FINISHED_TTL } else { PENDING_TTL };
    let age = age(&csr);
    if age >= ttl {
        tracing::info!(csr = %name, "removing a certificate signing request past its time");
        match api.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    let recheck = Action::requeue(ttl - age);
    if finished {
        return Ok(recheck);
    }
    if !has(&csr, "Approved") {
        if let Some(message) = approval(&csr, &ctx).await? {
            let cond = condition("Approved", "AutoApproved", &message);
            let mut new = (*csr).clone();
            new.status
                .get_or_insert_with(Default::default)
                .conditions
                .get_or_insert_with(Vec::new)
                .push(cond);
            api.replace_subresource("approval", &name, &PostParams::default(), &new)
                .await?;
            tracing::info!(csr = %name, "{message}");
        }
        return Ok(recheck);
    }
    let Some(signer) = &ctx.signer else {
        return Ok(recheck);
    };
    let mut new = (*csr).clone();
    match sign(&csr, signer) {
        None => return Ok(recheck),
        Some(Ok(pem)) => {
            new.status.get_or_insert_with(Default::default).certificate =
                Some(k8s_openapi::ByteString(pem.into_bytes()));
            tracing::info!(csr = %name, signer = %csr.spec.signer_name, "certificate issued");
        }
        Some(Err(why)) => {
            new.status
                .get_or_insert_with(Default::default)
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("Failed", "SignerValidationFailure", &why));
            tracing::info!(csr = %name, "not signed: {why}");
        }
    }
    api.replace_status(&name, &PostParams::default(), &new)
        .await?;
    Ok(recheck)
}

fn condition(t: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: t.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn usages(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.spec.usages.clone().unwrap_or_default()
}

/// Whether the usages are `needed` plus any of `optional`, nothing else.
fn usages_are(csr: &CertificateSigningRequest, needed: &str, optional: &[&str]) -> bool {
    let u = usages(csr);
    u.iter().any(|x| x == needed)
        && u.iter()
            .all(|x| x == needed || optional.contains(&x.as_str()))
}

const KEY_USAGES: &[&str] = &["digital signature", "key encipherment"];

/// Why berth approves the request, if it does.
async fn approval(csr: &CertificateSigningRequest, ctx: &Ctx) -> Result<Option<String>, Error> {
    let Ok(req) = berth_join::csr::parse(&csr.spec.request.0) else {
        return Ok(None);
    };
    let node_subject =
        req.organizations == [ni::NODES_GROUP] && ni::node_of_user(&req.common_name).is_some();
    if !node_subject {
        return Ok(None);
    }
    let requester = csr.spec.username.clone().unwrap_or_default();
    match csr.spec.signer_name.as_str() {
        ni::SIGNER_KUBELET_CLIENT => {
            let plain = req.dns_names.is_empty() && req.ip_addresses.is_empty() && !req.other_names;
            if !plain || !usages_are(csr, "client auth", KEY_USAGES) {
                return Ok(None);
            }
            let (sub, message) = if req.common_name == requester {
                (
                    "selfnodeclient",
                    "Auto approving self kubelet client certificate after SubjectAccessReview.",
                )
            } else {
                (
                    "nodeclient",
                    "Auto approving kubelet client certificate after SubjectAccessReview.",
                )
            };
            Ok(may_create(ctx, csr, sub)
                .await?
                .then(|| message.to_string()))
        }
        ni::SIGNER_KUBELET_SERVING => {
            if req.common_name != requester
                || req.other_names
                || !usages_are(csr, "server auth", KEY_USAGES)
            {
                return Ok(None);
            }
            let node = ni::node_of_user(&requester).unwrap_or_default();
            let Some(n) = ctx
                .nodes
                .get(&kube::runtime::reflector::ObjectRef::new(node))
            else {
                return Ok(None);
            };
            let addresses: Vec<String> = n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .map(|a| a.address.clone())
                .collect();
            let names_ok = req
                .dns_names
                .iter()
                .all(|d| d == node || addresses.contains(d));
            let ips_ok = req
                .ip_addresses
                .iter()
                .all(|ip| addresses.contains(&ip.to_string()));
            let some = !req.dns_names.is_empty() || !req.ip_addresses.is_empty();
            Ok((names_ok && ips_ok && some).then(|| {
                "Auto approving kubelet serving certificate: every name is the node's own."
                    .to_string()
            }))
        }
        _ => Ok(None),
    }
}

/// A SubjectAccessReview: may the requester create `certificatesigningrequests/SUB`?
async fn may_create(ctx: &Ctx, csr: &CertificateSigningRequest, sub: &str) -> Result<bool, Error> {
    let s = &csr.spec;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: s.username.clone(),
            uid: s.uid.clone(),
            groups: s.groups.clone(),
            extra: s.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(sub.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = Api::<SubjectAccessReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(out.status.is_some_and(|st| st.allowed))
}

/// The certificate for an approved request (None: not this signer's to sign), or why
/// the signer refuses it.
fn sign(csr: &CertificateSigningRequest, signer: &Signer) -> Option<Result<String, String>> {
    let name = csr.spec.signer_name.as_str();
    if ![
        ni::SIGNER_KUBELET_CLIENT,
        ni::SIGNER_KUBELET_SERVING,
        ni::SIGNER_CLIENT,
    ]
    .contains(&name)
    {
        return None;
    }
    let req = match berth_join::csr::parse(&csr.spec.request.0) {
        Ok(r) => r,
        Err(e) => return Some(Err(e.to_string())),
    };
    // Each signer's constraints, as kube's signers check them.
    let allowed = match name {
        ni::SIGNER_KUBELET_CLIENT => {
            if req.organizations != [ni::NODES_GROUP]
                || ni::node_of_user(&req.common_name).is_none()
            {
                Err("subject must be CN=system:node:NAME, O=system:nodes")
            } else if !usages_are(csr, "client auth", KEY_USAGES) {
                Err("usages must be client auth, digital signature and key encipherment")
            } else {
                Ok(())
            }
        }
        ni::SIGNER_KUBELET_SERVING => {
            if req.organizations != [ni::NODES_GROUP]
                || ni::node_of_user(&req.common_name).is_none()
            {
                Err("subject must be CN=system:node:NAME, O=system:nodes")
            } else if !usages_are(csr, "server auth", KEY_USAGES) {
                Err("usages must be server auth, digital signature and key encipherment")
            } else if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
                Err("at least one DNS name or IP address is required")
            } else {
                Ok(())
            }
        }
        _ => {
            if !usages_are(csr, "client auth", KEY_USAGES) {
                Err("usages must be client auth, digital signature and key encipherment")
            } else {
                Ok(())
            }
        }
    };
    if let Err(why) = allowed {
        return Some(Err(format!("invalid request for signer {name}: {why}")));
    }
    let duration = csr
        .spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .map_or(signer.duration, |d| d.min(signer.duration));
    let (ca_cert, ca_key) = if name == ni::SIGNER_KUBELET_SERVING {
        match &signer.kubelet_serving {
            Some((c, k)) => (c, k),
            None => return None,
        }
    } else {
        (&signer.ca_cert, &signer.ca_key)
    };
    Some(
        berth_join::csr::sign(&csr.spec.request.0, &usages(csr), ca_cert, ca_key, duration)
            .map_err(|e| e.to_string()),
    )
}
