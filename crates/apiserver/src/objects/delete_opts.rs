//! The options of a delete (DeleteOptions, from the body in JSON or protobuf, or
//! from the query): grace period, propagation policy, preconditions, dry run.

use serde_json::{json, Value};

use crate::request::Request;
use crate::status::{ApiError, Cause};

/// Options of a delete.
pub struct DeleteOpts {
    /// Seconds of grace (pods).
    pub grace: Option<i64>,
    /// Orphan, Background or Foreground.
    pub propagation: String,
    /// Required uid.
    pub uid: Option<String>,
    /// Required resourceVersion.
    pub rv: Option<String>,
    /// Dry run.
    pub dry_run: bool,
}

pub(crate) fn delete_opts(req: &Request) -> Result<DeleteOpts, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else if req.body.starts_with(crate::protobuf::MAGIC) {
        crate::protobuf::decode_object(&req.body)?
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let grace = match req.q("gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}"))
        })?),
        None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    let mut propagation = req
        .q("propagationPolicy")
        .map(str::to_string)
        .or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    if propagation.is_empty() {
        propagation = match body
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or(req.q("orphanDependents").map(|o| o == "true"))
        {
            Some(true) => "Orphan".into(),
            _ => "Background".into(),
        };
    }
    if !["Orphan", "Background", "Foreground"].contains(&propagation.as_str()) {
        return Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![Cause::not_supported(
                "propagationPolicy",
                &propagation,
                &["Foreground", "Background", "Orphan"],
            )],
        ));
    }
    let dry_run = req.q("dryRun") == Some("All")
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOpts {
        grace,
        propagation,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn opts(query: &[(&str, &str)], body: &str) -> Result<DeleteOpts, ApiError> {
        delete_opts(&Request::test(Method::DELETE, query, &[], body))
    }

    #[test]
    fn propagation_comes_from_the_query_the_body_or_orphan_dependents() {
        assert_eq!(opts(&[], "").unwrap().propagation, "Background");
        let q = opts(&[("propagationPolicy", "Foreground")], "").unwrap();
        assert_eq!(q.propagation, "Foreground");
        let b = opts(
            &[],
            r#"{"propagationPolicy":"Orphan","gracePeriodSeconds":5}"#,
        )
        .unwrap();
        assert_eq!((b.propagation.as_str(), b.grace), ("Orphan", Some(5)));
        // The query wins over the body, as kube reads it.
        let both = opts(
            &[("gracePeriodSeconds", "0")],
            r#"{"gracePeriodSeconds":5}"#,
        )
        .unwrap();
        assert_eq!(both.grace, Some(0));
        // The deprecated orphanDependents still means Orphan.
        assert_eq!(
            opts(&[], r#"{"orphanDependents":true}"#)
                .unwrap()
                .propagation,
            "Orphan"
        );
        let pre = opts(
            &[("dryRun", "All")],
            r#"{"preconditions":{"uid":"u1","resourceVersion":"7"}}"#,
        )
        .unwrap();
        assert_eq!(
            (pre.uid.as_deref(), pre.rv.as_deref(), pre.dry_run),
            (Some("u1"), Some("7"), true)
        );
        assert!(opts(&[], r#"{"dryRun":["All"]}"#).unwrap().dry_run);
    }

    #[test]
    fn bad_options_name_what_is_wrong() {
        let e = opts(&[("propagationPolicy", "Sideways")], "")
            .err()
            .unwrap();
        assert_eq!(e.code, 422);
        let status = e.to_status().to_string();
        assert!(status.contains("propagationPolicy"), "{status}");
        assert!(status.contains("Foreground"), "{status}");
        let e = opts(&[("gracePeriodSeconds", "soon")], "").err().unwrap();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("gracePeriodSeconds"), "{}", e.message);
        let e = opts(&[], "{not json").err().unwrap();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("invalid DeleteOptions"), "{}", e.message);
    }
}
