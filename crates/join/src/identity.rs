//! The identities a node's certificates carry and the signers that issue them, as
//! kube names them: the kubelet's client certificate is `system:node:NAME` in
//! `system:nodes`, issued by `kubernetes.io/kube-apiserver-client-kubelet`; its
//! serving certificate has the same subject and is issued by
//! `kubernetes.io/kubelet-serving`.

/// The group every node's user is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The signer of kubelets' client certificates.
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelets' serving certificates.
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The signer of other client certificates (never approved automatically).
pub const SIGNER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// The user name of node `node`.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// The node a user name belongs to, if it is a node's.
pub fn node_of_user(user: &str) -> Option<&str> {
    user.strip_prefix("system:node:").filter(|n| !n.is_empty())
}
