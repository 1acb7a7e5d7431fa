//! A client of the OCI distribution protocol: pull and push of images by tag or digest,
//! with HTTP basic and bearer-token auth, TLS with per-registry CAs, plain HTTP for
//! local registries, retries with backoff on 429/5xx and dropped connections, resumed
//! blob downloads, concurrent layer transfers, and cross-repository blob mounts.
//!
//! Written on reqwest because no maintained Rust crate covers the protocol together with
//! docker-compatible credential files and certs.d directories.

pub mod auth;
mod pull;
mod push;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::Value;

pub use auth::Credentials;
pub use pull::Pulled;

use crate::error::{Error, Result};

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Directories of per-registry CA certificates (`<dir>/<host:port>/*.crt`).
    pub cert_dirs: Vec<PathBuf>,
    /// Directories whose `*.crt` are trusted for every registry this client reaches
    /// (`--cert-dir`).
    pub extra_ca_dirs: Vec<PathBuf>,
    /// Verify TLS certificates; when false, any certificate is accepted and plain HTTP
    /// is allowed for every registry (podman's `--tls-verify=false`).
    pub tls_verify: bool,
    /// Registries that may be reached over plain HTTP (besides localhost and 127.0.0.0/8,
    /// which docker and berth always allow).
    pub insecure_registries: Vec<String>,
    /// The credentials file (`berth login` writes it).
    pub auth_file: PathBuf,
    /// Credentials to use instead of the file's (`--creds user:pass`).
    pub credentials: Option<Credentials>,
    /// Tries per request before giving up on 429/5xx/connection errors.
    pub attempts: u32,
    /// First retry delay (doubled per retry, capped at 5 s).
    pub backoff: Duration,
    /// Blobs transferred at once.
    pub concurrency: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            cert_dirs: tls::default_cert_dirs(),
            extra_ca_dirs: Vec::new(),
            tls_verify: true,
            insecure_registries: std::env::var("BERTH_INSECURE_REGISTRIES")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            auth_file: auth::default_auth_file(),
            credentials: None,
            attempts: 5,
            backoff: Duration::from_millis(200),
            concurrency: 4,
        }
    }
}

/// A registry client; cheap to share.
pub struct Client {
    opts: RegistryOptions,
    endpoints: tokio::sync::Mutex<HashMap<String, Arc<Endpoint>>>,
}

/// One registry as reached: its base URL, HTTP client and auth state.
struct Endpoint {
    registry: String,
    base: String,
    http: reqwest::Client,
    creds: Option<Credentials>,
    basic: AtomicBool,
    tokens: Mutex<HashMap<String, String>>,
}

