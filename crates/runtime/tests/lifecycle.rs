//! Lifecycle: creating → created → running → stopped, operations in the wrong state,
//! exit codes, pause/resume, ps, events, update, list, and cleanup on delete.

mod common;

use common::*;

#[test]
fn create_start_state_kill_delete() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("life");
    let pidfile = b.path().join("init.pid");
    rt.ok(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);
    let _g = Guard {
        rt: &rt,
        id: id.clone(),
    };
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["ociVersion"], "1.2.0");
    assert_eq!(
        st["bundle"],
        b.path().canonicalize().unwrap().to_str().unwrap()
    );
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pid.to_string()
    );
    // The init waits for start: it has not run `sleep` yet.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");

    let err = rt.fail(&["resume", &id]);
    assert!(
        err.contains("cannot resume") && err.contains("created"),
        "{err}"
    );
    rt.ok(&["start", &id]);
    wait_for("sleep to run", 2000, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    assert_eq!(rt.status(&id), "running");
    let err = rt.fail(&["start", &id]);
    assert!(
        err.contains("cannot start") && err.contains("running"),
        "{err}"
    );
    let err = rt.fail(&["delete", &id]);
    assert!(err.contains("--force"), "{err}");

    rt.ok(&["kill", &id, "KILL"]);
    wait_for("the container to stop", 2000, || {
        rt.status(&id) == "stopped"
    });
    assert_eq!(rt.state(&id)["pid"], 0);
    let err = rt.fail(&["kill", &id, "TERM"]);
    assert!(err.contains("stopped"), "{err}");
    rt.ok(&["delete", &id]);
    assert_no_leaks(&rt, &id, Some(&b));
    let err = rt.fail(&["state", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("echo out; echo err >&2; exit 7");
    let id = unique_id("exit");
    let (code, out, err) = rt.run_container(&b, &id);
    assert_eq!(code, 7);
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_no_leaks(&rt, &id, Some(&b));
    // Killed by a signal: 128 + signal number, as shells report it. (Without a pid
    // namespace, or the shell would be pid 1, which ignores signals it does not handle.)
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
    b.sh("kill -USR1 $$");
    let id = unique_id("sig");
    let (code, _, _) = rt.run_container(&b, &id);
    assert_eq!(code, 128 + libc::SIGUSR1);
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn run_detach_then_kill_by_name_and_number() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    // The shell as pid 1 ignores TERM unless it traps it.
    b.sh("trap 'exit 3' TERM; touch /tmp/trapped; while true; do sleep 0.05; done");
    let id = unique_id("det");
    rt.ok(&[
        "run",
        "--detach",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let _g = Guard {
        rt: &rt,
        id: id.clone(),
    };
    assert_eq!(rt.status(&id), "running");
    // Signal only once the trap is set: pid 1 ignores a TERM it does not handle.
    wait_for("the trap", 3000, || b.rootfs().join("tmp/trapped").exists());
    rt.ok(&["kill", &id, "15"]);
    wait_for("TERM to stop it", 3000, || rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn state_tells_the_truth_after_the_init_is_killed_from_outside() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let id = unique_id("crash");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;
    unsafe_free_kill(pid);
    wait_for("stopped", 2000, || rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    assert_no_leaks(&rt, &id, Some(&b));
}

fn unsafe_free_kill(pid: i32) {
    let out = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn deleting_a_created_container_kills_its_init() {
    let rt = Runtime::new();
    let b = Bundle::busybox();
    let id = unique_id("delcreated");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", &id]);
    wait_for("the init to go", 2000, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn pause_resume_ps_and_events() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("sleep 1000 & sleep 1000 & wait");
    let id = unique_id("pause");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    wait_for("three processes", 2000, || rt.pids(&id).len() == 3);
    let table = rt.ok(&["ps", &id]);
    assert!(table.starts_with("UID") || table.contains("PID"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.ends_with(" sleep 1000")).count(),
        2,
        "{table}"
    );

    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    let pids = rt.pids(&id);
    for p in &pids {
        let st = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        // Frozen tasks sleep in the freezer.
        assert!(st.contains("State:\tD") || st.contains("State:\tS"), "{st}");
    }
    let err = rt.fail(&["pause", &id]);
    assert!(err.contains("paused"), "{err}");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");

    let ev: serde_json::Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    assert_eq!(ev["data"]["pids"]["current"], 3);
    assert!(ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(ev["data"]["cpu"]["usage"]["total"].as_u64().is_some());

    // A paused container can still be deleted with --force.
    rt.ok(&["pause", &id]);
    rt.ok(&["delete", "--force", &id]);
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn events_stream_stops_with_the_container() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("sleep 0.3");
    let id = unique_id("events");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let out = rt.ok(&["events", "--interval", "100ms", &id]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty() && lines.len() < 20, "{out}");
    assert!(lines.iter().all(|l| l["type"] == "stats"));
}

#[test]
fn update_changes_live_limits() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    b.config["linux"]["resources"]["memory"] = serde_json::json!({"limit": 128 << 20});
    b.config["linux"]["resources"]["pids"] = serde_json::json!({"limit": 50});
    b.write();
    let id = unique_id("update");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let mem = std::path::PathBuf::from(format!("/sys/fs/cgroup/memory/{id}"));
    let pids = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/{id}"));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    rt.ok(&[
        "update",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        &id,
    ]);
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&pids.join("pids.max")), "20");
    assert_eq!(
        read(std::path::Path::new(&format!(
            "/sys/fs/cgroup/cpu/{id}/cpu.cfs_quota_us"
        ))),
        "50000"
    );
    // From a resources file, and recorded in the container's config copy.
    let res = b.path().join("res.json");
    std::fs::write(
        &res,
        r#"{"pids":{"limit":30},"memory":{"limit":100000000}}"#,
    )
    .unwrap();
    rt.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    assert_eq!(read(&pids.join("pids.max")), "30");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rt.root().join(&id).join("config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["linux"]["resources"]["pids"]["limit"], 30);
    let err = rt.fail(&["update", "--memory", "lots", &id]);
    assert!(err.contains("--memory") && err.contains("lots"), "{err}");
}

#[test]
fn list_shows_containers() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    let a = unique_id("lista");
    let c = unique_id("listb");
    let _ga = rt.create(&b, &a);
    let _gc = rt.create(&b, &c);
    rt.ok(&["start", &c]);
    let table = rt.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    let status = |id: &str| json.iter().find(|e| e["id"] == id).unwrap()["status"].clone();
    assert_eq!(status(&a), "created");
    assert_eq!(status(&c), "running");
    let quiet = rt.ok(&["list", "-q"]);
    assert_eq!(quiet.lines().count(), 2);
}

#[test]
fn exec_runs_in_the_container() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.args(&["sleep", "1000"]);
    b.config["hostname"] = serde_json::json!("exec-host");
    b.write();
    let id = unique_id("exec");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; echo $$; cat /proc/1/comm; id -u",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "exec-host");
    assert_ne!(lines[1], "1", "exec must not be pid 1");
    assert_eq!(lines[2], "sleep");
    assert_eq!(lines[3], "0");
    // Exit codes come back.
    let out = rt.run(&["exec", &id, "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    // User, env, cwd, from flags.
    let out = rt.ok(&[
        "exec",
        "--user",
        "65534:65534",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "id -u; id -g; echo $FOO; pwd",
    ]);
    assert_eq!(out, "65534\n65534\nbar\n/tmp\n");
    // From a process.json.
    let p = b.path().join("process.json");
    std::fs::write(&p, r#"{"args":["sh","-c","echo from-json $X"],"env":["X=1","PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}}"#).unwrap();
    assert_eq!(
        rt.ok(&["exec", "--process", p.to_str().unwrap(), &id]),
        "from-json 1\n"
    );
    // Detached with a pid file.
    let pidf = b.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pidf.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let epid: i32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let procs = rt.pids(&id);
    assert!(procs.contains(&epid), "{procs:?} {epid}");
    // A missing program is a clear error, before anything runs.
    let err = rt.fail(&["exec", &id, "no-such-program"]);
    assert!(
        err.contains("no-such-program") && err.contains("not found"),
        "{err}"
    );
    rt.ok(&["delete", "--force", &id]);
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn kill_all_signals_every_process() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    // No pid namespace: killing the init would not take the others with it.
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "pid");
    b.sh("sleep 1000 & sleep 1000 & wait");
    let id = unique_id("killall");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    wait_for("three processes", 2000, || rt.pids(&id).len() == 3);
    rt.ok(&["kill", "--all", &id, "KILL"]);
    wait_for("all gone", 3000, || rt.status(&id) == "stopped");
    // SIGKILL is delivered at once but each process leaves its cgroup only
    // when it has finished exiting: "stopped" (the init is gone) can be seen
    // a moment before the last sleep has left.
    wait_for("every process out of the cgroups", 3000, || {
        cgroup_dirs_named(&id).iter().all(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .trim()
                .is_empty()
        })
    });
    rt.ok(&["delete", "--force", &id]);
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn foreground_run_forwards_signals() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("trap 'echo got-term; exit 9' TERM; touch /tmp/trapped; while true; do sleep 0.05; done");
    let id = unique_id("fwd");
    let out = tempfile::tempfile().unwrap();
    let mut child = rt
        .cmd()
        .args(["run", "--bundle", b.path().to_str().unwrap(), &id])
        .stdout(out.try_clone().unwrap())
        .spawn()
        .unwrap();
    wait_for("the trap", 3000, || b.rootfs().join("tmp/trapped").exists());
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(9),
        "the container's exit code comes back"
    );
    let mut text = String::new();
    let mut out = out;
    std::io::Seek::rewind(&mut out).unwrap();
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    assert!(text.contains("got-term"), "{text}");
    assert_no_leaks(&rt, &id, Some(&b));
}

#[test]
fn a_created_container_can_be_paused_and_resumed() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.sh("echo started");
    let id = unique_id("pausecreated");
    let _g = rt.create(&b, &id);
    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "created");
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(
        list[0]["rootfs"],
        b.rootfs().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(list[0]["ociVersion"], "1.2.0");
    rt.ok(&["start", &id]);
    wait_for("stopped", 2000, || rt.status(&id) == "stopped");
}
