//! berth's cluster DNS: every node's agent answers the cluster's names (Services,
//! their endpoints, pods) from its watches, on the kube-dns address, and forwards the
//! rest to the node's resolvers with a cache — what kube-dns or CoreDNS do for a
//! cluster, without a Deployment of its own.

pub mod answer;
pub mod forward;
pub mod server;
pub mod zone;

pub use server::Shared;
pub use zone::Zone;

#[cfg(test)]
mod tests;
