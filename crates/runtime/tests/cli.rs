//! The command line itself: features, spec, version, logging in the formats conmon and
//! containerd read, and options that only some hosts can honour.

mod common;

use common::*;
use serde_json::json;

#[test]
fn features_is_runc_shaped_json() {
    let rt = Runtime::new();
    let f: serde_json::Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    for hook in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(
            f["hooks"].as_array().unwrap().iter().any(|h| h == hook),
            "{hook}"
        );
    }
    assert!(f["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rro"));
    let linux = &f["linux"];
    assert_eq!(linux["namespaces"].as_array().unwrap().len(), 8);
    assert!(linux["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "CAP_SYS_ADMIN"));
    assert_eq!(linux["cgroup"]["systemd"], false);
    assert_eq!(linux["seccomp"]["enabled"], true);
    assert!(f["annotations"]["io.github.seccomp.libseccomp.version"]
        .as_str()
        .unwrap()
        .starts_with('2'));
}

#[test]
fn spec_writes_a_default_config_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let out = rt
        .cmd()
        .arg("spec")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(c["process"]["args"], json!(["sh"]));
    assert_eq!(c["root"]["path"], "rootfs");
    let out = rt
        .cmd()
        .arg("spec")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    let rootless = tempfile::tempdir().unwrap();
    rt.ok(&[
        "spec",
        "--rootless",
        "--bundle",
        rootless.path().to_str().unwrap(),
    ]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rootless.path().join("config.json")).unwrap())
            .unwrap();
    assert!(c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user"));
    assert_eq!(c["linux"]["uidMappings"][0]["size"], 1);
}

#[test]
fn version_names_the_spec() {
    let out = Runtime::new().ok(&["--version"]);
    assert!(out.starts_with("berth-runtime "), "{out}");
    assert!(out.contains("spec: 1.2.0"), "{out}");
}

#[test]
fn errors_go_to_the_log_file_as_logrus_json() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.json");
    let err = rt.fail(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "nope",
    ]);
    assert!(err.contains("container nope does not exist"), "{err}");
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert_eq!(v["msg"], "container nope does not exist");
    assert!(v["time"].as_str().unwrap().contains('T'));
    // Text format, and debug lines only with --debug.
    let text = dir.path().join("log.txt");
    let b = Bundle::busybox();
    let id = unique_id("log");
    let _g = Guard {
        rt: &rt,
        id: id.clone(),
    };
    rt.ok(&[
        "--log",
        text.to_str().unwrap(),
        "--debug",
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let t = std::fs::read_to_string(&text).unwrap();
    assert!(
        t.contains("level=debug msg=\"phase create: init ready"),
        "{t}"
    );
}

#[test]
fn new_session_keyring_unless_asked_not_to() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["maskedPaths"] = json!([]);
    b.sh("cat /proc/keys");
    let id = unique_id("keyring");
    let out = rt.output_of(&b, &id);
    assert!(
        out.contains(&format!("_ses.{id}")),
        "a session keyring of the container's own: {out}"
    );
    let id = unique_id("keyring");
    let out = rt.ok(&[
        "run",
        "--no-new-keyring",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(!out.contains(&format!("_ses.{id}")), "{out}");
}

#[test]
fn hugetlb_limits_on_a_hybrid_hosts_cgroup2() {
    let layout = berth_runtime::cgroups::Layout::detect().unwrap();
    if layout.v1.contains_key("hugetlb")
        || !layout.unified_controllers().iter().any(|c| c == "hugetlb")
    {
        eprintln!("skipped: hugetlb is not a cgroup2-only controller on this host");
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["hugepageLimits"] =
        json!([{"pageSize": "2MB", "limit": 4194304}]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "cgroup");
    b.args(&["sleep", "1000"]);
    let id = unique_id("huge");
    let _g = rt.create(&b, &id);
    let unified = layout.unified.unwrap().mountpoint;
    let v = std::fs::read_to_string(unified.join(&id).join("hugetlb.2MB.max")).unwrap();
    assert_eq!(v.trim(), "4194304");
}

#[test]
fn scheduler_and_io_priority_are_applied() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
    b.config["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    b.sh("cut -d' ' -f19,41 /proc/self/stat; ionice -p $$ 2>/dev/null || true");
    let out = rt.output_of(&b, &unique_id("sched"));
    let first: Vec<&str> = out.lines().next().unwrap().split(' ').collect();
    assert_eq!(
        first,
        ["5", "3"],
        "nice 5 and policy 3 (SCHED_BATCH): {out}"
    );
}
