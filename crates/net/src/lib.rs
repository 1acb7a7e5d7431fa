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

#[cfg(test)]
mod tests {
    /// scripts/fresh-check.sh removes, by name, the node network a berth in its
    /// clean root made in the host's network namespace: a rename here must reach it.
    #[test]
    fn fresh_check_knows_the_node_networks_names() {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fresh-check.sh");
        let text = std::fs::read_to_string(&script).expect("scripts/fresh-check.sh");
        for wanted in [
            format!("ip link show {}", crate::overlay::VXLAN_DEVICE),
            format!("\"ip {}\"", crate::svcproxy::TABLE),
            format!("\"ip {}\"", crate::netpol::TABLE),
        ] {
            assert!(
                text.contains(&wanted),
                "{} does not name {wanted}: update its node_net_objects",
                script.display()
            );
        }
    }
}
