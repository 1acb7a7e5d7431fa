//! CertificateSigningRequest rules, as kube's CSR strategies and admission:
//! - on create, the requester's name, uid, groups and extra are recorded in the spec
//!   (whatever the client sent), and the status is dropped;
//! - the spec never changes after;
//! - `approval` changes only the Approved and Denied conditions, and needs `approve`
//!   on the signer (`signers` in certificates.k8s.io, named by signerName or
//!   `DOMAIN/*`);
//! - `status` changes the certificate and other conditions, never approval, and
//!   setting a certificate needs `sign` on the signer.

use serde_json::{json, Value};

use crate::authz::{Attributes, Authorizer};
use crate::request::User;
use crate::status::{ApiError, Cause};

/// Conditions only the `approval` subresource writes.
const APPROVAL_TYPES: [&str; 2] = ["Approved", "Denied"];

/// Records who asked in a new CSR's spec and drops any status.
pub fn prepare_create(o: &mut Value, user: Option<&User>) {
    if let Some(u) = user {
        let spec = &mut o["spec"];
        if !spec.is_object() {
            *spec = json!({});
        }
        spec["username"] = json!(u.name);
        if u.uid.is_empty() {
            if let Some(m) = spec.as_object_mut() {
                m.remove("uid");
            }
        } else {
            spec["uid"] = json!(u.uid);
        }
        spec["groups"] = json!(u.groups);
        let mut extra = serde_json::Map::new();
        for (k, v) in &u.extra {
            let e = extra.entry(k.clone()).or_insert_with(|| json!([]));
            if let Some(a) = e.as_array_mut() {
                a.push(json!(v));
            }
        }
        if extra.is_empty() {
            if let Some(m) = spec.as_object_mut() {
                m.remove("extra");
            }
        } else {
            spec["extra"] = Value::Object(extra);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
}

fn conditions(o: &Value) -> Vec<Value> {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_approval(c: &Value) -> bool {
    c.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| APPROVAL_TYPES.contains(&t))
}

/// What a write through `sub` ("approval" or "status") makes of `cur`, given the
/// client's `new`: only the part that subresource owns is taken from `new`.
pub fn merge(sub: &str, cur: &Value, new: &Value) -> Value {
    let mut o = cur.clone();
    let (cur_c, new_c) = (conditions(cur), conditions(new));
    let (keep, take): (Vec<Value>, Vec<Value>) = if sub == "approval" {
        (
            cur_c.into_iter().filter(|c| !is_approval(c)).collect(),
            new_c.into_iter().filter(is_approval).collect(),
        )
    } else {
        (
            cur_c.into_iter().filter(is_approval).collect(),
            new_c.into_iter().filter(|c| !is_approval(c)).collect(),
        )
    };
    let mut all = keep;
    all.extend(take);
    if !o.get("status").is_some_and(Value::is_object) {
        o["status"] = json!({});
    }
    o["status"]["conditions"] = Value::Array(all);
    if sub == "status" {
        match new.pointer("/status/certificate") {
            Some(c) => o["status"]["certificate"] = c.clone(),
            None => {
                if let Some(m) = o["status"].as_object_mut() {
                    m.remove("certificate");
                }
            }
        }
    }
    o
}

fn signer(o: &Value) -> &str {
    o.pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether `user` holds `verb` on the CSR's signer (by its name, or its domain's `/*`).
fn on_signer(authz: &Authorizer, user: &User, verb: &str, signer: &str) -> Result<(), ApiError> {
    let wildcard = signer.split_once('/').map(|(d, _)| format!("{d}/*"));
    let ask = |name: &str| {
        authz.check(&Attributes::resource(
            user,
            verb,
            None,
            "certificates.k8s.io",
            "signers",
            None,
            Some(name),
        ))
    };
    match ask(signer) {
        Ok(()) => Ok(()),
        Err(e) => match &wildcard {
            Some(w) if ask(w).is_ok() => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "certificatesigningrequests.certificates.k8s.io is forbidden: user not permitted to {verb} requests with signerName {signer:?}: {}",
                e.message
            ))),
        },
    }
}

/// Authorizes what a subresource write changes: new approval conditions need
/// `approve`, a new certificate `sign`, on the CSR's signer.
pub fn authorize(
    authz: &Authorizer,
    user: &User,
    sub: &str,
    cur: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let approvals = |o: &Value| -> Vec<Value> {
        conditions(o)
            .into_iter()
            .filter(is_approval)
            .map(|c| json!([c.get("type"), c.get("status")]))
            .collect()
    };
    if sub == "approval" && approvals(cur) != approvals(new) {
        on_signer(authz, user, "approve", signer(cur))?;
    }
    if sub == "status"
        && cur.pointer("/status/certificate") != new.pointer("/status/certificate")
        && new.pointer("/status/certificate").is_some()
    {
        on_signer(authz, user, "sign", signer(cur))?;
    }
    Ok(())
}

const KNOWN_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

fn decoded(o: &Value, ptr: &str) -> Option<Result<Vec<u8>, ()>> {
    use base64::Engine;
    let s = o.pointer(ptr)?.as_str()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| ()),
    )
}

