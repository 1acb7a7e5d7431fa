//! Bad input: every case gives one clear error line naming the field or value, exits
//! non-zero, and leaves nothing behind (no cgroup, mount, state directory or process).

mod common;

use common::*;
use serde_json::json;

/// Runs `create` on the bundle and returns the error, after checking the failure shape
/// and that nothing was left behind.
fn create_fails(rt: &Runtime, b: &Bundle, id: &str) -> String {
    let err = rt.fail(&["create", "--bundle", b.path().to_str().unwrap(), id]);
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {err}");
    assert!(lines[0].starts_with("berth-runtime: "), "{err}");
    assert_no_leaks(rt, id, Some(b));
    assert!(
        processes_with(id).is_empty(),
        "a process of {id} is still running"
    );
    err
}

#[test]
fn config_that_is_not_json_or_lacks_fields() {
    let rt = Runtime::new();
    let b = Bundle::busybox();
    let id = unique_id("badjson");
    std::fs::write(b.path().join("config.json"), "{ this is not json").unwrap();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("config.json") && err.contains("invalid JSON"),
        "{err}"
    );

    std::fs::write(
        b.path().join("config.json"),
        r#"{"ociVersion":"1.0.0","root":{"path":"rootfs"},"linux":{}}"#,
    )
    .unwrap();
    let err = create_fails(&rt, &b, &id);
    assert!(err.contains("field process is required"), "{err}");

    std::fs::write(
        b.path().join("config.json"),
        r#"{"ociVersion":"1.0.0","root":{"path":"rootfs"},"process":{"args":"sh","cwd":"/"},"linux":{}}"#,
    )
    .unwrap();
    let err = create_fails(&rt, &b, &id);
    assert!(err.contains("field process.args"), "{err}");

    let mut b = Bundle::busybox();
    b.config["process"]["cwd"] = json!("relative");
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("process.cwd") && err.contains("absolute"),
        "{err}"
    );

    let mut b = Bundle::busybox();
    b.config["process"]["args"] = json!(["no-such-program"]);
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("no-such-program") && err.contains("not found"),
        "{err}"
    );

    let mut b = Bundle::busybox();
    b.config["process"]["capabilities"]["bounding"] = json!(["CAP_MAKE_COFFEE"]);
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("CAP_MAKE_COFFEE") || err.contains("capabilities"),
        "{err}"
    );
}

#[test]
fn missing_bundle_and_rootfs() {
    let rt = Runtime::new();
    let id = unique_id("nobundle");
    let err = rt.fail(&["create", "--bundle", "/nonexistent/bundle", &id]);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    assert!(!rt.root().join(&id).exists());

    let b = Bundle::busybox();
    std::fs::remove_file(b.path().join("config.json")).unwrap();
    let err = create_fails(&rt, &b, &id);
    assert!(err.contains("config.json: no such file"), "{err}");

    let mut b = Bundle::busybox();
    b.config["root"]["path"] = json!("no-rootfs-here");
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("root.path") && err.contains("no-rootfs-here"),
        "{err}"
    );
}

#[test]
fn namespace_paths_that_are_wrong() {
    let rt = Runtime::new();
    let id = unique_id("badns");
    let mut b = Bundle::busybox();
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.iter_mut().find(|n| n["type"] == "network").unwrap()["path"] = json!("/etc/hostname");
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("linux.namespaces[1].path") && err.contains("not a namespace file"),
        "{err}"
    );

    let mut b = Bundle::busybox();
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.iter_mut().find(|n| n["type"] == "network").unwrap()["path"] = json!("/proc/self/ns/uts");
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("is a uts namespace, not a network namespace"),
        "{err}"
    );

    let mut b = Bundle::busybox();
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.iter_mut().find(|n| n["type"] == "network").unwrap()["path"] = json!("/no/such/ns");
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("/no/such/ns") && err.contains("No such file"),
        "{err}"
    );

    let mut b = Bundle::busybox();
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "pid"}));
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(err.contains("listed twice"), "{err}");

    let mut b = Bundle::busybox();
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "uts");
    b.config["hostname"] = json!("x");
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(err.contains("hostname") && err.contains("UTS"), "{err}");
}

