//! kube-rs (the Rust client) against berth: a watcher that relists, server-side apply
//! through Api::patch, and paging.

mod common;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Api;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"v": v}}))
        .unwrap()
}

#[test]
fn watcher_apply_and_paging() {
    let s = common::Server::start();
    s.rt.block_on(async {
        let client = s.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        // A watcher: an initial list, then live events.
        let mut w = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut seen_init = false;
        while let Some(ev) = w.next().await {
            if matches!(ev.unwrap(), watcher::Event::InitDone) {
                seen_init = true;
                break;
            }
        }
        assert!(seen_init);
        api.create(&PostParams::default(), &cm("a", "1")).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(ev) = w.next().await {
                if let watcher::Event::Apply(o) = ev.unwrap() {
                    return o.metadata.name.unwrap();
                }
            }
            String::new()
        })
        .await
        .unwrap();
        assert_eq!(got, "a");
        // Streaming lists (sendInitialEvents) work too.
        let mut sw = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
        let mut names = Vec::new();
        while let Some(ev) = sw.next().await {
            match ev.unwrap() {
                watcher::Event::InitApply(o) => names.push(o.metadata.name.unwrap()),
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert!(names.contains(&"a".to_string()) && names.contains(&"kube-root-ca.crt".to_string()), "{names:?}");
        // Server-side apply: create, change, and a conflict with another manager.
        let pp = PatchParams::apply("berth-test");
        let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "1", "j": "x"}});
        api.patch("ssa", &pp, &Patch::Apply(&applied)).await.unwrap();
        let applied2 = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "2"}});
        let o = api.patch("ssa", &pp, &Patch::Apply(&applied2)).await.unwrap();
        let data = o.data.unwrap();
        assert_eq!(data.get("k").map(String::as_str), Some("2"));
        assert!(!data.contains_key("j"), "a field no longer applied is removed");
        let other = PatchParams::apply("someone-else");
        let clash = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "3"}});
        match api.patch("ssa", &other, &Patch::Apply(&clash)).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
            other => panic!("{other:?}"),
        }
        api.patch("ssa", &other.force(), &Patch::Apply(&clash)).await.unwrap();
        // Paging.
        for i in 0..12 {
            api.create(&PostParams::default(), &cm(&format!("p{i:02}"), "x")).await.unwrap();
        }
        let mut lp = ListParams::default().limit(5);
        let mut total = 0;
        let mut pages = 0;
        loop {
            let page = api.list(&lp).await.unwrap();
            total += page.items.len();
            pages += 1;
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        assert_eq!((total, pages), (15, 3), "12 + a + ssa + kube-root-ca.crt");
    });
}

#[test]
fn metadata_only_lists_gets_and_watches() {
    use kube::api::PartialObjectMeta;
    let s = common::Server::start();
    s.rt.block_on(async {
        let client = s.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        api.create(&PostParams::default(), &cm("m1", "big"))
            .await
            .unwrap();
        let meta: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(client.clone(), "default");
        // The server answers with metadata alone: no data comes over the wire.
        let raw: serde_json::Value = client
            .request(
                http::Request::get("/api/v1/namespaces/default/configmaps")
                    .header(
                        "Accept",
                        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                    )
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(raw["kind"], "PartialObjectMetadataList");
        let m1 = raw["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "m1")
            .unwrap();
        assert_eq!(m1["kind"], "PartialObjectMetadata");
        assert!(m1.get("data").is_none(), "{m1}");
        let one = meta.get_metadata("m1").await.unwrap();
        assert_eq!(one.metadata.name.as_deref(), Some("m1"));
        // A metadata watch sees a change by its metadata.
        let mut w = watcher(meta, watcher::Config::default()).boxed();
        while let Some(ev) = w.next().await {
            if matches!(ev.unwrap(), watcher::Event::InitDone) {
                break;
            }
        }
        api.create(&PostParams::default(), &cm("m2", "x"))
            .await
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(ev) = w.next().await {
                if let watcher::Event::Apply(o) = ev.unwrap() {
                    return o.metadata.name.unwrap_or_default();
                }
            }
            String::new()
        })
        .await
        .unwrap();
        assert_eq!(got, "m2");
    });
}

