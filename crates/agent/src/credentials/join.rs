//! Joining with a token: the CA is fetched from the server's `/cacerts` without
//! trusting it, and trusted only if its SHA-256 is the one the join token carries
//! (or, given bare `ID.SECRET` credentials, read from the public cluster-info and
//! trusted only if the token's signature of it verifies); then a
//! CertificateSigningRequest for `system:node:NAME`, authenticated by the
//! token's bootstrap credentials, is approved and signed by the controller manager,
//! and its certificate becomes the node's client identity.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_join::identity as ni;
use berth_join::{BootstrapToken, JoinCredentials};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, PostParams};

use super::client::{self, Identity};
use super::{write_private, Files};
use crate::error::{Error, Result};

/// A node's working credentials.
pub struct Credentials {
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// The client certificate presented (replaced on renewal).
    pub identity: Arc<Identity>,
    /// A client acting as the node.
    pub client: kube::Client,
}

fn config(msg: String) -> Error {
    Error::Config(msg)
}

/// The most read from a server not trusted yet: more than a CA bundle or cluster-info
/// can be.
const MAX_UNTRUSTED: usize = 1 << 20;

/// The body of `GET url` from a server not trusted yet: its certificate unchecked,
/// and no more read than `limit` bytes; `what` names it in errors.
async fn fetch_untrusted(url: &str, what: &str, limit: usize) -> Result<Vec<u8>> {
    // reqwest uses the process's rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Not verified here: the caller checks what comes back against the token.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        // Asked of the server given, not wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| config(format!("an HTTP client: {e}")))?;
    let resp = http.get(url).send().await.map_err(|e| {
        config(format!(
            "fetching {what} from {url}: {e} (is the server up, and --server right?)"
        ))
    })?;
    if !resp.status().is_success() {
        return Err(config(format!(
            "fetching {what} from {url}: {} (is this a berth server{}?)",
            resp.status(),
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                ", and does it serve anonymous requests (--anonymous-auth)"
            } else {
                ""
            }
        )));
    }
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| config(format!("reading {what} from {url}: {e}")))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(config(format!(
                "{what} from {url} is over {} KiB: not what a server sends",
                limit / 1024
            )));
        }
    }
    Ok(body)
}

/// The CA bundle the server at `server` serves, checked against `expected_hash`.
pub async fn fetch_ca(server: &str, expected_hash: &str) -> Result<String> {
    let url = format!("{}/cacerts", server.trim_end_matches('/'));
    let body = fetch_untrusted(&url, "the cluster CA", MAX_UNTRUSTED).await?;
    let got = berth_join::ca_hash(&body);
    if got != expected_hash {
        return Err(config(format!(
            "the server at {server} has a CA whose SHA-256 is {got}, but the join token expects {expected_hash}: \
             the token belongs to another cluster, or something between this node and the server is answering for it; \
             nothing was trusted or sent"
        )));
    }
    String::from_utf8(body).map_err(|_| config(format!("the CA from {url} is not PEM text")))
}

/// The cluster CA from the server's public cluster-info, trusted because its
/// kubeconfig carries `token`'s signature (kubeadm's token discovery): for a join
/// with the bare `ID.SECRET`, which holds no CA hash.
pub async fn discover_ca(server: &str, token: &BootstrapToken) -> Result<String> {
    use berth_join::discovery;
    let url = format!(
        "{}/api/v1/namespaces/{}/configmaps/{}",
        server.trim_end_matches('/'),
        discovery::NAMESPACE,
        discovery::CLUSTER_INFO
    );
    let what = format!("{}/{}", discovery::NAMESPACE, discovery::CLUSTER_INFO);
    let body = fetch_untrusted(&url, &what, MAX_UNTRUSTED).await?;
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_slice(&body)
        .map_err(|e| config(format!("{what} from {url} is not a ConfigMap: {e}")))?;
    let data = cm.data.unwrap_or_default();
    let content = data.get(discovery::KUBECONFIG_KEY).ok_or_else(|| {
        config(format!(
            "{what} at {server} has no {}: is this a berth server?",
            discovery::KUBECONFIG_KEY
        ))
    })?;
    let jws = data
        .get(&discovery::signature_key(&token.id))
        .ok_or_else(|| {
            config(format!(
            "{what} at {server} holds no signature for token {}: the token does not exist, has \
             expired, or lacks the signing usage (`berth token create` makes tokens with it); \
             or join with the whole join token (K10<hash>::{}.<secret>)",
            token.id, token.id
        ))
        })?;
    discovery::verify(content, jws, token).map_err(|e| config(e.to_string()))?;
    discovery::ca_of(content).map_err(|e| config(e.to_string()))
}