fn is_local(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Which request is retried and how often.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

impl Client {
    /// A client with these options.
    pub fn new(opts: RegistryOptions) -> Client {
        Client {
            opts,
            endpoints: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The options.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    async fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>> {
        let mut eps = self.endpoints.lock().await;
        if let Some(e) = eps.get(registry) {
            return Ok(e.clone());
        }
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let mut cas = tls::registry_cas(&self.opts.cert_dirs, registry)?;
        for d in &self.opts.extra_ca_dirs {
            cas.extend(tls::dir_cas(d)?);
        }
        let tls = tls::client_config(&cas, self.opts.tls_verify)?;
        let http = http_client(tls).map_err(|e| {
            Error::Registry(format!(
                "registry {registry}: HTTP client setup: {}",
                chain(&e)
            ))
        })?;
        let plain_ok = !self.opts.tls_verify
            || is_local(registry)
            || self.opts.insecure_registries.iter().any(|r| r == registry);
        let mut base = format!("https://{host}");
        if plain_ok {
            // Docker's rule for insecure registries: HTTPS if it answers, else HTTP.
            let probe = http
                .get(format!("{base}/v2/"))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Err(e) = probe {
                // A certificate problem is reported, not silently downgraded to HTTP.
                let cert = chain(&e).to_ascii_lowercase().contains("certificate");
                if (e.is_connect() || e.is_request()) && !cert {
                    base = format!("http://{host}");
                }
            }
        }
        let creds = match &self.opts.credentials {
            Some(c) => Some(c.clone()),
            None => auth::lookup(&self.opts.auth_file, registry)?,
        };
        let ep = Arc::new(Endpoint {
            registry: registry.to_string(),
            base,
            http,
            creds,
            basic: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
        });
        eps.insert(registry.to_string(), ep.clone());
        Ok(ep)
    }

    fn backoff(&self, attempt: u32, resp: Option<&Response>) -> Duration {
        let retry_after = resp
            .and_then(|r| r.headers().get(reqwest::header::RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(10)));
        let exp = self
            .opts
            .backoff
            .saturating_mul(1 << attempt.min(5))
            .min(Duration::from_secs(5));
        retry_after.unwrap_or(exp)
    }

    /// Sends a request built by `make` (called again for every try), answering auth
    /// challenges and retrying 429/5xx and connection failures with backoff. Returns the
    /// response whatever its status, except for the auth and retry statuses handled here.
    async fn send(
        &self,
        ep: &Endpoint,
        scope: &str,
        idempotent: Idempotent,
        make: &(dyn Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder> + Sync),
    ) -> Result<Response> {
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let mut req = make(&ep.http)?.build().map_err(|e| {
                Error::Registry(format!(
                    "registry {}: bad request: {}",
                    ep.registry,
                    chain(&e)
                ))
            })?;
            // Credentials only go to the registry itself (scheme, host and port), never to
            // a Location elsewhere; reqwest also drops them on cross-host redirects.
            if same_origin(req.url(), &ep.base) {
                let token = ep
                    .tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(scope)
                    .cloned();
                let value = match (token, ep.basic.load(Ordering::Relaxed), &ep.creds) {
                    (Some(t), _, _) => Some(format!("Bearer {t}")),
                    (None, true, Some(c)) => Some(auth::basic_header(c)),
                    _ => None,
                };
                if let Some(v) = value.and_then(|v| reqwest::header::HeaderValue::from_str(&v).ok())
                {
                    req.headers_mut().insert(reqwest::header::AUTHORIZATION, v);
                }
            }
            let resp = match ep.http.execute(req).await {
                Ok(r) => r,
                Err(e) => {
                    attempt += 1;
                    // A request that must not be repeated (an upload into a single-use
                    // session) is never re-sent here; its caller starts over instead.
                    let retryable = idempotent == Idempotent::Yes
                        && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body());
                    if retryable && attempt < self.opts.attempts {
                        tokio::time::sleep(self.backoff(attempt - 1, None)).await;
                        continue;
                    }
                    return Err(Error::Registry(format!(
                        "registry {}: {} (after {attempt} tries)",
                        ep.registry,
                        chain(&e)
                    )));
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !reauthed {
                reauthed = true;
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(auth::parse_challenge);
                match challenge {
                    Some(c) if c.scheme == "bearer" => {
                        let token = self.fetch_token(ep, &c, scope).await?;
                        ep.tokens
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(scope.to_string(), token);
                        continue;
                    }
                    Some(c) if c.scheme == "basic" && ep.creds.is_some() => {
                        ep.basic.store(true, Ordering::Relaxed);
                        continue;
                    }
                    _ => return Ok(resp),
                }
            }
            let retry = status == StatusCode::TOO_MANY_REQUESTS
                || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
            if retry && idempotent == Idempotent::Yes && attempt + 1 < self.opts.attempts {
                let wait = self.backoff(attempt, Some(&resp));
                attempt += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Gets a bearer token from the challenge's realm for `scope` (space-separated
    /// scopes become several `scope` parameters).
    async fn fetch_token(&self, ep: &Endpoint, c: &auth::Challenge, scope: &str) -> Result<String> {
        let realm = c.params.get("realm").ok_or_else(|| {
            Error::Registry(format!(
                "registry {}: bearer challenge without a realm",
                ep.registry
            ))
        })?;
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            Error::Registry(format!(
                "registry {}: token realm {realm:?}: {e}",
                ep.registry
            ))
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = c.params.get("service") {
                q.append_pair("service", s);
            }
            let scopes: Vec<&str> = if scope.is_empty() {
                c.params
                    .get("scope")
                    .map(|s| vec![s.as_str()])
                    .unwrap_or_default()
            } else {
                scope.split(' ').collect()
            };
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let mut attempt = 0;
        let resp = loop {
            let mut req = ep.http.get(url.clone());
            if let Some(cr) = &ep.creds {
                req = req.basic_auth(&cr.username, Some(&cr.password));
            }
            match req.send().await {
                Ok(r)
                    if (r.status().is_server_error() || r.status() == 429)
                        && attempt + 1 < self.opts.attempts =>
                {
                    tokio::time::sleep(self.backoff(attempt, Some(&r))).await;
                }
                Ok(r) => break r,
                Err(e)
                    if attempt + 1 < self.opts.attempts && (e.is_connect() || e.is_timeout()) =>
                {
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                }
                Err(e) => {
                    return Err(Error::Registry(format!(
                        "registry {}: token service {realm}: {}",
                        ep.registry,
                        chain(&e)
                    )))
                }
            }
            attempt += 1;
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Registry(format!(
                "registry {}: the token service refused {} ({status}); check the user name and password (`berth login {}`)",
                ep.registry,
                ep.creds.as_ref().map_or("anonymous access".to_string(), |c| format!("user {:?}", c.username)),
                ep.registry
            )));
        }
        if !status.is_success() {
            return Err(Error::Registry(format!(
                "registry {}: token service {realm} answered {status}",
                ep.registry
            )));
        }
        let body = resp.bytes().await.map_err(|e| {
            Error::Registry(format!(
                "registry {}: token response: {}",
                ep.registry,
                chain(&e)
            ))
        })?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            Error::Registry(format!(
                "registry {}: token response is not JSON: {e}",
                ep.registry
            ))
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| {
                Error::Registry(format!(
                    "registry {}: the token response has no token",
                    ep.registry
                ))
            })
    }

    /// Checks credentials against a registry (`berth login`): succeeds when the registry
    /// (or its token service) accepts them.
    pub async fn login(&self, registry: &str) -> Result<()> {
        let ep = self.endpoint(registry).await?;
        let url = format!("{}/v2/", ep.base);
        let resp = self
            .send(&ep, "", Idempotent::Yes, &|h| Ok(h.get(url.as_str())))
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(status_error(&ep, "log in", resp).await)
    }
}

/// Whether `url` has the scheme, host and port of `base`.
fn same_origin(url: &reqwest::Url, base: &str) -> bool {
    reqwest::Url::parse(base).is_ok_and(|b| {
        b.scheme() == url.scheme()
            && b.host_str() == url.host_str()
            && b.port_or_known_default() == url.port_or_known_default()
    })
}

/// berth's HTTP client over `tls`: its timeouts and user agent, for registries and
/// downloads alike.
pub(crate) fn http_client(tls: rustls::ClientConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An error's message with its causes (reqwest nests the interesting part).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A clear error from an unexpected response: status, the registry's error codes and
/// messages, and what to do for the common ones.
async fn status_error(ep: &Endpoint, what: &str, resp: Response) -> Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("errors").and_then(Value::as_array).cloned())
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("code").and_then(Value::as_str).unwrap_or("?"),
                        e.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let hint = match status {
        StatusCode::UNAUTHORIZED => {
            format!(" — authentication required: `berth login {}`", ep.registry)
        }
        StatusCode::FORBIDDEN => " — access denied for these credentials".to_string(),
        StatusCode::TOO_MANY_REQUESTS => " — rate limited; try again later".to_string(),
        s if s.is_server_error() => " — the registry failed; try again later".to_string(),
        _ => String::new(),
    };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    Error::Registry(format!(
        "registry {}: {what}: {status}{detail}{hint}",
        ep.registry
    ))
}
