//! Service cluster IPs and node ports, reserved under /registry/ranges/ so two
//! Services never get the same one, and released when the Service goes
//! (`crate::repair` frees what a crash left reserved).

use serde_json::{json, Value};

use berth_store::{Error as StoreError, Store};

use crate::state::Api;
use crate::status::{ApiError, Cause};

/// Reserves an address-like value under /registry/ranges/ (cluster IPs, node ports)
/// so two services never get the same one.
pub(super) async fn reserve(
    api: &Api,
    range: &str,
    value: &str,
    owner: &str,
) -> Result<bool, ApiError> {
    match api
        .store
        .create(
            &format!("/registry/ranges/{range}/{value}"),
            owner.as_bytes(),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::Exists(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Releases a reservation if `owner` holds it.
pub(super) async fn release(api: &Api, range: &str, value: &str, owner: &str) {
    let key = format!("/registry/ranges/{range}/{value}");
    if let Ok(Some(kv)) = api.store.get(&key).await {
        if kv.value == owner.as_bytes() {
            let _ = api.store.delete(&key, kv.mod_revision).await;
        }
    }
}

/// Gives a new service its cluster IP and node ports.
pub(super) async fn allocate_service(
    api: &Api,
    o: &mut Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    use rand::Rng;
    let owner = crate::repair::owner(o);
    let ty = o
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let want = o
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ip = if want == "None" {
        want
    } else if !want.is_empty() {
        let ok = want
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .filter(|a| a.octets()[0] == 10 && a.octets()[1] == 96);
        if ok.is_none() {
            return Err(ApiError::invalid("", "Service", &owner, vec![Cause::invalid(
                "spec.clusterIPs",
                &want,
                format!(
                    "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is {}",
                    berth_pods::services::SERVICE_CIDR
                ),
            )]));
        }
        if !dry_run && !reserve(api, "serviceips", &want, &owner).await? {
            return Err(ApiError::invalid(
                "",
                "Service",
                &owner,
                vec![Cause::invalid(
                    "spec.clusterIPs",
                    &want,
                    "failed to allocate IP: provided IP is already allocated",
                )],
            ));
        }
        want
    } else {
        let mut got = None;
        for _ in 0..64 {
            let (a, b) = {
                let mut rng = rand::rng();
                (rng.random_range(0..=255u8), rng.random_range(0..=254u8))
            };
            if a == 0 && b < 10 {
                continue;
            }
            let cand = format!("10.96.{a}.{}", b.max(1));
            if dry_run || reserve(api, "serviceips", &cand, &owner).await? {
                got = Some(cand);
                break;
            }
        }
        got.ok_or_else(|| ApiError::internal("failed to allocate a service IP: range is full"))?
    };
    o["spec"]["clusterIP"] = json!(ip);
    o["spec"]["clusterIPs"] = json!([ip]);
    if ty == "NodePort" || ty == "LoadBalancer" {
        if let Some(ports) = o.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                    if !(30000..=32767).contains(&n) {
                        return Err(ApiError::invalid("", "Service", &owner, vec![Cause::invalid(
                            "spec.ports[].nodePort",
                            &n.to_string(),
                            "provided port is not in the valid range. The range of valid ports is 30000-32767",
                        )]));
                    }
                    if !dry_run && !reserve(api, "servicenodeports", &n.to_string(), &owner).await?
                    {
                        return Err(ApiError::invalid(
                            "",
                            "Service",
                            &owner,
                            vec![Cause::invalid(
                                "spec.ports[].nodePort",
                                &n.to_string(),
                                "provided port is already allocated",
                            )],
                        ));
                    }
                    continue;
                }
                for _ in 0..64 {
                    let cand = rand::rng().random_range(30000..=32767u32);
                    if dry_run
                        || reserve(api, "servicenodeports", &cand.to_string(), &owner).await?
                    {
                        p["nodePort"] = json!(cand);
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn release_service(api: &Api, o: &Value) {
    let owner = crate::repair::owner(o);
    for (range, value) in crate::repair::reservations(o) {
        release(api, range, &value, &owner).await;
    }
}
