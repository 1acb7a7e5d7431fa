//! What one RBAC rule allows, and whether one set of rules covers another (the
//! escalation check): kube's matching rules for verbs, API groups, resources with
//! their subresources, resource names and non-resource URLs, with `*` as a wildcard.

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::Attributes;

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn has_resource(resources: &[String], resource: &str, sub: Option<&str>) -> bool {
    let combined;
    let want = match sub {
        Some(s) => {
            combined = format!("{resource}/{s}");
            combined.as_str()
        }
        None => resource,
    };
    resources.iter().any(|r| {
        r == "*"
            || r == want
            // "*/scale": that subresource of every resource.
            || sub.is_some_and(|s| r.strip_prefix("*/") == Some(s))
    })
}

fn has_url(urls: &[String], path: &str) -> bool {
    urls.iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether `rule` allows the request.
pub fn allows(rule: &PolicyRule, a: &Attributes<'_>) -> bool {
    if !has(&rule.verbs, a.verb) {
        return false;
    }
    if !a.resource_request {
        return rule
            .non_resource_urls
            .as_deref()
            .is_some_and(|u| has_url(u, a.path));
    }
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    if !has(groups, a.api_group) || !has_resource(resources, a.resource, a.subresource) {
        return false;
    }
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => a.name.is_some_and(|n| names.iter().any(|x| x == n)),
    }
}

/// One indivisible permission: a verb on one group, resource and (maybe) name, or
/// on one non-resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom<'a> {
    Resource {
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        name: Option<&'a str>,
    },
    Url {
        verb: &'a str,
        url: &'a str,
    },
}

fn atoms(rule: &PolicyRule) -> Vec<Atom<'_>> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in rule.non_resource_urls.iter().flatten() {
            out.push(Atom::Url { verb, url });
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                match rule.resource_names.as_deref() {
                    None | Some([]) => out.push(Atom::Resource {
                        verb,
                        group,
                        resource,
                        name: None,
                    }),
                    Some(names) => out.extend(names.iter().map(|n| Atom::Resource {
                        verb,
                        group,
                        resource,
                        name: Some(n.as_str()),
                    })),
                }
            }
        }
    }
    out
}

/// Whether `owner` holds `atom`: a wildcard in the atom needs a wildcard in the rule.
fn holds(owner: &PolicyRule, atom: &Atom<'_>) -> bool {
    let exact = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
    match atom {
        Atom::Url { verb, url } => {
            exact(&owner.verbs, verb)
                && owner.non_resource_urls.as_deref().is_some_and(|urls| {
                    urls.iter().any(|u| {
                        u == "*"
                            || u == url
                            || u.strip_suffix('*').is_some_and(|p| url.starts_with(p))
                    })
                })
        }
        Atom::Resource {
            verb,
            group,
            resource,
            name,
        } => {
            let resources = owner.resources.as_deref().unwrap_or_default();
            let resource_held = resources.iter().any(|r| {
                r == "*"
                    || r == resource
                    || (r.starts_with("*/")
                        && resource
                            .split_once('/')
                            .is_some_and(|(_, sub)| r[2..] == *sub))
            });
            let name_held = match owner.resource_names.as_deref() {
                None | Some([]) => true,
                Some(names) => name.is_some_and(|n| names.iter().any(|x| x == n)),
            };
            exact(&owner.verbs, verb)
                && exact(owner.api_groups.as_deref().unwrap_or_default(), group)
                && resource_held
                && name_held
        }
    }
}

