//! PATCH: JSON, merge and strategic merge patches (retried on conflict unless the
//! patch pins a resourceVersion), and server-side apply.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::body::{answer, check_body, parse_patch_body, with_warnings, write_opts, WriteOpts};
use super::create::create_object;
use super::meta::{meta_mut, meta_str, revision_of};
use super::read::{read, read_for_write, Source};
use super::write::replace;
use crate::request::{Request, Response};
use crate::resources::Resource;
use crate::state::Api;
use crate::status::ApiError;
use crate::{patch, ssa};

pub(super) async fn patch(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let ct = req.media_type().to_string();
    let default_manager = if ct == "application/apply-patch+yaml" {
        ""
    } else {
        "unknown"
    };
    let opts = write_opts(req, default_manager)?;
    let body = parse_patch_body(req)?;
    if ct == "application/apply-patch+yaml" {
        if req.q("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requests require fieldManager to be set",
            ));
        }
        let force = req.q("force") == Some("true");
        return apply(api, req, res, ns, name, sub, body, &opts, force).await;
    }
    let format = patch::Format::of(&ct)?;
    if res.custom.is_some() && matches!(format, patch::Format::Strategic) {
        // Custom objects have no patch strategies to merge by (as kube's answer).
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let pinned = body.pointer("/metadata/resourceVersion").is_some();
    // The first try starts from the hub's copy, unless the patch pins a version (a
    // copy behind would refuse it) or is a dry run (its answer must be the store's).
    let from_hub = AtomicBool::new(!pinned && !opts.dry_run);
    let (out, warnings) = retry_on_conflict(pinned, || async {
        let cached = from_hub.swap(false, Ordering::Relaxed);
        // An attempt that lost its race may have noted warnings: this one notes its own.
        drop(opts.take_warnings());
        let (cur, rev, source) = read_for_write(api, res, ns, name, cached).await?;
        let attempt = async {
            let mut doc = cur.clone();
            format.apply(&mut doc, &body, res.kind)?;
            if !doc.is_object() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "the patched object is not a JSON object",
                ));
            }
            if !pinned {
                meta_mut(&mut doc).remove("resourceVersion");
            }
            let mut warnings = Vec::new();
            check_body(res, &mut doc, &opts, &mut warnings)?;
            let out = replace(api, res, ns, name, &cur, rev, doc, sub, &opts, None).await?;
            warnings.extend(opts.take_warnings());
            Ok((out, warnings))
        };
        let r = attempt.await;
        let written = matches!(&r, Ok((o, _)) if revision_of(o) != rev);
        if source == Source::Hub && !written {
            // Refused, or nothing written (the patch changed nothing of the copy):
            // the hub's copy may have been behind; the store decides.
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
        r
    })
    .await?;
    Ok(with_warnings(answer(req, res, 200, &out), &warnings))
}

/// How many more times a write that lost a race is tried.
pub(crate) const CONFLICT_RETRIES: usize = 32;

/// Runs `attempt` (one read, change and write) again when its write meets a
/// conflict, unless the request pinned a resourceVersion: then the conflict is the
/// answer, as kube's; so is a precondition that does not hold. kube's storage tries
/// again for as long as others win the race; here up to [`CONFLICT_RETRIES`] more
/// times (every round of racing writers has a winner), so that a request never
/// spins for good.
pub(crate) async fn retry_on_conflict<T, F, Fut>(
    pinned: bool,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    for _ in 0..CONFLICT_RETRIES {
        match attempt().await {
            Err(e) if e.is_lost_race() && !pinned => continue,
            r => return r,
        }
    }
    attempt().await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn apply(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    body: Value,
    opts: &WriteOpts,
    force: bool,
) -> Result<Response, ApiError> {
    let mut applied = body;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    let mut warnings = Vec::new();
    check_body(res, &mut applied, opts, &mut warnings)?;
    if let Some(n) = meta_str(&applied, "name") {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    meta_mut(&mut applied).insert("name".into(), json!(name));
    for attempt in 0.. {
        let cur = match read(api, res, ns, name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        let result = match cur {
            None => {
                let (obj, mf) = ssa::apply(res, &Value::Null, &applied, &opts.manager, force, sub)?;
                create_object(api, res, ns, obj, opts, Some(mf))
                    .await
                    .map(|o| (201, o))
            }
            Some((cur, rev)) => {
                let (obj, mf) = ssa::apply(res, &cur, &applied, &opts.manager, force, sub)?;
                replace(api, res, ns, name, &cur, rev, obj, sub, opts, Some(mf))
                    .await
                    .map(|o| (200, o))
            }
        };
        match result {
            Err(e)
                if (e.is_lost_race() || e.reason == "AlreadyExists")
                    && attempt < CONFLICT_RETRIES =>
            {
                continue
            }
            Err(e) => return Err(e),
            Ok((code, o)) => {
                warnings.extend(opts.take_warnings());
                return Ok(with_warnings(answer(req, res, code, &o), &warnings));
            }
        }
    }
    unreachable!()
}