#[test]
fn cgroup_values_the_kernel_rejects() {
    let rt = Runtime::new();
    let id = unique_id("badcg");
    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["cpu"] = json!({"quota": 1, "period": 100000});
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("linux.resources.cpu.quota") && err.contains("\"1\""),
        "{err}"
    );

    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["cpu"] = json!({"cpus": "0-999"});
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("linux.resources.cpu.cpus") && err.contains("0-999"),
        "{err}"
    );

    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["hugepageLimits"] =
        json!([{"pageSize": "3MB", "limit": 1048576}]);
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("hugepageLimits") && (err.contains("3MB") || err.contains("hugetlb")),
        "{err}"
    );

    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["unified"] = json!({"memory.high": "100M"});
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("linux.resources.unified") && err.contains("memory.high"),
        "{err}"
    );

    let mut b = Bundle::busybox();
    b.config["linux"]["cgroupsPath"] = json!("system.slice:berth:x");
    b.write();
    let err = create_fails(&rt, &b, &id);
    assert!(
        err.contains("cgroupsPath") && err.contains("systemd"),
        "{err}"
    );
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    let rt = Runtime::new();
    let id = unique_id("unsup");
    for (field, value, needle) in [
        ("intelRdt", json!({"closID": "x"}), "linux.intelRdt"),
        ("netDevices", json!({"eth0": {}}), "linux.netDevices"),
    ] {
        let mut b = Bundle::busybox();
        b.config["linux"][field] = value;
        b.write();
        let err = create_fails(&rt, &b, &id);
        assert!(
            err.contains(needle) && err.contains("not supported"),
            "{err}"
        );
    }
}

#[test]
fn container_ids_and_duplicates() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    for bad in ["a/b", "..", "x\ny", "has space", ""] {
        let err = rt.fail(&["create", "--bundle", b.path().to_str().unwrap(), bad]);
        assert!(err.contains("invalid container id"), "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(
        std::fs::read_dir(rt.root()).map(|d| d.count()).unwrap_or(0),
        0
    );
    let id = unique_id("dup");
    let _g = rt.create(&b, &id);
    let err = rt.fail(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        rt.status(&id),
        "created",
        "the first container is untouched"
    );
}

#[test]
fn signals_and_states() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("sig");
    let _g = rt.create(&b, &id);
    for bad in ["SIGFOO", "0", "99", "RTMIN+77"] {
        let err = rt.fail(&["kill", &id, bad]);
        assert!(err.contains("unknown signal") && err.contains(bad), "{err}");
    }
    let err = rt.fail(&["start", "no-such-container"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = rt.fail(&["--systemd-cgroup", "state", &id]);
    assert!(
        err.contains("--systemd-cgroup") && err.contains("not supported"),
        "{err}"
    );
    let err = rt.fail(&["exec", &id, "--cwd"]);
    assert!(!err.is_empty());
}

#[test]
fn cgroups_that_are_not_the_containers_own() {
    let rt = Runtime::new();
    let id = unique_id("cgown");
    for path in ["/", "."] {
        let mut b = Bundle::busybox();
        b.config["linux"]["cgroupsPath"] = json!(path);
        b.write();
        let err = create_fails(&rt, &b, &id);
        assert!(
            err.contains("cgroupsPath") && err.contains("no cgroup of the container's own"),
            "{err}"
        );
    }
    // Another container's cgroup, with its processes in it, is refused and left alone.
    let mut first = Bundle::busybox();
    first.args(&["sleep", "1000"]);
    let first_id = unique_id("cgfirst");
    first.config["linux"]["cgroupsPath"] = json!(format!("/{first_id}"));
    first.write();
    let _g = rt.create(&first, &first_id);
    rt.ok(&["start", &first_id]);
    let mut second = Bundle::busybox();
    second.config["linux"]["cgroupsPath"] = json!(format!("/{first_id}"));
    second.write();
    let id = unique_id("cgsecond");
    let err = rt.fail(&["create", "--bundle", second.path().to_str().unwrap(), &id]);
    assert!(err.contains("already has processes"), "{err}");
    assert_eq!(
        rt.status(&first_id),
        "running",
        "the first container is untouched"
    );
    assert!(!rt.root().join(&id).exists());
}

#[test]
fn preserve_fds_that_are_not_open() {
    let rt = Runtime::new();
    let b = Bundle::busybox();
    let id = unique_id("prefds");
    let err = rt.fail(&[
        "run",
        "--preserve-fds",
        "4",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(
        err.contains("--preserve-fds 4") && err.contains("not open"),
        "{err}"
    );
    assert_no_leaks(&rt, &id, Some(&b));
}
