//! Custom resources: a CustomResourceDefinition made with kubectl, its objects
//! validated against the schema (422 with kube's messages), defaulted and pruned,
//! printed with the definition's columns, explained, scaled, with a status of their
//! own; the definition's deletion takes its objects, those created while it is
//! under way included. And an operator written with
//! kube-rs (`#[derive(CustomResource)]`, `kube::runtime::Controller`) running
//! against berth.

mod common;

use std::time::Duration;

use serde_json::Value;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            properties:
              cronSpec:
                type: string
                description: When the job runs, in cron syntax.
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              replicas:
                type: integer
                minimum: 1
                maximum: 10
                default: 1
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
"#;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn custom_resources_are_served_validated_and_printed_with_kubectl() {
    let s = common::Server::start();
    s.ok_in(&["apply", "-f", "-"], CRD);
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd/crontabs.stable.example.com",
    ]);
    let crds = s.ok(&["get", "crd"]);
    assert!(
        crds.contains("NAME")
            && crds.contains("CREATED AT")
            && crds.contains("crontabs.stable.example.com"),
        "{crds}"
    );
    let status: Value =
        serde_json::from_str(&s.ok(&["get", "crd", "crontabs.stable.example.com", "-o", "json"]))
            .unwrap();
    assert_eq!(status["status"]["acceptedNames"]["kind"], "CronTab");
    assert_eq!(
        status["status"]["storedVersions"],
        serde_json::json!(["v1"])
    );
    assert!(status["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "customresourcecleanup.apiextensions.k8s.io"));

    // An object: defaulted (replicas), printed with the definition's columns.
    let cron = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: my-new-cron-object\nspec:\n  cronSpec: '* * * * */5'\n  image: my-awesome-cron-image\n";
    s.ok_in(&["apply", "-f", "-"], cron);
    let table = s.ok(&["get", "crontabs"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("my-new-cron-object") && row.contains("* * * * */5") && row.contains(" 1 "),
        "{table}"
    );
    // The short name and the category find it too.
    assert!(s.ok(&["get", "ct"]).contains("my-new-cron-object"));
    assert!(s
        .ok(&["get", "all"])
        .contains("crontab.stable.example.com/my-new-cron-object"));
    let o: Value =
        serde_json::from_str(&s.ok(&["get", "ct", "my-new-cron-object", "-o", "json"])).unwrap();
    assert_eq!(o["spec"]["replicas"], 1, "the schema's default: {o}");
    assert_eq!(o["metadata"]["generation"], 1);

    // Schema violations: 422 with kube's field paths and messages.
    let bad = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad\nspec:\n  cronSpec: '* * * *'\n  replicas: 15\n  image: 7\n";
    let out = s.kubectl_in(&["create", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = text(&out);
    for want in [
        "The CronTab \"bad\" is invalid",
        "spec.replicas: Invalid value: 15: spec.replicas in body should be less than or equal to 10",
        "spec.cronSpec: Invalid value: \"* * * *\": spec.cronSpec in body should match",
        "spec.image: Invalid value: \"integer\": spec.image in body must be of type string: \"integer\"",
    ] {
        assert!(err.contains(want), "{want}\nin {err}");
    }
    let missing = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad\nspec:\n  image: x\n";
    let err = text(&s.kubectl_in(&["create", "-f", "-"], missing));
    assert!(err.contains("spec.cronSpec: Required value"), "{err}");

    // Unknown fields: refused with kubectl's strict validation, pruned without it.
    let extra = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: extra\nspec:\n  cronSpec: '0 * * * *'\n  bogus: 1\n";
    let err = text(&s.kubectl_in(&["create", "-f", "-"], extra));
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    s.ok_in(&["create", "--validate=false", "-f", "-"], extra);
    let o: Value = serde_json::from_str(&s.ok(&["get", "ct", "extra", "-o", "json"])).unwrap();
    assert!(o["spec"].get("bogus").is_none(), "pruned: {o}");

    // Changes: kubectl apply (a merge patch: custom objects take no strategic
    // merge patch), and kubectl patch's default strategic patch refused as kube does.
    s.ok_in(
        &["apply", "-f", "-"],
        &cron.replace("my-awesome-cron-image", "my-newer-image"),
    );
    assert_eq!(
        s.ok(&[
            "get",
            "ct",
            "my-new-cron-object",
            "-o",
            "jsonpath={.spec.image} {.metadata.generation}"
        ]),
        "my-newer-image 2"
    );
    let err = s.fails(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "-p",
        "{\"spec\":{\"image\":\"x\"}}",
    ]);
    assert!(
        err.contains("the body of the request was in an unknown format"),
        "{err}"
    );
    s.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        "{\"spec\":{\"image\":\"merged\"}}",
    ]);

    // Status is a subresource: the main path leaves it, the status path sets it.
    s.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        "{\"status\":{\"replicas\":9}}",
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "ct",
            "my-new-cron-object",
            "-o",
            "jsonpath={.status.replicas}"
        ]),
        ""
    );
    s.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--subresource=status",
        "--type=merge",
        "-p",
        "{\"status\":{\"replicas\":2,\"selector\":\"app=cron\"}}",
    ]);
    // Scale reads and writes the definition's paths.
    let scale: Value = serde_json::from_str(&s.ok(&[
        "get",
        "ct",
        "my-new-cron-object",
        "--subresource=scale",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(
        (
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["replicas"].as_i64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(scale["status"]["selector"], "app=cron");
    s.ok(&["scale", "ct", "my-new-cron-object", "--replicas=4"]);
    assert_eq!(
        s.ok(&[
            "get",
            "ct",
            "my-new-cron-object",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "4"
    );
    let err = s.fails(&["scale", "ct", "my-new-cron-object", "--replicas=11"]);
    assert!(err.contains("should be less than or equal to 10"), "{err}");

    // A default added to the schema later is served on objects stored before it
    // (kube defaults on read), in gets, lists and watches.
    s.ok(&[
        "patch",
        "crd",
        "crontabs.stable.example.com",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/timeZone", "value": {"type": "string", "default": "UTC"}}]"#,
    ]);
    let zone = || {
        s.ok(&[
            "get",
            "ct",
            "my-new-cron-object",
            "-o",
            "jsonpath={.spec.timeZone}",
        ])
    };
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while zone() != "UTC" {
        assert!(std::time::Instant::now() < end, "no default on read");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        s.ok(&["get", "ct", "-o", "jsonpath={.items[0].spec.timeZone}"]),
        "UTC"
    );
    let watched = s.ok(&[
        "get",
        "ct",
        "--watch-only=false",
        "-w",
        "--request-timeout=2s",
        "-o",
        "jsonpath={.spec.timeZone}",
    ]);
    assert!(watched.starts_with("UTC"), "{watched}");

    // kubectl explain reads the schema.
    let explain = s.ok(&["explain", "crontab.spec"]);
    assert!(
        explain.contains("KIND:") && explain.contains("CronTab"),
        "{explain}"
    );
    assert!(
        explain.contains("cronSpec") && explain.contains("<string>"),
        "{explain}"
    );
    assert!(explain.contains("When the job runs"), "{explain}");

    // A bad definition says what is wrong.
    let bad_crd = CRD
        .replace(
            "name: crontabs.stable.example.com",
            "name: widgets.stable.example.com",
        )
        .replace("plural: crontabs", "plural: widgets")
        .replace("kind: CronTab", "kind: Widget")
        .replace("singular: crontab", "singular: widget")
        .replace("shortNames: [ct]", "shortNames: [wd]")
        .replace(
            "            type: object\n            required: [cronSpec]",
            "            required: [cronSpec]",
        );
    let err = text(&s.kubectl_in(&["create", "-f", "-"], &bad_crd));
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"),
        "{err}"
    );
    // Deleting the definition takes its objects, then it goes.
    s.ok(&[
        "delete",
        "crd",
        "crontabs.stable.example.com",
        "--timeout=60s",
    ]);
    // kubectl's discovery cache may still name the resource (then the list is a
    // 404); asked afresh, it is gone.
    let err = s.fails(&["get", "crontabs"]);
    assert!(
        err.contains("the server doesn't have a resource type \"crontabs\"")
            || err.contains("the server could not find the requested resource"),
        "{err}"
    );
    let fresh = s.dir.path().join("fresh-cache");
    let gone = s.fails(&["get", "crontabs", "--cache-dir", fresh.to_str().unwrap()]);
    assert!(
        gone.contains("the server doesn't have a resource type \"crontabs\""),
        "{gone}"
    );
    let left = s.api.hub.under("/registry/stable.example.com/crontabs/");
    assert!(left.is_empty(), "objects left behind: {left:?}");
}

mod operator {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::wait::{await_condition, conditions};
    use kube::{CustomResource, CustomResourceExt, ResourceExt};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// What a greeting asks for.
    #[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "berth.example.com",
        version = "v1",
        kind = "Greeting",
        namespaced,
        status = "GreetingStatus",
        shortname = "gr",
        printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#
    )]
    pub struct GreetingSpec {
        /// Whom to greet.
        pub name: String,
        /// How many times.
        pub times: Option<u32>,
    }

    /// What the operator wrote.
    #[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
    pub struct GreetingStatus {
        pub message: String,
        pub observed_generation: Option<i64>,
    }

    async fn reconcile(g: Arc<Greeting>, client: Arc<kube::Client>) -> Result<Action, kube::Error> {
        let api: Api<Greeting> = Api::namespaced((*client).clone(), &g.namespace().unwrap());
        let times = g.spec.times.unwrap_or(1) as usize;
        let message = vec![format!("Hello, {}!", g.spec.name); times].join(" ");
        let status = serde_json::json!({"status": {"message": message,
            "observed_generation": g.metadata.generation}});
        api.patch_status(
            &g.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
        Ok(Action::await_change())
    }

    fn error_policy(_: Arc<Greeting>, _: &kube::Error, _: Arc<kube::Client>) -> Action {
        Action::requeue(std::time::Duration::from_secs(1))
    }

    pub async fn run(client: kube::Client) {
        // The definition kube-rs generates, created and waited for as operators do.
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &Greeting::crd())
            .await
            .expect("kube-rs's generated definition is accepted");
        let established = await_condition(
            crds,
            "greetings.berth.example.com",
            conditions::is_crd_established(),
        );
        tokio::time::timeout(std::time::Duration::from_secs(20), established)
            .await
            .expect("established in time")
            .unwrap();

        let greetings: Api<Greeting> = Api::namespaced(client.clone(), "default");
        let controller = Controller::new(greetings.clone(), Default::default())
            .run(reconcile, error_policy, Arc::new(client.clone()))
            .for_each(|_| async {});
        let handle = tokio::spawn(controller);

        let g = Greeting::new(
            "hi",
            GreetingSpec {
                name: "berth".into(),
                times: Some(2),
            },
        );
        greetings.create(&PostParams::default(), &g).await.unwrap();
        let message = |want: &'static str| {
            let greetings = greetings.clone();
            async move {
                let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
                loop {
                    let g = greetings.get("hi").await.unwrap();
                    let got = g.status.map(|s| s.message).unwrap_or_default();
                    if got == want {
                        return g.metadata.generation;
                    }
                    assert!(
                        std::time::Instant::now() < end,
                        "status {got:?}, waiting for {want:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(message("Hello, berth! Hello, berth!").await, Some(1));
        // A change of the spec reaches the controller through its watch.
        greetings
            .patch(
                "hi",
                &PatchParams::apply("test").force(),
                &Patch::Apply(serde_json::json!({
                "apiVersion": "berth.example.com/v1", "kind": "Greeting",
                "spec": {"name": "kube-rs", "times": 1}})),
            )
            .await
            .unwrap();
        assert_eq!(message("Hello, kube-rs!").await, Some(2));
        // The generated schema is enforced: a string where it says integer is a 422.
        let gvk = kube::api::GroupVersionKind::gvk("berth.example.com", "v1", "Greeting");
        let ar = kube::api::ApiResource::from_gvk(&gvk);
        let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        let mut bad = DynamicObject::new("bad", &ar);
        bad.data = serde_json::json!({"spec": {"name": "x", "times": "twice"}});
        match dynamic.create(&PostParams::default(), &bad).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{e:?}");
                assert!(e.message.contains("spec.times"), "{}", e.message);
            }
            other => panic!("a schema violation was accepted: {other:?}"),
        }
        handle.abort();
    }
}

#[test]
fn a_kube_rs_operator_runs_against_berth() {
    let s = common::Server::start();
    s.rt.block_on(async {
        let client = s.client().await;
        tokio::time::timeout(Duration::from_secs(90), operator::run(client))
            .await
            .expect("the operator test finished in time");
    });
}

/// A definition serving two versions (conversion None): objects written at either
/// are stored once, in the storage version, and read, listed and watched at each
/// with that version's apiVersion.
#[test]
fn other_served_versions_read_and_write_the_stored_objects() {
    use futures_util::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    use kube::runtime::watcher;

    let s = common::Server::start();
    s.rt.block_on(async {
        let client = s.client().await;
        let crds: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
                "customresourcedefinitions",
            ),
        );
        let schema = serde_json::json!({"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}});
        let crd: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "boxes.shapes.example.com"},
            "spec": {"group": "shapes.example.com", "scope": "Cluster",
                     "names": {"plural": "boxes", "kind": "Box"},
                     "versions": [
                        {"name": "v1beta1", "served": true, "storage": false, "schema": schema},
                        {"name": "v1", "served": true, "storage": true, "schema": schema}]}}))
        .unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
        let at = |v: &str| {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("shapes.example.com", v, "Box"),
                "boxes",
            );
            (Api::<DynamicObject>::all_with(client.clone(), &ar), ar)
        };
        let ((v1, ar1), (beta, ar_beta)) = (at("v1"), at("v1beta1"));
        // Served as soon as the definition is stored (the registry follows the hub).
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let mut b = DynamicObject::new("small", &ar_beta);
        b.data = serde_json::json!({"spec": {"size": 1}});
        loop {
            match beta.create(&PostParams::default(), &b).await {
                Ok(o) => {
                    assert_eq!(o.types.unwrap().api_version, "shapes.example.com/v1beta1");
                    break;
                }
                Err(e) => assert!(std::time::Instant::now() < end, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut big = DynamicObject::new("big", &ar1);
        big.data = serde_json::json!({"spec": {"size": 9}});
        v1.create(&PostParams::default(), &big).await.unwrap();
        // Each object at each version.
        for (api, av) in [
            (&v1, "shapes.example.com/v1"),
            (&beta, "shapes.example.com/v1beta1"),
        ] {
            for name in ["small", "big"] {
                let o = api.get(name).await.unwrap();
                assert_eq!(o.types.unwrap().api_version, av);
            }
            let list = api.list(&Default::default()).await.unwrap();
            assert_eq!(list.items.len(), 2);
        }
        // Stored once, in the storage version.
        for (_, o) in s.api.hub.under("/registry/shapes.example.com/boxes/") {
            assert_eq!(o["apiVersion"], "shapes.example.com/v1", "{o}");
        }
        // A watch at the other version sees its version.
        let mut w = watcher(beta.clone(), watcher::Config::default()).boxed();
        while let Some(ev) = w.next().await {
            if let watcher::Event::InitApply(o) = ev.unwrap() {
                assert_eq!(o.types.unwrap().api_version, "shapes.example.com/v1beta1");
                break;
            }
        }
        // The storage version moves to v1beta1: objects written at v1 are served at
        // each version as that version, and patches of them work.
        use kube::api::{Patch, PatchParams};
        crds.patch(
            "boxes.shapes.example.com",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"versions": [
                {"name": "v1beta1", "served": true, "storage": true, "schema": schema},
                {"name": "v1", "served": true, "storage": false, "schema": schema}]}})),
        )
        .await
        .unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while s
            .api
            .hub
            .under("/registry/apiextensions.k8s.io/customresourcedefinitions/")[0]
            .1["spec"]["versions"][0]["storage"]
            != true
        {
            assert!(
                std::time::Instant::now() < end,
                "the change never reached the hub"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (api, av) in [
            (&v1, "shapes.example.com/v1"),
            (&beta, "shapes.example.com/v1beta1"),
        ] {
            let o = api.get("big").await.unwrap();
            assert_eq!(o.types.unwrap().api_version, av);
            let patched = api
                .patch(
                    "big",
                    &PatchParams::default(),
                    &Patch::Merge(
                        serde_json::json!({"metadata": {"labels": {"at": av.replace('/', "-")}}}),
                    ),
                )
                .await
                .unwrap();
            assert_eq!(patched.types.unwrap().api_version, av);
        }
        // A body of the wrong version is refused, saying which was expected.
        let mut wrong = DynamicObject::new("wrong", &ar1);
        wrong.data = serde_json::json!({"spec": {"size": 2}});
        let r = kube::core::Request::new("/apis/shapes.example.com/v1beta1/boxes")
            .create(&PostParams::default(), serde_json::to_vec(&wrong).unwrap())
            .unwrap();
        match client.request::<DynamicObject>(r).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 400);
                assert!(
                    e.message
                        .contains("expected API version (shapes.example.com/v1beta1)"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
    });
}

const RULED_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: pools.cel.example.com
spec:
  group: cel.example.com
  scope: Namespaced
  names: {plural: pools, singular: pool, kind: Pool}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.replicas
              message: minReplicas must not exceed replicas
            - rule: self.storageClass == oldSelf.storageClass
              message: storageClass is immutable
              fieldPath: .storageClass
              reason: FieldValueForbidden
            - rule: quantity(self.size).isLessThan(quantity('10Gi'))
              messageExpression: "'size ' + self.size + ' is over 10Gi'"
            properties:
              replicas: {type: integer}
              minReplicas: {type: integer, default: 1}
              storageClass: {type: string}
              size: {type: string, default: 1Gi}
              endpoints:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    url:
                      type: string
                      x-kubernetes-validations:
                      - rule: isURL(self) && url(self).getScheme() == 'https'
                        message: endpoints must be https URLs
                  x-kubernetes-validations:
                  - rule: self.url == oldSelf.url || !has(oldSelf.url)
                    message: an endpoint's url is fixed once set
"#;

/// CEL rules (x-kubernetes-validations) through kubectl: a definition whose rule does
/// not compile refused; objects refused with the rule's message (or its
/// messageExpression), reason and fieldPath; a transition rule only on updates,
/// matching map-list items by key; Kubernetes' quantity and URL libraries. And
/// server-side apply merging into the schema's map-lists.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn cel_rules_validate_custom_resources() {
    let s = common::Server::start();
    let fails_in = |args: &[&str], input: &str| {
        let o = s.kubectl_in(args, input);
        assert!(
            !o.status.success(),
            "kubectl {args:?} succeeded: {}",
            text(&o)
        );
        text(&o)
    };
    let broken = RULED_CRD
        .replace("pools.cel", "brokens.cel")
        .replace(
            "{plural: pools, singular: pool, kind: Pool}",
            "{plural: brokens, singular: broken, kind: Broken}",
        )
        .replace("self.minReplicas <= self.replicas", "self.minReplicas <=");
    let err = fails_in(&["apply", "-f", "-"], &broken);
    assert!(
        err.contains("spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value")
            || err.contains("x-kubernetes-validations[0].rule: Invalid value: \"self.minReplicas <=\": compilation failed"),
        "{err}"
    );
    s.ok_in(&["apply", "-f", "-"], RULED_CRD);
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd/pools.cel.example.com",
    ]);

    let pool = |name: &str, spec: &str| {
        format!(
            "apiVersion: cel.example.com/v1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    };
    // Defaults are in place before the rules run (minReplicas 1, size 1Gi).
    s.ok_in(
        &["apply", "-f", "-"],
        &pool("a", "  replicas: 2\n  storageClass: fast\n  endpoints:\n  - name: api\n    url: https://a.example.com\n  - name: web\n"),
    );
    let err = fails_in(
        &["create", "-f", "-"],
        &pool("b", "  replicas: 1\n  minReplicas: 3\n  size: 20Gi\n  endpoints:\n  - name: api\n    url: http://b.example.com\n"),
    );
    for want in [
        "The Pool \"b\" is invalid",
        "spec: Invalid value: \"object\": minReplicas must not exceed replicas",
        "spec: Invalid value: \"object\": size 20Gi is over 10Gi",
        "spec.endpoints[0].url: Invalid value: \"string\": endpoints must be https URLs",
    ] {
        assert!(err.contains(want), "{want}\nin {err}");
    }
    assert!(
        !err.contains("storageClass"),
        "a transition rule on a create: {err}"
    );

    // Updates: the transition rules see the stored object.
    let err = fails_in(
        &["apply", "-f", "-"],
        &pool("a", "  replicas: 2\n  storageClass: slow\n  endpoints:\n  - name: web\n  - name: api\n    url: https://other.example.com\n"),
    );
    for want in [
        "spec.storageClass: Forbidden: storageClass is immutable",
        "spec.endpoints[1]: Invalid value: \"object\": an endpoint's url is fixed once set",
    ] {
        assert!(err.contains(want), "{want}\nin {err}");
    }
    // The item found by its key wherever it moved; a url set for the first time.
    s.ok_in(
        &["apply", "-f", "-"],
        &pool("a", "  replicas: 3\n  storageClass: fast\n  endpoints:\n  - name: web\n    url: https://web.example.com\n  - name: api\n    url: https://a.example.com\n"),
    );
    let o: Value = serde_json::from_str(&s.ok(&["get", "pool", "a", "-o", "json"])).unwrap();
    assert_eq!(o["spec"]["replicas"], 3);

    // Server-side apply by another manager merges into the map-list by its key (the
    // schema's x-kubernetes-list-map-keys) instead of replacing the list.
    s.ok_in(
        &[
            "apply",
            "--server-side",
            "--field-manager=mirror",
            "-f",
            "-",
        ],
        &pool(
            "a",
            "  endpoints:\n  - name: mirror\n    url: https://mirror.example.com\n",
        ),
    );
    let names = s.ok(&[
        "get",
        "pool",
        "a",
        "-o",
        "jsonpath={.spec.endpoints[*].name}",
    ]);
    assert_eq!(names, "web api mirror");
    // Taking back its item leaves the others'.
    s.ok_in(
        &[
            "apply",
            "--server-side",
            "--field-manager=mirror",
            "-f",
            "-",
        ],
        &pool("a", "  replicas: 3\n"),
    );
    let names = s.ok(&[
        "get",
        "pool",
        "a",
        "-o",
        "jsonpath={.spec.endpoints[*].name}",
    ]);
    assert_eq!(names, "web api");
}

/// Writers creating objects as fast as they can while their definition is deleted
/// are refused (405) once the deletion is seen, and whatever a create that raced the
/// deletion wrote is taken back: once the definition is gone the store holds none of
/// its objects (one left there would come back with a definition of the same name).
/// The last create is made deterministic: it is handed the resource as served before
/// the deletion, as a request that passed its checks just before would hold it.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn creates_racing_the_definitions_deletion_leave_nothing_behind() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use berth_store::Store;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
    use kube::runtime::wait::{await_condition, conditions};

    const NAME: &str = "crontabs.stable.example.com";
    const PREFIX: &str = "/registry/stable.example.com/crontabs/";
    let s = common::Server::start();
    // The definition made and served.
    let define = |s: &common::Server| {
        s.ok_in(&["create", "-f", "-"], CRD);
        s.ok(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{NAME}"),
            "--timeout=30s",
        ]);
    };
    define(&s);
    let served = berth_apiserver::resources::find("stable.example.com", "v1", "crontabs")
        .expect("served once established");
    let (made, refused) = s.rt.block_on(async {
        let client = s.client().await;
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("stable.example.com", "v1", "CronTab"),
            "crontabs",
        );
        let made = Arc::new(AtomicUsize::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..8 {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
            let (ar, made) = (ar.clone(), made.clone());
            writers.spawn(async move {
                for i in 0.. {
                    let o = DynamicObject::new(&format!("w{w}-{i}"), &ar)
                        .data(serde_json::json!({"spec": {"cronSpec": "* * * * *"}}));
                    match api.create(&PostParams::default(), &o).await {
                        Ok(_) => {
                            made.fetch_add(1, Ordering::Relaxed);
                        }
                        // Terminating (405), then gone (404).
                        Err(kube::Error::Api(e)) if e.code == 405 || e.code == 404 => {
                            return e.code;
                        }
                        Err(e) => panic!("create w{w}-{i}: {e}"),
                    }
                }
                unreachable!("the loop returns")
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while made.load(Ordering::Relaxed) < 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "200 creates within a minute"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let uid = crds.get(NAME).await.unwrap().metadata.uid.unwrap();
        crds.delete(NAME, &DeleteParams::default()).await.unwrap();
        let mut refused = Vec::new();
        while let Some(code) = tokio::time::timeout(Duration::from_secs(60), writers.join_next())
            .await
            .expect("every writer refused within a minute")
        {
            refused.push(code.unwrap());
        }
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds, NAME, conditions::is_deleted(&uid)),
        )
        .await
        .expect("the definition went within a minute")
        .unwrap();
        (made.load(Ordering::Relaxed), refused)
    });
    assert!(made >= 200, "{made}");
    assert!(
        refused.contains(&405),
        "creates refused while terminating: {refused:?}"
    );
    let left = |s: &common::Server| {
        s.rt.block_on(s.api.store.list(PREFIX, 0, 0, None))
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        left(&s),
        Vec::<String>::new(),
        "objects left behind of {made} made"
    );
    // A create that passed its checks before the deletion and is written after the
    // cleanup's last look: written, found late, taken back.
    // (Made through the resource as served before the deletion.)
    // Its refusal, boxed: an ApiError is large.
    let create_as_served_before = |name: &str| {
        s.rt.block_on(berth_apiserver::objects::create_internal(
            &s.api,
            served,
            Some("default"),
            serde_json::json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                "metadata": {"name": name}, "spec": {"cronSpec": "* * * * *"}}),
        ))
        .map_err(Box::new)
    };
    let e = create_as_served_before("late").expect_err("a create after the definition went");
    assert_eq!(e.code, 405, "{}", e.message);
    assert!(e.message.contains("terminating"), "{}", e.message);
    assert_eq!(left(&s), Vec::<String>::new(), "the late create taken back");
    // The definition made again under its name is another one: a create checked
    // against the first is taken back all the same.
    define(&s);
    let e = create_as_served_before("later")
        .expect_err("a create checked against the definition deleted");
    assert_eq!(e.code, 405, "{}", e.message);
    assert_eq!(
        left(&s),
        Vec::<String>::new(),
        "the later create taken back"
    );
    // The new definition serves creates.
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: anew\nspec:\n  cronSpec: '* * * * *'\n",
    );
    assert_eq!(left(&s), vec![format!("{PREFIX}default/anew")]);
}