/// Validation of a CSR (and, with `old`, of an update), kube's causes and wording.
pub fn validate(o: &Value, old: Option<&Value>, out: &mut Vec<Cause>) {
    let invalid = |field: &str, message: String| Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message,
    };
    match decoded(o, "/spec/request") {
        None => out.push(Cause::required("spec.request")),
        Some(Err(())) => out.push(invalid(
            "spec.request",
            "Invalid value: \"<binary>\": not base64".into(),
        )),
        Some(Ok(bytes)) => {
            if let Err(e) = berth_join::csr::parse(&bytes) {
                out.push(invalid(
                    "spec.request",
                    format!("Invalid value: []byte{{...}}: {e}"),
                ));
            }
        }
    }
    let signer = signer(o);
    if signer.is_empty() {
        out.push(Cause::required("spec.signerName"));
    } else if !signer.contains('/') || signer.starts_with('/') || signer.ends_with('/') {
        out.push(invalid(
            "spec.signerName",
            format!("Invalid value: {signer:?}: must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        ));
    }
    match o.pointer("/spec/usages").and_then(Value::as_array) {
        None => out.push(Cause::required("spec.usages")),
        Some(us) if us.is_empty() => out.push(Cause::required("spec.usages")),
        Some(us) => {
            for (i, u) in us.iter().enumerate() {
                let s = u.as_str().unwrap_or("");
                if !KNOWN_USAGES.contains(&s) {
                    out.push(Cause {
                        reason: "FieldValueNotSupported",
                        field: format!("spec.usages[{i}]"),
                        message: format!("Unsupported value: {s:?}"),
                    });
                }
            }
        }
    }
    if let Some(e) = o.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
        if e < 600 {
            out.push(invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {e}: may not specify a duration less than 600 seconds (10 minutes)"),
            ));
        }
    }
    let conds = conditions(o);
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    let approved = conds.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Approved")
            && c.get("status").and_then(Value::as_str) == Some("True")
    });
    if has("Approved") && has("Denied") {
        out.push(invalid(
            "status.conditions",
            "Invalid value: \"Approved\": Approved and Denied conditions are mutually exclusive"
                .into(),
        ));
    }
    let mut seen = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let t = c.get("type").and_then(Value::as_str).unwrap_or("");
        if t.is_empty() {
            out.push(Cause::required(format!("status.conditions[{i}].type")));
        } else if seen.contains(&t) {
            out.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("status.conditions[{i}].type"),
                message: format!("Duplicate value: {t:?}"),
            });
        }
        seen.push(t);
        let st = c.get("status").and_then(Value::as_str).unwrap_or("");
        if !["True", "False", "Unknown"].contains(&st) {
            out.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("status.conditions[{i}].status"),
                message: format!(
                    "Unsupported value: {st:?}: supported values: \"False\", \"True\", \"Unknown\""
                ),
            });
        }
    }
    if let Some(cert) = decoded(o, "/status/certificate") {
        let pem_ok = cert.is_ok_and(|b| {
            String::from_utf8(b).is_ok_and(|t| berth_join::csr::validity(&t).is_ok())
        });
        if !pem_ok {
            out.push(invalid(
                "status.certificate",
                "Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block".into(),
            ));
        }
        if !approved {
            out.push(Cause::forbidden(
                "status.certificate",
                "certificate can only be set on an approved request",
            ));
        }
    }
    if let Some(old) = old {
        if old.get("spec") != o.get("spec") {
            out.push(Cause::forbidden("spec", "field is immutable"));
        }
        if let Some(c) = old.pointer("/status/certificate") {
            if o.pointer("/status/certificate") != Some(c) {
                out.push(Cause::forbidden(
                    "status.certificate",
                    "updates may not modify existing certificate content",
                ));
            }
        }
        let approval_of = |v: &Value| -> Vec<String> {
            conditions(v)
                .iter()
                .filter(|c| is_approval(c))
                .filter_map(|c| c.get("type").and_then(Value::as_str).map(str::to_string))
                .collect()
        };
        let before = approval_of(old);
        if before.iter().any(|t| !approval_of(o).contains(t)) {
            out.push(Cause::forbidden(
                "status.conditions",
                "updates may not remove a condition of type Approved or Denied",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subresources_change_only_their_part() {
        let cur =
            json!({"spec": {"signerName": "a/b"}, "status": {"conditions": [{"type": "Failed"}]}});
        let new = json!({"spec": {"signerName": "x/y"}, "status": {
            "conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"}});
        let a = merge("approval", &cur, &new);
        assert_eq!(a["spec"]["signerName"], "a/b");
        assert!(a.pointer("/status/certificate").is_none());
        let types: Vec<_> = conditions(&a).iter().map(|c| c["type"].clone()).collect();
        assert_eq!(types, vec![json!("Failed"), json!("Approved")]);
        let s = merge(
            "status",
            &a,
            &json!({"status": {"certificate": "Zm9v", "conditions": []}}),
        );
        assert_eq!(s["status"]["certificate"], "Zm9v");
        // Approval stays: the status subresource cannot take it away.
        assert_eq!(conditions(&s).len(), 1);
        assert_eq!(conditions(&s)[0]["type"], "Approved");
    }

    #[test]
    fn the_requester_is_recorded_over_what_the_client_claims() {
        let mut o = json!({"spec": {"username": "system:admin", "groups": ["system:masters"]}, "status": {}});
        let mut u = User::new(
            "system:bootstrap:abcdef",
            "",
            vec!["system:bootstrappers".into()],
        );
        u.extra.push(("k".into(), "v".into()));
        prepare_create(&mut o, Some(&u));
        assert_eq!(o["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(
            o["spec"]["groups"],
            json!(["system:bootstrappers", "system:authenticated"])
        );
        assert_eq!(o["spec"]["extra"]["k"], json!(["v"]));
        assert!(o.get("status").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let mut out = Vec::new();
        validate(
            &json!({"spec": {"request": "bm90IHBlbQ==", "signerName": "nodomain", "usages": ["client auth", "bogus"], "expirationSeconds": 60}}),
            None,
            &mut out,
        );
        let fields: Vec<_> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.request",
                "spec.signerName",
                "spec.usages[1]",
                "spec.expirationSeconds"
            ]
        );
    }
}
