//! Fuzzes what the API server does with request bodies: kube's protobuf envelope,
//! JSON bodies through unknown-field pruning and type checks, the three patch
//! engines, server-side apply, and label/field selectors. None may panic or hang.

#![no_main]

use berth_apiserver::{patch, protobuf, resources, schema, selector, ssa};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn live() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "finalizers": ["a"],
                     "managedFields": [{"manager": "m", "operation": "Update", "apiVersion": "apps/v1",
                                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                                       "env": [{"name": "A", "value": "1"}]}]}}}
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let deploy = resources::find("apps", "v1", "deployments").unwrap();
    match mode % 7 {
        0 => {
            let mut body = protobuf::MAGIC.to_vec();
            body.extend_from_slice(rest);
            let _ = protobuf::decode_object(&body);
        }
        m => {
            let Ok(v) = serde_json::from_slice::<Value>(rest) else { return };
            match m {
                1 => {
                    let mut d = live();
                    let _ = patch::json_patch(&mut d, &v);
                }
                2 => {
                    let mut d = live();
                    let _ = patch::merge_patch(&mut d, &v);
                }
                3 => {
                    let mut d = live();
                    let _ = patch::strategic(&mut d, &v, "Deployment");
                    let mut p = json!({"spec": {"ports": [{"port": 80}]}});
                    let _ = patch::strategic(&mut p, &v, "Service");
                }
                4 => {
                    let _ = ssa::apply(deploy, &live(), &v, "fuzz", false, None);
                    let _ = ssa::apply(deploy, &Value::Null, &v, "fuzz", true, Some("status"));
                    let _ = ssa::record_update(deploy, &live(), &v, "fuzz", None);
                }
                5 => {
                    for r in resources::RESOURCES {
                        let mut o = v.clone();
                        let _ = schema::prune_unknown(r, &mut o);
                        let _ = (r.decode)(&o);
                        let _ = berth_apiserver::validate::validate(r, &o, Some(&live()));
                        let _ = berth_apiserver::table::table_row(r.kind, &o, berth_apiserver::table::Include::Object);
                    }
                }
                _ => {
                    if let Some(s) = v.as_str() {
                        let _ = selector::LabelSelector::parse(s).map(|l| l.matches(&live()));
                        let _ = selector::FieldSelector::parse(s, "Pod").map(|f| f.matches(&live()));
                    }
                }
            }
        }
    }
});