/// A certificate a node asks for.
pub(crate) struct Wanted<'a> {
    /// The signer.
    pub signer: &'a str,
    /// Its usages.
    pub usages: &'a [&'a str],
    /// The node (the subject is system:node:NODE in system:nodes).
    pub node: &'a str,
    /// DNS names.
    pub dns: &'a [String],
    /// IP addresses.
    pub ips: &'a [IpAddr],
}

/// Asks the cluster for a certificate through a CertificateSigningRequest made with
/// `client` (`bootstrap`: a join token's), and waits up to `wait` for it: returns
/// (certificate PEM, key PEM).
pub(crate) async fn obtain(
    client: &kube::Client,
    w: Wanted<'_>,
    wait: Duration,
    bootstrap: bool,
) -> Result<(String, String)> {
    let Wanted {
        signer,
        usages,
        node,
        dns,
        ips,
    } = w;
    let (request, key) =
        berth_join::csr::request(&ni::node_user(node), &[ni::NODES_GROUP], dns, ips)
            .map_err(|e| Error::Internal(format!("making a certificate request: {e}")))?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let made = api.create(&PostParams::default(), &csr).await.map_err(|e| match &e {
        kube::Error::Api(s) if s.code == 401 && bootstrap => config(
            "the server refused the join token (401 Unauthorized): it is wrong, has expired or was deleted; \
             make a new one on a server with `berth token create`"
                .into(),
        ),
        kube::Error::Api(s) if s.code == 401 => config(
            "the server refused the node's certificate (401 Unauthorized): it has expired or is from another cluster; \
             remove STATE_ROOT/agent/pki and join again with a token"
                .into(),
        ),
        kube::Error::Api(s) if s.code == 403 => config(format!(
            "the server refused the certificate request (403): {}",
            s.message
        )),
        _ => Error::Api("creating a certificate signing request".into(), Box::new(e)),
    })?;
    let name = made.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer, "certificate requested; waiting for approval and signing");
    let done = |c: Option<&CertificateSigningRequest>| {
        let Some(c) = c else { return true };
        let st = c.status.as_ref();
        st.and_then(|s| s.certificate.as_ref())
            .is_some_and(|x| !x.0.is_empty())
            || st.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                cs.iter()
                    .any(|x| x.type_ == "Denied" || x.type_ == "Failed")
            })
    };
    let cond = kube::runtime::wait::await_condition(api.clone(), &name, done);
    let got = match tokio::time::timeout(wait, cond).await {
        Err(_) => {
            return Err(config(format!(
                "the certificate request {name} was not signed within {}s: is the controller manager running? \
                 (an administrator can approve it: kubectl certificate approve {name})",
                wait.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(config(format!("waiting for certificate request {name}: {e}"))),
        Ok(Ok(c)) => c,
    };
    let Some(c) = got else {
        return Err(config(format!(
            "the certificate request {name} was deleted before it was signed"
        )));
    };
    let st = c.status.unwrap_or_default();
    if let Some(refusal) = st
        .conditions
        .iter()
        .flatten()
        .find(|x| x.type_ == "Denied" || x.type_ == "Failed")
    {
        return Err(config(format!(
            "the certificate request {name} was {}: {}",
            refusal.type_.to_lowercase(),
            refusal.message.clone().unwrap_or_default()
        )));
    }
    let cert =
        String::from_utf8(st.certificate.map(|c| c.0).unwrap_or_default()).map_err(|_| {
            config(format!(
                "certificate request {name}: the certificate is not PEM text"
            ))
        })?;
    Ok((cert, key))
}

/// Usages of a kubelet client certificate.
pub const CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

/// The node's credentials under `files`: those kept from before when they are the
/// node's, unexpired and (given a token) from the token's cluster; else new ones,
/// got by joining with `token`.
pub async fn load_or_join(
    server: &str,
    token: Option<&JoinCredentials>,
    node: &str,
    files: &Files,
) -> Result<Credentials> {
    if let Some(c) = load(server, token, node, files)? {
        tracing::info!(dir = %files.dir().display(), "using the node's certificate from before");
        return Ok(c);
    }
    let Some(token) = token else {
        return Err(config(format!(
            "no usable node certificate in {} and no join token: give --token (or --token-file) from the server's DATA_DIR/token or `berth token create`",
            files.dir().display()
        )));
    };
    let started = std::time::Instant::now();
    let ca = match token.ca_hash() {
        Some(hash) => fetch_ca(server, hash).await?,
        None => {
            let ca = discover_ca(server, token.token()).await?;
            tracing::warn!(
                token = %token.token().id,
                "the cluster CA was trusted on the signature made with the join token's secret: anyone \
                 holding this token could have made it; the whole join token (K10<CA hash>::...) pins the CA itself"
            );
            ca
        }
    };
    let bootstrap = client::with_token(server, &ca, &token.token().to_string())?;
    let wanted = Wanted {
        signer: ni::SIGNER_KUBELET_CLIENT,
        usages: CLIENT_USAGES,
        node,
        dns: &[],
        ips: &[],
    };
    let (cert, key) = obtain(&bootstrap, wanted, Duration::from_secs(300), true).await?;
    save(files, server, node, &ca, &cert, &key)?;
    tracing::info!(
        node,
        took_ms = started.elapsed().as_millis() as u64,
        "joined the cluster: node certificate issued"
    );
    let (client, identity) = client::with_cert(server, &ca, client::certified_key(&cert, &key)?)?;
    Ok(Credentials {
        client,
        ca_pem: ca,
        identity,
    })
}

fn io(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Io(format!("{}", path.display()), e)
}

/// Writes the CA, the client certificate and key, and a kubeconfig naming them.
pub(crate) fn save(
    files: &Files,
    server: &str,
    node: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> Result<()> {
    std::fs::create_dir_all(files.dir()).map_err(|e| io(files.dir(), e))?;
    write_private(&files.ca(), ca).map_err(|e| io(&files.ca(), e))?;
    // The key first: a certificate is never beside another key.
    write_private(&files.client_key(), key).map_err(|e| io(&files.client_key(), e))?;
    write_private(&files.client_cert(), cert).map_err(|e| io(&files.client_cert(), e))?;
    let user = ni::node_user(node);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}\n    certificate-authority: {}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: {user}\ncurrent-context: berth\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\n",
        files.ca().display(),
        files.client_cert().display(),
        files.client_key().display(),
    );
    write_private(&files.kubeconfig(), &kubeconfig).map_err(|e| io(&files.kubeconfig(), e))
}

/// The credentials kept under `files`, if they will do.
fn load(
    server: &str,
    token: Option<&JoinCredentials>,
    node: &str,
    files: &Files,
) -> Result<Option<Credentials>> {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    let (Some(ca), Some(cert), Some(key)) = (
        read(files.ca()),
        read(files.client_cert()),
        read(files.client_key()),
    ) else {
        return Ok(None);
    };
    // Bare credentials name no CA: once joined, the node trusts the CA it kept, as a
    // kubeadm-joined node does (looking again would let anyone holding the token,
    // which every node shares, point it elsewhere).
    if token
        .and_then(JoinCredentials::ca_hash)
        .is_some_and(|h| berth_join::ca_hash(ca.as_bytes()) != h)
    {
        tracing::info!(
            "the kept node certificate is from another cluster than the token's; joining again"
        );
        return Ok(None);
    }
    let Ok((_, not_after)) = berth_join::csr::validity(&cert) else {
        return Ok(None);
    };
    if not_after <= jiff::Timestamp::now().as_second() + 5 {
        tracing::info!("the kept node certificate has expired; joining again");
        return Ok(None);
    }
    let subject_ok = x509_subject_cn(&cert).as_deref() == Some(ni::node_user(node).as_str());
    if !subject_ok {
        tracing::info!("the kept node certificate is another node's; joining again");
        return Ok(None);
    }
    let (client, identity) = client::with_cert(server, &ca, client::certified_key(&cert, &key)?)?;
    Ok(Some(Credentials {
        client,
        ca_pem: ca,
        identity,
    }))
}

/// The common name of a PEM certificate.
fn x509_subject_cn(cert_pem: &str) -> Option<String> {
    berth_join::csr::subject_common_name(cert_pem).ok()
}
