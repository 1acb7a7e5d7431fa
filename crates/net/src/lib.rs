//! Container networking for berth (used by the engine, and by the node agent for pods):
//! persistent network namespaces, bridges and veth pairs over netlink, IP address
//! management with leases that survive restarts, and NAT and published ports with
//! nftables.

pub mod attach;
pub mod cni;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod netpath;
pub mod netpol;
pub mod network;
pub mod nft;
pub mod overlay;
pub mod pasta;
pub mod ports;
pub mod rtnl_sync;
pub mod svcproxy;
mod sys;

pub use error::{Error, Result};