/// The parts of `wanted` that `owned` does not cover, as single-verb, single-resource
/// rules (empty: everything is covered).
pub fn uncovered(owned: &[&PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in wanted {
        for atom in atoms(rule) {
            if owned.iter().any(|o| holds(o, &atom)) {
                continue;
            }
            let s = |x: &str| vec![x.to_string()];
            missing.push(match atom {
                Atom::Url { verb, url } => PolicyRule {
                    verbs: s(verb),
                    non_resource_urls: Some(s(url)),
                    ..Default::default()
                },
                Atom::Resource {
                    verb,
                    group,
                    resource,
                    name,
                } => PolicyRule {
                    verbs: s(verb),
                    api_groups: Some(s(group)),
                    resources: Some(s(resource)),
                    resource_names: name.map(s),
                    ..Default::default()
                },
            });
        }
    }
    missing
}

/// A rule as kube prints it in an escalation refusal.
pub fn describe(rule: &PolicyRule) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if let Some(g) = &rule.api_groups {
        parts.push(format!("APIGroups:[{}]", list(g)));
    }
    if let Some(r) = &rule.resources {
        parts.push(format!("Resources:[{}]", list(r)));
    }
    if let Some(n) = rule.resource_names.as_deref().filter(|n| !n.is_empty()) {
        parts.push(format!("ResourceNames:[{}]", list(n)));
    }
    if let Some(u) = &rule.non_resource_urls {
        parts.push(format!("NonResourceURLs:[{}]", list(u)));
    }
    parts.push(format!("Verbs:[{}]", list(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::User;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            verbs: v(verbs),
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            resource_names: (!names.is_empty()).then(|| v(names)),
            ..Default::default()
        }
    }

    fn attrs<'a>(
        user: &'a User,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes::resource(user, verb, Some("default"), group, resource, sub, name)
    }

    #[test]
    fn rules_match_as_kube_matches_them() {
        let u = User::component("bob", vec![]);
        let pods = rule(&["get", "list"], &[""], &["pods"], &[]);
        assert!(allows(
            &pods,
            &attrs(&u, "get", "", "pods", None, Some("a"))
        ));
        assert!(!allows(&pods, &attrs(&u, "delete", "", "pods", None, None)));
        assert!(!allows(
            &pods,
            &attrs(&u, "get", "apps", "pods", None, None)
        ));
        // A subresource is its own resource.
        assert!(!allows(
            &pods,
            &attrs(&u, "get", "", "pods", Some("log"), None)
        ));
        let scale = rule(&["*"], &["*"], &["*/scale"], &[]);
        assert!(allows(
            &scale,
            &attrs(&u, "update", "apps", "deployments", Some("scale"), None)
        ));
        assert!(!allows(
            &scale,
            &attrs(&u, "update", "apps", "deployments", None, None)
        ));
        // Names restrict, and a request without one (list, create) does not match.
        let one = rule(&["get", "list"], &[""], &["configmaps"], &["cfg"]);
        assert!(allows(
            &one,
            &attrs(&u, "get", "", "configmaps", None, Some("cfg"))
        ));
        assert!(!allows(
            &one,
            &attrs(&u, "get", "", "configmaps", None, Some("x"))
        ));
        assert!(!allows(
            &one,
            &attrs(&u, "list", "", "configmaps", None, None)
        ));
        let urls = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: Some(vec!["/healthz".into(), "/apis/*".into()]),
            ..Default::default()
        };
        let mut a = attrs(&u, "get", "", "", None, None);
        a.resource_request = false;
        for (path, ok) in [
            ("/healthz", true),
            ("/apis/apps", true),
            ("/metrics", false),
        ] {
            a.path = path;
            assert_eq!(allows(&urls, &a), ok, "{path}");
        }
    }

    #[test]
    fn coverage_needs_every_atom() {
        let owned = [
            rule(&["get", "list", "watch"], &["", "apps"], &["*"], &[]),
            rule(&["create"], &[""], &["configmaps"], &["only"]),
        ];
        let owned: Vec<&PolicyRule> = owned.iter().collect();
        assert!(uncovered(&owned, &[rule(&["get"], &["apps"], &["deployments"], &[])]).is_empty());
        let missing = uncovered(
            &owned,
            &[rule(&["get", "delete"], &[""], &["pods", "secrets"], &[])],
        );
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert_eq!(
            describe(&missing[0]),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
        // A wildcard is covered only by a wildcard; names only by the same names.
        assert_eq!(
            uncovered(&owned, &[rule(&["*"], &[""], &["pods"], &[])]).len(),
            1
        );
        assert!(uncovered(
            &owned,
            &[rule(&["create"], &[""], &["configmaps"], &["only"])]
        )
        .is_empty());
        assert_eq!(
            uncovered(&owned, &[rule(&["create"], &[""], &["configmaps"], &[])]).len(),
            1
        );
    }
}
