//! OCI hooks: each of the six runs at its point of the lifecycle, in the right
//! namespace, with the state on stdin, its own args and env; failures and timeouts.

mod common;

use common::*;
use serde_json::{json, Value};

/// A hook that appends "<name> <status> <pid> <HOOKENV> <HOME>" to `log`.
fn logging_hook(name: &str, log: &str) -> Value {
    let script = format!(
        "st=$(cat); s=$(echo \"$st\" | sed -n 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/p'); \
         p=$(echo \"$st\" | sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); \
         echo \"{name} $s $p $HOOKENV ${{HOME:-nohome}} $0\" >> {log}"
    );
    json!({"path": "/bin/sh", "args": ["sh", "-c", script, "argzero"], "env": [format!("HOOKENV={name}-env")]})
}

#[test]
fn all_hooks_run_in_order_with_state_args_and_env() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let logdir = tempfile::tempdir().unwrap();
    let host_log = logdir.path().join("log");
    let host_log_s = host_log.to_str().unwrap().to_string();
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/hooklog", "type": "bind", "source": logdir.path(), "options": ["bind"]}));
    b.config["hooks"] = json!({
        "prestart": [logging_hook("prestart", &host_log_s)],
        "createRuntime": [logging_hook("createRuntime", &host_log_s)],
        "createContainer": [logging_hook("createContainer", &host_log_s)],
        "startContainer": [logging_hook("startContainer", "/hooklog/log")],
        "poststart": [logging_hook("poststart", &host_log_s)],
        "poststop": [logging_hook("poststop", &host_log_s)],
    });
    b.args(&["sleep", "1000"]);
    let id = unique_id("hooks");
    let _g = rt.create(&b, &id);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let log = || std::fs::read_to_string(&host_log).unwrap_or_default();
    let lines: Vec<String> = log().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        // As runtime-tools' hooks_stdin expects (and runc and crun give).
        format!("prestart created {pid} prestart-env nohome argzero")
    );
    assert_eq!(
        lines[1],
        format!("createRuntime creating {pid} createRuntime-env nohome argzero")
    );
    assert!(
        lines[2].starts_with(&format!("createContainer creating {pid} ")),
        "{lines:?}"
    );
    rt.ok(&["start", &id]);
    wait_for("startContainer and poststart", 2000, || {
        log().lines().count() == 5
    });
    let lines: Vec<String> = log().lines().map(str::to_string).collect();
    assert!(lines[3].starts_with("startContainer created"), "{lines:?}");
    assert_eq!(
        lines[4],
        format!("poststart running {pid} poststart-env nohome argzero")
    );
    rt.ok(&["delete", "--force", &id]);
    let lines: Vec<String> = log().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines[5].starts_with("poststop stopped"), "{lines:?}");
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn create_container_hook_runs_in_the_container_namespaces() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let out = tempfile::tempdir().unwrap();
    let f = out.path().join("ns");
    b.config["hooks"] = json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", format!("readlink /proc/self/ns/mnt > {}.runtime", f.display())]}],
        "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", format!("readlink /proc/self/ns/mnt > {}.container", f.display())]}],
    });
    b.sh("true");
    rt.output_of(&b, &unique_id("hookns"));
    let host = std::fs::read_link("/proc/self/ns/mnt")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let runtime = std::fs::read_to_string(format!("{}.runtime", f.display())).unwrap();
    let container = std::fs::read_to_string(format!("{}.container", f.display())).unwrap();
    assert_eq!(runtime.trim(), host);
    assert_ne!(
        container.trim(),
        host,
        "createContainer runs in the container's mount namespace"
    );
}

#[test]
fn failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["hooks"] = json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"]}],
    });
    b.args(&["sleep", "1000"]);
    let id = unique_id("hookfail");
    let err = rt.fail(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("hooks.createRuntime[0]"), "{err}");
    assert!(
        err.contains("status 3") && err.contains("hook-says-no"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
    assert_no_leaks(&rt, &id, Some(&b));
    assert!(processes_with(&id).is_empty(), "no process left for {id}");
}

#[test]
fn hanging_hook_times_out() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["hooks"] = json!({
        "prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}],
    });
    b.write();
    let id = unique_id("hookhang");
    let t = std::time::Instant::now();
    let err = rt.fail(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        err.contains("hooks.prestart[0]") && err.contains("timed out"),
        "{err}"
    );
    assert_no_leaks(&rt, &id, Some(&b));
    assert!(processes_with("sleep 30").is_empty(), "the hook was killed");
}

#[test]
fn failing_poststart_and_poststop_hooks_only_warn() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["hooks"] = json!({
        "poststart": [{"path": "/bin/false"}],
        "poststop": [{"path": "/bin/false"}],
    });
    b.sh("echo ran");
    let id = unique_id("hookwarn");
    let (code, out, err) = rt.run_container(&b, &id);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ran\n");
    assert!(
        err.contains("hooks.poststart[0]") && err.contains("hooks.poststop[0]"),
        "{err}"
    );
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn failing_start_container_hook_stops_the_container() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["hooks"] = json!({"startContainer": [{"path": "/bin/false"}]});
    b.sh("echo must-not-run");
    let id = unique_id("hookstart");
    let (code, out, err) = rt.run_container(&b, &id);
    assert_ne!(code, 0);
    assert!(!out.contains("must-not-run"), "{out}");
    assert!(err.contains("hooks.startContainer[0]"), "{err}");
    assert_no_leaks(&rt, &id, Some(&b));
}
