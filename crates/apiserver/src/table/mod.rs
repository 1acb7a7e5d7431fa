//! Table responses for `kubectl get`: the columns kube's printers give each kind (and
//! the wide ones, priority 1), one row per object.

use serde_json::{json, Value};

mod columns;
pub mod custom;
mod rows;

use columns::columns;
use rows::row;

use crate::resources::Resource;

/// A column: name, type, priority (1: only with -o wide).
pub(crate) type Col = (&'static str, &'static str, u8);

/// kube's short human durations ("45s", "3m12s", "5h", "12d").
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}
/// What a table row carries of its object (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    /// Nothing.
    None,
    /// PartialObjectMetadata (kube's default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// Parses the `includeObject` parameter.
    pub fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// An object's metadata alone, as a PartialObjectMetadata.
pub fn partial_metadata(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or(Value::Null),
    })
}

/// One table row of `o`, a `res` object.
pub fn table_row(res: &Resource, o: &Value, include: Include) -> Value {
    let object = match include {
        Include::None => Value::Null,
        Include::Object => o.clone(),
        Include::Metadata => partial_metadata(o),
    };
    let cells = match res.custom {
        Some(c) => custom::row(c, o),
        None => row(res.kind, o),
    };
    let mut r = json!({ "cells": cells });
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// The column definitions of `res`.
pub fn column_definitions(res: &Resource) -> Value {
    if let Some(c) = res.custom {
        return custom::column_definitions(c);
    }
    Value::Array(
        columns(res.kind)
            .iter()
            .map(|(n, t, p)| {
                let mut c =
                    json!({"name": n, "type": t, "format": "", "description": "", "priority": p});
                if *n == "Name" {
                    c["format"] = json!("name");
                    c["description"] = json!("Name must be unique within a namespace.");
                }
                c
            })
            .collect(),
    )
}

/// A Table of `items`, objects of `res`.
pub fn table(
    res: &Resource,
    items: &[Value],
    rv: &str,
    cont: Option<&str>,
    include: Include,
) -> Value {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": column_definitions(res),
        "rows": items.iter().map(|o| table_row(res, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (3 * 86400 + 3600, "3d1h"),
            (10 * 86400, "10d"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }

    #[test]
    fn pod_rows_show_ready_status_and_restarts() {
        let p = json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        let r = row("Pod", &p);
        assert_eq!(r[1], json!("1/2"));
        assert_eq!(r[2], json!("CrashLoopBackOff"));
        assert_eq!(r[3], json!("3"));
        assert_eq!(r[5], json!("10.0.0.5"));
    }
}
