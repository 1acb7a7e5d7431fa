//! Watch over HTTP: a stream of JSON lines (`{"type":…,"object":…}`) from the hub,
//! filtered by namespace and selectors (an object leaving a selector is a DELETED,
//! one entering it an ADDED), with bookmarks, initial events (for watches from "now"
//! and sendInitialEvents), Table rows for `kubectl get -w`, and a timeout. A client
//! that does not read is cut off once its buffer and the hub's lag allowance are spent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::hub::{Change, Kind, Stored};
use crate::request::{Body, Request, Response};
use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::Api;
use crate::status::ApiError;
use crate::table;

/// How many chunks (an event, or what was waiting, up to BATCH_BYTES) a watcher may
/// have queued for its client: at most 4 MiB of a stalled client's backlog is its own.
const CLIENT_BUFFER: usize = 64;
/// How many bytes of waiting events one chunk may carry.
const BATCH_BYTES: usize = 64 * 1024;
/// How long a watcher with a full buffer may take to read before it is dropped.
const SLOW_CLIENT_GRACE: Duration = Duration::from_secs(5);

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, o: &Stored) -> bool {
        o.matches(&self.labels, &self.fields)
    }

    fn trivial(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

struct Encoder {
    /// The resource watched (its objects are sent at its version).
    res: &'static Resource,
    table: Option<(&'static Resource, table::Include)>,
    /// Metadata only (PartialObjectMetadata objects).
    metadata: bool,
    first: bool,
}

impl Encoder {
    /// The watch line of an event of type `ty` about `o`: its stored JSON as it is,
    /// unless the watcher asked for a table or metadata only, or the object changes
    /// on its way out (custom objects).
    fn stored_line(&mut self, ty: &str, o: &Stored) -> Bytes {
        if self.table.is_none() && !self.metadata && self.res.custom.is_none() {
            o.event_line(ty)
        } else {
            self.line(ty, &o.value())
        }
    }

    fn line(&mut self, ty: &str, o: &Value) -> Bytes {
        let served;
        let o = if self.res.changes_on_read(o) {
            let mut c = o.clone();
            self.res.as_served(&mut c);
            served = c;
            &served
        } else {
            o
        };
        let cut;
        let obj = match self.table {
            Some((res, include)) => {
                let mut t = table::table(res, std::slice::from_ref(o), "", None, include);
                if !self.first {
                    // Column definitions come once, with the first event.
                    t["columnDefinitions"] = json!([]);
                }
                self.first = false;
                if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert(
                        "resourceVersion".into(),
                        o.pointer("/metadata/resourceVersion")
                            .cloned()
                            .unwrap_or(json!("")),
                    );
                }
                cut = t;
                &cut
            }
            // A watch's ERROR event carries a Status, never cut down.
            None if self.metadata && ty != "ERROR" => {
                cut = table::partial_metadata(o);
                &cut
            }
            None => o,
        };
        crate::hub::event_line(ty, obj)
    }
}

/// What one change means to a watcher with a filter: the event type to send, if any.
fn classify(c: &Change, f: &Filter) -> Option<Kind> {
    if f.trivial() {
        return Some(c.kind);
    }
    match c.kind {
        Kind::Deleted => {
            let before = c.prev.as_deref().unwrap_or(&c.object);
            f.matches(before).then_some(Kind::Deleted)
        }
        _ => {
            let now = f.matches(&c.object);
            let was = c.prev.as_deref().is_some_and(|p| f.matches(p));
            match (was, now) {
                (_, true) if c.kind == Kind::Added => Some(Kind::Added),
                (true, true) => Some(Kind::Modified),
                (false, true) => Some(Kind::Added),
                (true, false) => Some(Kind::Deleted),
                (false, false) => None,
            }
        }
    }
}

fn bookmark(res: &Resource, rv: i64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut v = serde_json::to_vec(&json!({
        "type": "BOOKMARK",
        "object": {"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta},
    }))
    .unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Starts a watch.
pub async fn serve(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let filter = Filter {
        labels: LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), res.kind)?,
    };
    let rv = req.q("resourceVersion").unwrap_or("");
    let send_initial = req.q("sendInitialEvents") == Some("true");
    let bookmarks = req.q("allowWatchBookmarks") == Some("true");
    if send_initial && req.q("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::new(
            422,
            "Invalid",
            "sendInitialEvents requires resourceVersionMatch=NotOlderThan",
        ));
    }
    let since = match rv {
        "" | "0" => None,
        n => {
            let v: i64 = n.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: invalid value {n:?}: expected a number"
                ))
            })?;
            if send_initial {
                None
            } else {
                Some(v)
            }
        }
    };
    let timeout = match req.q("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("timeoutSeconds: invalid value {t:?}")))?
                .min(365 * 24 * 3600),
        ),
        None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let prefix = res.ns_prefix(ns);
    let sub = match api.hub.subscribe(&prefix, since).await {
        Ok(sub) => sub,
        // Too old (a watch resumed across a restart, or past the history kept): as
        // kube-apiserver does, a 200 whose one event is the 410 Status. Clients relist
        // on that event; a plain 410 answer makes kube-rs's watcher retry the same
        // resourceVersion forever, and client-go's back off.
        Err(e) if e.code == 410 => return Ok(error_event(&e)),
        Err(e) => return Err(e),
    };
    let mut enc = Encoder {
        res,
        table: req
            .wants_table()
            .then(|| (res, table::Include::parse(req.q("includeObject")))),
        metadata: req.wants_metadata(),
        first: true,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(CLIENT_BUFFER);
    let start_rev = sub.revision;
    // The initial events and history are sent before live ones, in order.
    let mut initial: Vec<Bytes> = Vec::new();
    for o in &sub.snapshot {
        if filter.matches(o) {
            initial.push(enc.stored_line("ADDED", o));
        }
    }
    if send_initial && bookmarks {
        initial.push(bookmark(res, start_rev, true));
    }
    for c in &sub.history {
        if let Some(k) = classify(c, &filter) {
            initial.push(enc.stored_line(k.as_str(), &c.object));
        }
    }
    let mut live = sub.live;
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let mut last_rev = start_rev;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(res, last_rev, false)).await.is_err() {
                        return;
                    }
                }
                r = live.recv() => {
                    // What is already waiting goes out in one chunk: one HTTP/2 frame
                    // and TLS record for many events instead of one each.
                    let mut batch: Vec<Bytes> = Vec::new();
                    let mut size = 0;
                    let mut next = Some(r);
                    while let Some(r) = next.take() {
                        match r {
                            Ok(c) => {
                                last_rev = c.revision;
                                if c.key.starts_with(&prefix) && c.revision > start_rev {
                                    if let Some(k) = classify(&c, &filter) {
                                        let line = enc.stored_line(k.as_str(), &c.object);
                                        size += line.len();
                                        batch.push(line);
                                    }
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                tracing::info!("dropping a watch that fell behind");
                                return;
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                        if size < BATCH_BYTES {
                            match live.try_recv() {
                                Ok(c) => next = Some(Ok(c)),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                    next = Some(Err(broadcast::error::RecvError::Lagged(n)))
                                }
                                Err(_) => {}
                            }
                        }
                    }
                    let chunk = match batch.len() {
                        0 => continue,
                        1 => batch.pop().unwrap_or_default(),
                        _ => Bytes::from(batch.concat()),
                    };
                    // A client that stopped reading gets a few seconds to catch up
                    // (the hub's backlog is shared, not copied), then is dropped.
                    match tx.try_send(chunk) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(chunk)) => {
                            match tokio::time::timeout(SLOW_CLIENT_GRACE, tx.send(chunk)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => return,
                                Err(_) => {
                                    tracing::info!("dropping a watch whose client does not read");
                                    return;
                                }
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let ct = "application/json";
    Ok(Response {
        status: 200,
        headers: vec![("content-type".into(), ct.into())],
        body: Body::Stream(rx),
    })
}

/// A watch answer carrying one ERROR event with `e`'s Status, then ending.
fn error_event(e: &ApiError) -> Response {
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    line.push(b'\n');
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let _ = tx.try_send(Bytes::from(line));
    Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Body::Stream(rx),
    }
}
