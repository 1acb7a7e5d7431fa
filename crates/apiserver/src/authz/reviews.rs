//! The access reviews of authorization.k8s.io/v1, answered at once and never stored:
//! SubjectAccessReview (may this user do this?), LocalSubjectAccessReview (the same,
//! within a namespace), SelfSubjectAccessReview (may I? — `kubectl auth can-i`) and
//! SelfSubjectRulesReview (what may I do here? — `kubectl auth can-i --list`).

use serde_json::{json, Value};

use super::{Attributes, Authorizer, Decision};
use crate::request::User;
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Answers a review of kind `res.kind` posted by `asker` (in `ns`, for the local
/// review): the body with its status filled in.
pub fn answer(
    authz: &Authorizer,
    asker: &User,
    res: &Resource,
    ns: Option<&str>,
    mut body: Value,
) -> Result<Value, ApiError> {
    let invalid = |causes| ApiError::invalid(res.group, res.kind, "", causes);
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    if res.kind == "SelfSubjectRulesReview" {
        let namespace = s(&spec, "namespace");
        if namespace.is_empty() {
            return Err(invalid(vec![Cause::required("spec.namespace")]));
        }
        body["status"] = rules_review(authz, asker, namespace);
        return Ok(body);
    }
    let subject = match res.kind {
        "SelfSubjectAccessReview" => asker.clone(),
        _ => {
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let name = s(&spec, "user");
            if name.is_empty() && groups.is_empty() {
                return Err(invalid(vec![Cause::invalid(
                    "spec.user",
                    "",
                    "at least one of user or group must be specified",
                )]));
            }
            // As the reviewed user authenticates: groups exactly as given.
            let mut u = User {
                name: name.to_string(),
                uid: s(&spec, "uid").to_string(),
                groups,
                extra: Vec::new(),
            };
            if let Some(extra) = spec.get("extra").and_then(Value::as_object) {
                for (k, vs) in extra {
                    for v in vs
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        u.extra.push((k.clone(), v.to_string()));
                    }
                }
            }
            u
        }
    };
    let ra = spec.get("resourceAttributes").filter(|v| v.is_object());
    let na = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let decision = match (ra, na) {
        (Some(ra), None) => {
            let mut namespace = s(ra, "namespace");
            if res.kind == "LocalSubjectAccessReview" {
                let url_ns = ns.unwrap_or("");
                if namespace.is_empty() {
                    namespace = url_ns;
                    body["spec"]["resourceAttributes"]["namespace"] = json!(url_ns);
                } else if namespace != url_ns {
                    return Err(invalid(vec![Cause::invalid(
                        "spec.resourceAttributes.namespace",
                        namespace,
                        "must match metadata.namespace",
                    )]));
                }
            }
            let name = s(ra, "name");
            let sub = s(ra, "subresource");
            authz.authorize(&Attributes::resource(
                &subject,
                s(ra, "verb"),
                Some(namespace).filter(|n| !n.is_empty()),
                s(ra, "group"),
                s(ra, "resource"),
                Some(sub).filter(|x| !x.is_empty()),
                Some(name).filter(|x| !x.is_empty()),
            ))
        }
        (None, Some(na)) => authz.authorize(&Attributes {
            user: &subject,
            verb: s(na, "verb"),
            namespace: None,
            api_group: "",
            resource: "",
            subresource: None,
            name: None,
            path: s(na, "path"),
            resource_request: false,
        }),
        _ => {
            return Err(invalid(vec![Cause::invalid(
                "spec.resourceAttributes",
                "",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )]))
        }
    };
    body["status"] = match decision {
        Decision::Allow(why) if why.is_empty() => json!({"allowed": true}),
        Decision::Allow(why) => json!({"allowed": true, "reason": why}),
        Decision::Deny(why) if why.is_empty() => json!({"allowed": false}),
        Decision::Deny(why) => json!({"allowed": false, "reason": why}),
    };
    Ok(body)
}

/// What `user` may do in `ns`: its resource and non-resource rules, as kube lists
/// them (each rule once); incomplete for a node.
fn rules_review(authz: &Authorizer, user: &User, ns: &str) -> Value {
    let rules = authz.index().rules_for(user, Some(ns));
    let (mut resource_rules, mut url_rules) = (Vec::<Value>::new(), Vec::<Value>::new());
    for r in rules {
        if let Some(urls) = r.non_resource_urls.filter(|u| !u.is_empty()) {
            let v = json!({"verbs": r.verbs, "nonResourceURLs": urls});
            if !url_rules.contains(&v) {
                url_rules.push(v);
            }
        }
        if r.resources.as_ref().is_some_and(|x| !x.is_empty()) {
            let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups.unwrap_or_default(),
                               "resources": r.resources.unwrap_or_default()});
            if let Some(n) = r.resource_names.filter(|n| !n.is_empty()) {
                v["resourceNames"] = json!(n);
            }
            if !resource_rules.contains(&v) {
                resource_rules.push(v);
            }
        }
    }
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": false});
    if super::node::node_of(user).is_some() {
        // A node's rights come from the Node authorizer too, which decides request by
        // request (its pods' Secrets...) and cannot list them, as kube says.
        status["incomplete"] = json!(true);
        status["evaluationError"] = json!("node authorizer does not support user rule resolution");
    }
    status
}
