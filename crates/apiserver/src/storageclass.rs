//! The DefaultStorageClass admission plugin, as kube-apiserver's: a new claim that
//! names no class (the field absent, not "") gets the class marked default, the
//! newest if several are.

use berth_store::Store;
use serde_json::{json, Value};

use crate::resources;
use crate::state::Api;
use crate::status::ApiError;

/// Sets the default class on a new PersistentVolumeClaim that names none.
pub async fn admit(api: &Api, claim: &mut Value) -> Result<(), ApiError> {
    if claim
        .pointer("/spec/storageClassName")
        .is_some_and(|c| !c.is_null())
    {
        return Ok(());
    }
    let res = resources::find("storage.k8s.io", "v1", "storageclasses").expect("served");
    let page = api.store.list(&res.ns_prefix(None), 0, 0, None).await?;
    let default = page
        .items
        .iter()
        .map(|kv| crate::hub::decode(&kv.value, kv.mod_revision))
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(berth_pods::storage::DEFAULT_CLASS))
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by(|a, b| {
            let created = |c: &Value| {
                c.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            created(a).cmp(&created(b))
        });
    if let (Some(class), Some(spec)) = (
        default.and_then(|c| c.pointer("/metadata/name").cloned()),
        claim.get_mut("spec").and_then(Value::as_object_mut),
    ) {
        spec.insert("storageClassName".into(), json!(class));
    }
    Ok(())
}
