//! The API server's in-process entry point: a tower Service that hands requests to
//! the same reading, authentication, admission, validation and watch paths an HTTPS
//! request takes, with no socket, TLS or HTTP framing between. The scheduler and
//! controllers running inside `berth server` wrap it in a kube `Client`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::auth::User;
use crate::request::RespBody;
use crate::state::Api;

/// A client's way into the API server without the network, acting as the user a
/// client certificate would name (which, as over HTTPS, wins over a bearer token).
#[derive(Clone)]
pub struct InProcess {
    api: Arc<Api>,
    user: User,
    /// The user agent of requests that name none (kube's client names none): field
    /// managers are named after it, "kube-scheduler" as on Kubernetes rather than
    /// "unknown".
    agent: http::HeaderValue,
}

impl InProcess {
    /// The entry point for a component named `name` in `groups`, e.g.
    /// ("system:kube-scheduler", []) as kube-scheduler's certificate names it.
    pub fn new(api: Arc<Api>, name: &str, groups: &[&str]) -> InProcess {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        let component = name.strip_prefix("system:").unwrap_or(name);
        let agent = http::HeaderValue::from_str(&format!("{component}/berth"))
            .unwrap_or_else(|_| http::HeaderValue::from_static("berth"));
        InProcess {
            api,
            user: User::component(name, groups),
            agent,
        }
    }
}

impl InProcess {
    /// The same entry point, naming `component` as its user agent (the field manager
    /// of its writes): a controller acting as its ServiceAccount still writes as
    /// "kube-controller-manager", as on Kubernetes.
    pub fn with_component(mut self, component: &str) -> InProcess {
        if let Ok(v) = http::HeaderValue::from_str(&format!("{component}/berth")) {
            self.agent = v;
        }
        self
    }
}

impl<B> tower_service::Service<http::Request<B>> for InProcess
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<RespBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !req.headers().contains_key(http::header::USER_AGENT) {
            req.headers_mut()
                .insert(http::header::USER_AGENT, self.agent.clone());
        }
        let (api, user) = (self.api.clone(), self.user.clone());
        Box::pin(async move { Ok(crate::server::respond(api, Some(user), req).await) })
    }
}
