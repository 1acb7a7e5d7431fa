//! The server's shared state: the store, the watch hub, authentication and
//! authorization, metrics, and what the server knows of itself. Every handler reads
//! it; it imports none of them.

use std::sync::Arc;

use berth_store::Backend;

use crate::auth::Authenticator;
use crate::authz::Authorizer;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::resource_metrics::readings::CpuReadings;

/// The server's shared state.
pub struct Api {
    /// The store.
    pub store: Backend,
    /// The watch hub.
    pub hub: Arc<Hub>,
    /// Request metrics.
    pub metrics: Metrics,
    /// Authentication.
    pub authn: Authenticator,
    /// Authorization.
    pub authz: Authorizer,
    /// The address clients reach the server at (for /api's serverAddressByClientCIDRs).
    pub address: String,
    /// The cluster CA certificate (PEM), published in every namespace.
    pub ca_bundle: String,
    /// Whether startup work (default namespaces...) is done.
    pub ready: std::sync::atomic::AtomicBool,
    /// The TLS client config for node agents (pod log, exec, attach), when the server
    /// has a kubelet client certificate.
    pub kubelet_client: Option<Arc<rustls::ClientConfig>>,
    /// The last CPU counters read from node agents (metrics.k8s.io averages over them).
    pub cpu_readings: CpuReadings,
    /// Creates under a quota, one at a time per namespace.
    pub quota_gate: crate::quota::Gate,
    /// What another server joining this cluster gets (on a shared datastore); None on
    /// SQLite, which one server alone may use.
    pub server_bootstrap: Option<berth_join::ServerBootstrap>,
    /// Pod Security admission's defaults and exemptions.
    pub pod_security: crate::podsecurity::Config,
}