/// The in-process entry point takes a request down the same path as HTTPS: defaulting,
/// validation and watches.
#[test]
fn an_in_process_client_goes_through_defaulting_validation_and_watches() {
    use berth_apiserver::inprocess::InProcess;
    use http_body_util::BodyExt;
    use k8s_openapi::api::core::v1::Service;
    use tower_service::Service as _;

    let s = common::Server::start();
    s.rt.block_on(async {
        let entry = InProcess::new(s.api.clone(), "system:kube-scheduler", &["system:masters"]);
        let client = kube::Client::new(entry.clone(), "default");
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
        loop {
            if matches!(w.next().await.unwrap().unwrap(), watcher::Event::InitDone) {
                break;
            }
        }
        cms.create(&PostParams::default(), &cm("inproc", "1"))
            .await
            .unwrap();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if let watcher::Event::Apply(o) = w.next().await.unwrap().unwrap() {
                    return o.metadata.name.unwrap();
                }
            }
        })
        .await
        .expect("the watch sees the create");
        assert_eq!(seen, "inproc");
        // Its writes are the component's in managedFields, as on Kubernetes.
        let got = cms.get("inproc").await.unwrap();
        let managers: Vec<String> = got
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert_eq!(managers, ["kube-scheduler"]);
        // Defaulting: a Service gets its cluster IP and defaults.
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
        .unwrap();
        let made = svcs.create(&PostParams::default(), &svc).await.unwrap();
        let spec = made.spec.unwrap();
        assert!(
            spec.cluster_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("10.96.")),
            "{spec:?}"
        );
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        // Validation: a bad name is a 422 naming the field.
        let err = cms
            .create(&PostParams::default(), &cm("Not_A_Name", "1"))
            .await
            .unwrap_err();
        match err {
            kube::Error::Api(e) => {
                assert_eq!(e.code, 422, "{e:?}");
                assert!(e.message.contains("metadata.name"), "{}", e.message);
            }
            e => panic!("{e}"),
        }
        // The raw entry point answers plain http requests too.
        let mut raw = entry.clone();
        let req = http::Request::get("/api/v1/namespaces/default/configmaps/inproc")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = raw.call(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"inproc\""));
    });
}

/// Patches start from the watch hub's copy, which may be behind the store: a patch
/// that would change nothing of a copy behind is checked in the store and written,
/// and concurrent patches each land once.
#[test]
fn patches_from_the_hubs_copy_lose_no_update() {
    let s = common::Server::start();
    s.rt.block_on(async {
        let client = s.client().await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        cms.create(&PostParams::default(), &cm("flip", "a"))
            .await
            .unwrap();
        // Back and forth, each read back at once: a patch setting what the copy still
        // shows must not be taken for a no-op.
        for i in 0..300 {
            let v = if i % 2 == 0 { "b" } else { "a" };
            let patch = serde_json::json!({"data": {"v": v}});
            let out = cms
                .patch("flip", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
            assert_eq!(out.data.unwrap()["v"], v, "round {i}: the answer");
            let now = cms.get("flip").await.unwrap();
            assert_eq!(now.data.unwrap()["v"], v, "round {i}: the stored object");
        }
        // A uid that does not hold is kube's precondition failure, answered as such
        // (a lost race would be tried again).
        let wrong = serde_json::json!({"metadata": {"uid": "not-its-uid"}, "data": {"v": "c"}});
        match cms
            .patch("flip", &PatchParams::default(), &Patch::Merge(&wrong))
            .await
        {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 409, "{e:?}");
                assert!(
                    e.message
                        .starts_with("Precondition failed: UID in precondition: not-its-uid"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        // Sixteen writers, each patching its own key twenty times at once.
        cms.create(&PostParams::default(), &cm("many", "0"))
            .await
            .unwrap();
        let writers = (0..16).map(|w| {
            let cms = cms.clone();
            tokio::spawn(async move {
                for j in 0..20 {
                    let patch = serde_json::json!({"data": {format!("w{w}"): j.to_string()}});
                    cms.patch("many", &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .unwrap();
                }
            })
        });
        for w in writers.collect::<Vec<_>>() {
            w.await.unwrap();
        }
        let data = cms.get("many").await.unwrap().data.unwrap();
        for w in 0..16 {
            assert_eq!(data[&format!("w{w}")], "19", "writer {w}: {data:?}");
        }
    });
}
