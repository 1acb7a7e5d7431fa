//! Reads: one object, and lists with selectors, paging (limit and continue) and
//! resourceVersion semantics.

use std::sync::Arc;

use berth_store::{Error as StoreError, Store};
use serde_json::{json, Value};

use super::meta::revision_of;
use crate::request::{Request, Response};
use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::Api;
use crate::status::ApiError;
use crate::table;

/// Reads one object with its resourceVersion set.
pub async fn read(
    api: &Api,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<(Value, i64), ApiError> {
    let key = res.key(ns, name);
    match api.store.get(&key).await? {
        Some(kv) => {
            let mut o = crate::hub::decode(&kv.value, kv.mod_revision);
            res.as_served(&mut o);
            Ok((o, kv.mod_revision))
        }
        None => Err(ApiError::not_found(res.group, res.plural, name)),
    }
}

/// Where a write's starting copy of an object came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The watch hub's copy, which may be behind the store.
    Hub,
    /// The store.
    Store,
}

/// Reads one object to change it: with `cached`, from the watch hub's copy when it
/// has one (kube's GuaranteedUpdate starts from its watch cache the same way), else
/// from the store. A write made from a copy that was behind fails its revision check;
/// the caller tries again from the store, and does so as well when the hub's copy
/// left nothing to change or the request was refused, which a copy behind can cause.
pub async fn read_for_write(
    api: &Api,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    cached: bool,
) -> Result<(Value, i64, Source), ApiError> {
    if let Some(stored) = cached.then(|| api.hub.stored(&res.key(ns, name))).flatten() {
        let mut o = stored.value();
        let rev = revision_of(&o);
        if rev > 0 {
            res.as_served(&mut o);
            return Ok((o, rev, Source::Hub));
        }
    }
    let (o, rev) = read(api, res, ns, name).await?;
    Ok((o, rev, Source::Store))
}

/// A list continue token: the revision and the last key returned.
pub(super) fn continue_token(rev: i64, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string())
}

pub(super) fn parse_continue(tok: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(format!(
            "invalid continue token {tok:?}: start a new list without it"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?,
        v.get("start")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string(),
    ))
}

pub(super) async fn list(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), res.kind)?;
    let limit: usize = match req.q("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| {
                ApiError::bad_request(format!("limit: invalid value {l:?}: expected an integer"))
            })?
            .clamp(0, 1_000_000) as usize,
    };
    let prefix = res.ns_prefix(ns);
    let (mut rev, mut after) = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let (rv, start) = parse_continue(c)?;
            (rv, Some(start))
        }
        None => (0, None),
    };
    if after.is_none() {
        let rv = req.q("resourceVersion").unwrap_or("");
        let exact = req.q("resourceVersionMatch") == Some("Exact");
        if !rv.is_empty() && rv != "0" {
            let n: i64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: invalid value {rv:?}: expected a number"
                ))
            })?;
            if exact {
                rev = n;
            } else {
                api.hub.wait_for(n).await?;
            }
        }
    }
    let filtered = !labels.is_empty() || !fields.is_empty();
    let mut items: Vec<Value> = Vec::new();
    let mut cont: Option<String> = None;
    let mut remaining: Option<i64> = None;
    loop {
        let want = if limit == 0 {
            0
        } else {
            (limit - items.len()).max(if filtered { 100 } else { 0 })
        };
        let page = match api.store.list(&prefix, rev, want, after.as_deref()).await {
            Ok(p) => p,
            Err(StoreError::Compacted { .. }) if req.q("continue").is_some() => {
                return Err(ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."));
            }
            Err(e) => return Err(e.into()),
        };
        rev = page.revision;
        let mut last_key = None;
        for kv in &page.items {
            last_key = Some(kv.key.clone());
            let mut o = crate::hub::decode(&kv.value, kv.mod_revision);
            res.as_served(&mut o);
            if labels.matches(&o) && fields.matches(&o) {
                items.push(o);
                if limit > 0 && items.len() == limit {
                    break;
                }
            }
        }
        let stopped_early = limit > 0
            && items.len() == limit
            && last_key.as_ref() != page.items.last().map(|k| &k.key);
        if limit > 0 && items.len() >= limit && (page.more_after.is_some() || stopped_early) {
            if let Some(k) = last_key {
                cont = Some(continue_token(rev, &k));
                if !filtered {
                    // Only an estimate is cheap enough; kube's is exact without selectors.
                    let rest = api
                        .store
                        .list(&prefix, rev, 0, Some(&k))
                        .await
                        .map(|p| p.items.len() as i64)
                        .ok();
                    remaining = rest;
                }
            }
            break;
        }
        match page.more_after {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    if req.wants_table() {
        let t = table::table(
            res,
            &items,
            &rev.to_string(),
            cont.as_deref(),
            table::Include::parse(req.q("includeObject")),
        );
        return Ok(Response::json(200, &t));
    }
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
        if let Some(r) = remaining.filter(|r| *r > 0) {
            meta["remainingItemCount"] = json!(r);
        }
    }
    let body = if req.wants_metadata() {
        json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(table::partial_metadata).collect::<Vec<_>>(),
        })
    } else {
        json!({
            "kind": res.list_kind(),
            "apiVersion": res.api_version(),
            "metadata": meta,
            "items": items,
        })
    };
    if req
        .header("accept")
        .is_some_and(|a| a.starts_with("application/yaml"))
    {
        return Ok(Response::bytes(
            200,
            "application/yaml",
            serde_yaml::to_string(&body).unwrap_or_default(),
        ));
    }
    Ok(Response::json(200, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_bad_ones_say_how_to_recover() {
        let tok = continue_token(42, "/registry/core/pods/default/web-1");
        assert_eq!(
            parse_continue(&tok).unwrap(),
            (42, "/registry/core/pods/default/web-1".to_string())
        );
        for bad in ["not-base64!", "e30", ""] {
            let e = parse_continue(bad).err().unwrap();
            assert_eq!(e.code, 400);
            assert!(e.message.contains("start a new list"), "{}", e.message);
        }
    }
}
