//! Owner references: which object controls which (the link ReplicaSets, Jobs and the
//! garbage collector follow), and the reference a controller puts on what it makes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The reference marked `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta`'s controller is the object with this UID.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_ref(meta).is_some_and(|r| r.uid == uid)
}

/// The controller reference to `owner` that objects it makes carry (blocking the
/// owner's foreground deletion until they are gone, as kube's controllers set it).
pub fn reference_to<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let m = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
