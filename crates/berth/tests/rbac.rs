//! Authorization in `berth server`, driven with kubectl as users would: the default
//! roles and bindings; a user bound to `view` in one namespace, refused elsewhere with
//! kube's messages; `kubectl auth can-i [--list]` and `--as`; a ServiceAccount's
//! token; the escalation check on roles and bindings; ClusterRole aggregation;
//! access reviews; defaults restored at restart. Needs kubectl 1.32.

mod common;

use std::process::Output;

use common::cluster::Cluster;
use serde_json::Value;

/// kubectl as the user of `token` (a kubeconfig of its own, no client certificate).
fn as_token(c: &Cluster, token: &str, args: &[&str]) -> Output {
    let kc = c
        .env
        .path(&format!("kubeconfig-{}", &token[..token.len().min(12)]));
    if !kc.exists() {
        let ca = c.env.root().join("server/pki/ca.crt");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: u\n  context:\n    cluster: berth\n    user: u\ncurrent-context: u\n",
                c.port,
                ca.display()
            ),
        )
        .unwrap();
    }
    c.kubectl_with(args, None, &[("KUBECONFIG", kc.to_str().unwrap())])
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs as `token`, expecting success: stdout.
fn ok_as(c: &Cluster, token: &str, args: &[&str]) -> String {
    let o = as_token(c, token, args);
    assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs as `token`, expecting a refusal: stderr.
fn refused_as(c: &Cluster, token: &str, args: &[&str]) -> String {
    let o = as_token(c, token, args);
    assert!(
        !o.status.success(),
        "kubectl {args:?} should be refused: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kubectl auth can-i` as the admin: "yes" or "no".
fn can_i(c: &Cluster, args: &[&str]) -> String {
    let mut a = vec!["auth", "can-i"];
    a.extend_from_slice(args);
    String::from_utf8_lossy(&c.kubectl(&a).stdout)
        .trim()
        .to_string()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn users_get_what_their_bindings_grant() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "bob-token-0001,bob,1001\n").unwrap();
    let mut c = Cluster::api_only_with(&["--token-auth-file", tokens.to_str().unwrap()]);
    let bob = "bob-token-0001";

    // The defaults, as Kubernetes ships them.
    assert_eq!(
        can_i(&c, &["*", "*"]),
        "yes",
        "the admin is in system:masters"
    );
    let roles = c.ok(&["get", "clusterroles", "-o", "name"]);
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:node",
        "system:kube-scheduler",
        "system:basic-user",
        "system:discovery",
    ] {
        assert!(
            roles
                .lines()
                .any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{r}")),
            "{r} missing:\n{roles}"
        );
    }
    let b = c.ok(&["get", "clusterrolebinding", "cluster-admin", "-o", "wide"]);
    assert!(
        b.contains("ClusterRole/cluster-admin") && b.contains("system:masters"),
        "{b}"
    );
    // The aggregated roles carry the rules of their parts.
    let view: Value =
        serde_json::from_str(&c.ok(&["get", "clusterrole", "view", "-o", "json"])).unwrap();
    assert!(
        view["rules"].as_array().is_some_and(|r| !r.is_empty()),
        "{view}"
    );

    // Each controller acts as its own ServiceAccount, with only its role's rights.
    c.until("the controllers' ServiceAccounts", 15, || {
        let sas = c.ok(&["get", "sa", "-n", "kube-system", "-o", "name"]);
        (sas.contains("serviceaccount/deployment-controller")
            && sas.contains("serviceaccount/generic-garbage-collector"))
        .then_some(())
    });
    let deploy = "system:serviceaccount:kube-system:deployment-controller";
    assert_eq!(
        can_i(&c, &["create", "replicasets.apps", "--as", deploy]),
        "yes"
    );
    assert_eq!(can_i(&c, &["create", "pods", "--as", deploy]), "no");
    assert_eq!(can_i(&c, &["get", "secrets", "--as", deploy]), "no");
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=1",
    ]);
    c.until(
        "the deployment controller's ReplicaSet and its pod",
        15,
        || {
            c.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
                .contains("pod/web-")
                .then_some(())
        },
    );

    // A user with no binding: discovery, and refusals in kube's words.
    ok_as(&c, bob, &["get", "--raw", "/version"]);
    let e = refused_as(&c, bob, &["get", "pods"]);
    assert!(
        e.contains(r#"Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{e}"
    );
    let e = refused_as(&c, bob, &["get", "--raw", "/metrics"]);
    assert!(
        e.contains(r#"User "bob" cannot get path "/metrics""#),
        "{e}"
    );
    let e = refused_as(&c, bob, &["get", "--raw", "/api/v1/nodes/n1/proxy/metrics"]);
    assert!(
        e.contains(
            r#"User "bob" cannot get resource "nodes/proxy" in API group "" at the cluster scope"#
        ),
        "{e}"
    );
    let e = refused_as(&c, bob, &["get", "deploy", "web", "-n", "kube-system"]);
    assert!(
        e.contains(r#"deployments.apps "web" is forbidden: User "bob" cannot get resource "deployments" in API group "apps" in the namespace "kube-system""#),
        "{e}"
    );

    // view in dev: reading there, nowhere else, and no secrets.
    c.ok(&["create", "namespace", "dev"]);
    c.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "dev",
    ]);
    c.until("bob's binding to take effect", 10, || {
        as_token(&c, bob, &["get", "pods", "-n", "dev"])
            .status
            .success()
            .then_some(())
    });
    ok_as(&c, bob, &["get", "deploy,svc,cm", "-n", "dev"]);
    let e = refused_as(&c, bob, &["get", "secrets", "-n", "dev"]);
    assert!(e.contains(r#"secrets is forbidden: User "bob" cannot list resource "secrets" in API group "" in the namespace "dev""#), "{e}");
    refused_as(&c, bob, &["get", "pods", "-n", "default"]);
    refused_as(&c, bob, &["create", "configmap", "x", "-n", "dev"]);
    assert_eq!(
        ok_as(&c, bob, &["auth", "can-i", "list", "pods", "-n", "dev"]).trim(),
        "yes"
    );
    let no = as_token(
        &c,
        bob,
        &["auth", "can-i", "create", "deployments", "-n", "dev"],
    );
    assert_eq!(
        (no.status.code(), String::from_utf8_lossy(&no.stdout).trim()),
        (Some(1), "no")
    );
    let list = ok_as(&c, bob, &["auth", "can-i", "--list", "-n", "dev"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
        "{list}"
    );
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    assert!(list.contains("/version"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");

    // The admin asks on bob's behalf: --as (impersonation) and a SubjectAccessReview.
    assert_eq!(
        can_i(&c, &["get", "pods", "-n", "dev", "--as", "bob"]),
        "yes"
    );
    assert_eq!(
        can_i(&c, &["get", "pods", "-n", "default", "--as", "bob"]),
        "no"
    );
    let e = refused_as(&c, bob, &["get", "pods", "--as", "alice"]);
    assert!(e.contains(r#"users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#), "{e}");
    let sar = c.kubectl_in(
        &["create", "-o", "json", "-f", "-"],
        Some(r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview",
                 "spec":{"user":"bob","resourceAttributes":{"verb":"list","resource":"pods","namespace":"dev"}}}"#),
    );
    let sar: Value =
        serde_json::from_slice(&sar.stdout).unwrap_or_else(|_| panic!("{}", text(&sar)));
    assert_eq!(sar["status"]["allowed"], true, "{sar}");
    assert_eq!(
        sar["status"]["reason"],
        r#"RBAC: allowed by RoleBinding "bob-view/dev" of ClusterRole "view" to User "bob""#
    );

    // A ServiceAccount's token carries its bindings.
    c.ok(&["create", "serviceaccount", "ci", "-n", "dev"]);
    c.ok(&[
        "create",
        "rolebinding",
        "ci-edit",
        "--clusterrole=edit",
        "--serviceaccount=dev:ci",
        "-n",
        "dev",
    ]);
    let sa_token = c
        .ok(&["create", "token", "ci", "-n", "dev"])
        .trim()
        .to_string();
    c.until("the ServiceAccount's binding to take effect", 10, || {
        as_token(
            &c,
            &sa_token,
            &["create", "configmap", "made-by-ci", "-n", "dev"],
        )
        .status
        .success()
        .then_some(())
    });
    let e = refused_as(&c, &sa_token, &["get", "pods", "-n", "default"]);
    assert!(
        e.contains(r#"User "system:serviceaccount:dev:ci" cannot list resource "pods""#),
        "{e}"
    );

    // Escalation: managing roles in dev grants nothing more than bob holds there.
    c.ok(&[
        "create",
        "rolebinding",
        "bob-admin",
        "--clusterrole=admin",
        "--user=bob",
        "-n",
        "dev",
    ]);
    c.until("bob's admin binding to take effect", 10, || {
        as_token(&c, bob, &["get", "secrets", "-n", "dev"])
            .status
            .success()
            .then_some(())
    });
    ok_as(
        &c,
        bob,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get",
            "--resource=secrets",
            "-n",
            "dev",
        ],
    );
    ok_as(
        &c,
        bob,
        &[
            "create",
            "rolebinding",
            "carol-view",
            "--clusterrole=view",
            "--user=carol",
            "-n",
            "dev",
        ],
    );
    let e = refused_as(
        &c,
        bob,
        &[
            "create",
            "role",
            "node-lister",
            "--verb=list",
            "--resource=nodes",
            "-n",
            "dev",
        ],
    );
    assert!(
        e.contains(r#"is attempting to grant RBAC permissions not currently held"#)
            && e.contains(r#"{APIGroups:[""], Resources:["nodes"], Verbs:["list"]}"#),
        "{e}"
    );
    let e = refused_as(
        &c,
        bob,
        &[
            "create",
            "rolebinding",
            "sneaky",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "dev",
        ],
    );
    assert!(
        e.contains(r#"rolebindings.rbac.authorization.k8s.io "sneaky" is forbidden"#),
        "{e}"
    );
    let e = refused_as(
        &c,
        bob,
        &[
            "create",
            "clusterrolebinding",
            "sneaky",
            "--clusterrole=view",
            "--user=bob",
        ],
    );
    assert!(e.contains("at the cluster scope"), "{e}");

    // Aggregation: a role labelled aggregate-to-view extends view (and edit, admin).
    assert_eq!(
        can_i(&c, &["list", "leases", "-n", "dev", "--as", "carol"]),
        "no"
    );
    c.apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: lease-viewer
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list]
"#,
    );
    c.until("view to aggregate lease-viewer", 15, || {
        (can_i(&c, &["list", "leases", "-n", "dev", "--as", "carol"]) == "yes").then_some(())
    });
    c.until("admin to aggregate lease-viewer through edit", 15, || {
        c.ok(&["get", "clusterrole", "admin", "-o", "json"])
            .contains("\"leases\"")
            .then_some(())
    });

    // Invalid objects are refused with the field named.
    let bad = c.kubectl_in(
        &["create", "-f", "-"],
        Some("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: bad, namespace: dev}\nrules:\n- nonResourceURLs: [/metrics]\n  verbs: [get]\n"),
    );
    assert!(
        text(&bad).contains("namespaced rules cannot apply to non-resource URLs"),
        "{}",
        text(&bad)
    );
    let e = c.kubectl_in(
        &[
            "patch",
            "rolebinding",
            "bob-view",
            "-n",
            "dev",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"edit"}}"#,
        ],
        None,
    );
    assert!(text(&e).contains("cannot change roleRef"), "{}", text(&e));

    // A default that lost a subject is put back at the next start; a user's edits to
    // one marked autoupdate=false are kept.
    c.ok(&["delete", "clusterrolebinding", "system:discovery"]);
    c.ok(&[
        "annotate",
        "clusterrole",
        "system:monitoring",
        "rbac.authorization.kubernetes.io/autoupdate=false",
        "--overwrite",
    ]);
    c.ok(&[
        "patch",
        "clusterrole",
        "system:monitoring",
        "--type=merge",
        "-p",
        r#"{"rules":[]}"#,
    ]);
    c.kill();
    c.spawn();
    c.wait_api();
    c.ok(&["get", "clusterrolebinding", "system:discovery"]);
    let m: Value =
        serde_json::from_str(&c.ok(&["get", "clusterrole", "system:monitoring", "-o", "json"]))
            .unwrap();
    assert!(m["rules"].as_array().is_none_or(|r| r.is_empty()), "{m}");
    ok_as(&c, bob, &["get", "pods", "-n", "dev"]);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn nodes_read_only_what_their_pods_use_and_write_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "node-one-token,system:node:n1,n1,system:nodes\nnode-two-token,system:node:n2,n2,system:nodes\n",
    )
    .unwrap();
    let c = Cluster::api_only_with(&["--token-auth-file", tokens.to_str().unwrap()]);
    let (n1, n2) = ("node-one-token", "node-two-token");
    // Each node registers itself; neither may register or change the other.
    let node = |name: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n");
    let create_as = |token: &str, yaml: &str| {
        let f = c.env.path(&format!("obj-{}.yaml", yaml.len()));
        std::fs::write(&f, yaml).unwrap();
        as_token(&c, token, &["create", "-f", f.to_str().unwrap()])
    };
    let o = create_as(n1, &node("n1"));
    assert!(o.status.success(), "{}", text(&o));
    let e = text(&create_as(n1, &node("n2")));
    assert!(
        e.contains(r#"node "n1" is not allowed to modify node "n2""#),
        "{e}"
    );
    assert!(create_as(n2, &node("n2")).status.success());
    ok_as(&c, n1, &["label", "node", "n1", "zone=a"]);
    let e = refused_as(&c, n1, &["label", "node", "n2", "zone=a"]);
    assert!(
        e.contains(r#"node "n1" is not allowed to modify node "n2""#),
        "{e}"
    );
    // Not the labels admins choose nodes by, nor roles.
    for label in [
        "node-restriction.kubernetes.io/pci=true",
        "node-role.kubernetes.io/control-plane=",
    ] {
        let e = refused_as(&c, n1, &["label", "node", "n1", label]);
        let key = label.split('=').next().unwrap();
        assert!(
            e.contains(&format!(
                r#"node "n1" is not allowed to modify labels: {key}"#
            )),
            "{e}"
        );
    }
    c.ok(&[
        "label",
        "node",
        "n1",
        "node-restriction.kubernetes.io/pci=true",
    ]);
    ok_as(&c, n1, &["label", "node", "n1", "zone=b", "--overwrite"]);

    // A pod on each node, each with a Secret of its own.
    c.ok(&["create", "secret", "generic", "db", "--from-literal=p=1"]);
    c.ok(&["create", "secret", "generic", "other", "--from-literal=p=2"]);
    c.ok(&["create", "configmap", "settings", "--from-literal=k=v"]);
    let pod = |name: &str, node: &str, secret: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    env:\n    - {{name: P, valueFrom: {{secretKeyRef: {{name: {secret}, key: p}}}}}}\n    envFrom:\n    - configMapRef: {{name: settings}}\n"
        )
    };
    c.apply(&pod("web", "n1", "db"));
    c.apply(&pod("api", "n2", "other"));
    c.until("n1 to read its pod's Secret", 10, || {
        as_token(&c, n1, &["get", "secret", "db"])
            .status
            .success()
            .then_some(())
    });
    ok_as(&c, n1, &["get", "configmap", "settings"]);
    let e = refused_as(&c, n1, &["get", "secret", "other"]);
    assert!(
        e.contains(r#"secrets "other" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#),
        "{e}"
    );
    let e = refused_as(&c, n1, &["get", "secrets"]);
    assert!(e.contains("cannot list resource \"secrets\""), "{e}");
    // What a node may do is not all listable (the Node authorizer decides request
    // by request): its rules review says so, and kubectl passes it on.
    let list = text(&as_token(&c, n1, &["auth", "can-i", "--list"]));
    assert!(
        list.contains("node authorizer does not support user rule resolution"),
        "{list}"
    );
    // Pods: all readable, only its own changed.
    ok_as(&c, n1, &["get", "pods", "-A"]);
    let e = refused_as(&c, n1, &["delete", "pod", "api"]);
    assert!(
        e.contains(r#"node "n1" can only delete pods bound to itself"#),
        "{e}"
    );
    let e = text(&create_as(n1, &pod("sneaky", "n1", "db")));
    assert!(e.contains("can only create mirror pods"), "{e}");
    let e = refused_as(&c, n1, &["create", "deployment", "x", "--image=busybox"]);
    assert!(
        e.contains(r#"User "system:node:n1" cannot create resource "deployments""#),
        "{e}"
    );
    // A mirror pod may reference nothing a node could then read.
    let mirror = "apiVersion: v1\nkind: Pod\nmetadata: {name: mirror, annotations: {kubernetes.io/config.mirror: x}}\nspec:\n  nodeName: n1\n  volumes: [{name: s, secret: {secretName: other}}]\n  containers: [{name: c, image: busybox}]\n";
    let e = text(&create_as(n1, mirror));
    assert!(
        e.contains(r#"node "n1" can not create pods that reference secrets"#),
        "{e}"
    );
    // A mirror pod's one owner is its own Node.
    let owned = |kind: &str, name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: owned\n  annotations: {{kubernetes.io/config.mirror: x}}\n  ownerReferences: [{{apiVersion: v1, kind: {kind}, name: {name}, uid: 00000000-0000-0000-0000-000000000000, controller: true}}]\nspec:\n  nodeName: n1\n  containers: [{{name: c, image: busybox}}]\n")
    };
    let e = text(&create_as(n1, &owned("Node", "n2")));
    assert!(
        e.contains(r#"node "n1" can only create pods with an owner reference set to itself"#),
        "{e}"
    );
    let e = text(&create_as(n1, &owned("Node", "n1")));
    assert!(e.contains("does not match the UID of node \"n1\""), "{e}");
    // Tokens: bound to its own pod only.
    ok_as(
        &c,
        n1,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "web",
        ],
    );
    let e = refused_as(&c, n1, &["create", "token", "default"]);
    assert!(e.contains("requested a token not bound to a pod"), "{e}");
    let e = refused_as(
        &c,
        n2,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "web",
        ],
    );
    assert!(e.contains("not its pod of that ServiceAccount"), "{e}");
    // Its own Lease only.
    let lease = |name: &str| {
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {name}}}\n")
    };
    assert!(create_as(n1, &lease("n1")).status.success());
    let e = text(&create_as(n1, &lease("n2")));
    assert!(
        e.contains("can only access node lease with the same name as the requesting node"),
        "{e}"
    );
    // The pod moved away (deleted and made on n2): n1 loses the Secret.
    c.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    c.until("n1 to lose the Secret of a pod no longer its", 10, || {
        (!as_token(&c, n1, &["get", "secret", "db"]).status.success()).then_some(())
    });
}
