//! Impersonation (`kubectl --as USER --as-group GROUP`): the Impersonate-* headers
//! make a request act as another user, when the asker may `impersonate` that user,
//! each group, the uid and each extra — as kube-apiserver's filter allows it.

use http::HeaderMap;

use super::{Attributes, Authorizer};
use crate::request::User;
use crate::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// The user a request acts as: `asker`, or whom its headers impersonate once every
/// part of that is allowed.
pub fn resolve(
    authz: &Authorizer,
    asker: User,
    path: &str,
    headers: &HeaderMap,
) -> Result<User, ApiError> {
    let text = |v: &http::HeaderValue| v.to_str().unwrap_or("").to_string();
    let name = headers.get(USER).map(text);
    let groups: Vec<String> = headers.get_all(GROUP).iter().map(text).collect();
    let uid = headers.get(UID).map(text);
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix(EXTRA)?;
            // Keys are percent-encoded in header names.
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .to_string();
            Some((key, text(v)))
        })
        .collect();
    let Some(name) = name else {
        if groups.is_empty() && uid.is_none() && extras.is_empty() {
            return Ok(asker);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups, uid or extras without a user: add Impersonate-User (kubectl --as)",
        ));
    };
    let check = |verb: &str,
                 group: &str,
                 resource: &str,
                 sub: Option<&str>,
                 ns: Option<&str>,
                 name: &str| {
        authz.check(&Attributes {
            user: &asker,
            verb,
            namespace: ns,
            api_group: group,
            resource,
            subresource: sub,
            name: Some(name),
            path,
            resource_request: true,
        })
    };
    let mut as_groups = groups.clone();
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            check("impersonate", "", "serviceaccounts", None, Some(ns), sa)?;
            if groups.is_empty() {
                as_groups = vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
        }
        None => check("impersonate", "", "users", None, None, &name)?,
    }
    for g in &groups {
        check("impersonate", "", "groups", None, None, g)?;
    }
    if let Some(u) = &uid {
        check(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            None,
            None,
            u,
        )?;
    }
    for (k, v) in &extras {
        check(
            "impersonate",
            "authentication.k8s.io",
            "userextras",
            Some(k),
            None,
            v,
        )?;
    }
    let mut user = if name == "system:anonymous" {
        // Anonymous is not authenticated.
        User {
            name,
            uid: String::new(),
            groups: as_groups,
            extra: Vec::new(),
        }
    } else {
        User::component(&name, as_groups)
    };
    user.uid = uid.unwrap_or_default();
    user.extra = extras;
    Ok(user)
}
