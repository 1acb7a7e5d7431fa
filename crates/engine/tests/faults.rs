//! Callers and monitors killed with SIGKILL at every step: what was made whole is
//! adopted by the next caller, what was half made is undone, nothing leaks.
//! Needs root.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_engine::cri::*;
use berth_engine::Core;
use common::*;

/// Runs this test binary's `driver` (below) in a process of its own: it opens the
/// engine on `root` and does `mode`, until it ends or a fault point kills it.
fn drive(root: &std::path::Path, mode: &str, fault: Option<&str>) -> std::process::Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "driver",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("BERTH_TEST_ROOT", root)
    .env("BERTH_TEST_MODE", mode)
    .stdin(Stdio::null());
    match fault {
        Some(f) => c.env("BERTH_FAULT", f),
        None => c.env_remove("BERTH_FAULT"),
    };
    c.output().unwrap()
}

/// The other half of [`drive`]; does nothing when run as a test of its own.
#[test]
#[ignore = "run by the other tests in a process of its own"]
fn driver() {
    let (Ok(root), Ok(mode)) = (
        std::env::var("BERTH_TEST_ROOT"),
        std::env::var("BERTH_TEST_MODE"),
    ) else {
        return;
    };
    let core = Core::open(std::path::Path::new(&root)).unwrap();
    let pod = |name: &str| SandboxConfig {
        metadata: SandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "default".into(),
            attempt: 0,
        },
        cgroup_parent: format!("/kubepods/besteffort/pod{name}-{}", std::process::id()),
        namespaces: SandboxNamespaces {
            share_pid: true,
            ..Default::default()
        },
        resources: Some(Resources {
            memory_limit_in_bytes: Some(128 << 20),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ctr = |name: &str| ContainerConfig {
        metadata: ContainerMetadata {
            name: name.into(),
            attempt: 0,
        },
        image: "localhost/busybox:1".into(),
        command: vec!["sleep".into(), "1000".into()],
        ..Default::default()
    };
    match mode.as_str() {
        "sandbox" => {
            let sb = core.run_pod_sandbox(&pod("p")).unwrap();
            println!("sandbox {sb}");
        }
        "container" => {
            let sb = core.run_pod_sandbox(&pod("p")).unwrap();
            println!("sandbox {sb}");
            let c = core.create_container(&sb, &ctr("c")).unwrap();
            core.start_container(&c).unwrap();
            println!("container {c}");
        }
        other => panic!("no mode {other}"),
    }
}

fn ids(out: &std::process::Output, what: &str) -> Vec<String> {
    // (libtest prints "test driver ... " on the line the first one goes on.)
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let at = l.find(&format!("{what} "))?;
            l[at + what.len() + 1..]
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn a_caller_killed_after_starting_leaves_a_pod_the_next_caller_adopts() {
    let env = Env::new();
    let out = drive(&env.root(), "container", None);
    assert!(out.status.success(), "{out:?}");
    assert!(!ids(&out, "container").is_empty(), "{out:?}");
    let (sb, c) = (
        ids(&out, "sandbox").remove(0),
        ids(&out, "container").remove(0),
    );
    // The driver is gone (as if killed: it held nothing the pod needs). A new caller
    // finds the pod running and can use it.
    let core = Core::open(&env.root()).unwrap();
    assert_eq!(
        core.pod_sandbox_status(&sb).unwrap().summary.state,
        SandboxState::Ready
    );
    assert!(core
        .container_status(&c)
        .unwrap()
        .summary
        .state
        .is_running());
    let r = core
        .exec_sync(&c, &["ps".into(), "-o".into(), "pid,args".into()], None)
        .unwrap();
    let ps = String::from_utf8_lossy(&r.stdout);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "berth-infra"]),
        "{ps}"
    );
    core.stop_container(&c, Duration::from_secs(2)).unwrap();
    core.remove_pod_sandbox(&sb).unwrap();
    assert!(leftovers(&env, &sb, &[c]).is_empty());
}

#[test]
fn a_caller_killed_at_any_step_of_making_leaves_nothing_half_made() {
    let env = Env::new();
    for (mode, point) in [
        ("sandbox", "sandbox-after-record"),
        ("sandbox", "sandbox-after-pins"),
        ("sandbox", "net-after-veth"),
        ("sandbox", "sandbox-after-network"),
        ("sandbox", "sandbox-after-infra"),
        ("container", "container-after-record"),
        ("container", "container-after-rootfs"),
        ("container", "container-after-config"),
    ] {
        let out = drive(&env.root(), mode, Some(point));
        assert!(
            !out.status.success(),
            "{point}: the driver was not killed: {out:?}"
        );
        // What was being made when it died.
        let half: Vec<String> = std::fs::read_dir(env.root().join("creating"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(half.len(), 1, "{point}: {half:?}");
        let whole_sandboxes = ids(&out, "sandbox");
        // The next caller's open undoes it.
        let core = Core::open(&env.root()).unwrap();
        assert!(
            std::fs::read_dir(env.root().join("creating"))
                .unwrap()
                .next()
                .is_none(),
            "{point}: markers left"
        );
        let (sb, ctrs) = if mode == "sandbox" {
            (half[0].clone(), Vec::new())
        } else {
            (whole_sandboxes[0].clone(), half.clone())
        };
        if mode == "sandbox" {
            assert!(
                core.pod_sandbox_status(&sb).is_err(),
                "{point}: a half-made sandbox is listed"
            );
        } else {
            assert!(core.container_status(&half[0]).is_err(), "{point}");
            // The sandbox it was made in was whole: it stays, ready.
            assert_eq!(
                core.pod_sandbox_status(&sb).unwrap().summary.state,
                SandboxState::Ready,
                "{point}"
            );
            assert!(
                leftovers(&env, "-", &ctrs).is_empty(),
                "{point}: {:?}",
                leftovers(&env, "-", &ctrs)
            );
            core.remove_pod_sandbox(&sb).unwrap();
        }
        let left = leftovers(&env, &sb, &ctrs);
        assert!(left.is_empty(), "{point}: left behind {left:?}");
        // The name can be taken again.
        assert!(
            std::fs::read_dir(env.root().join("sandbox-names"))
                .unwrap()
                .next()
                .is_none(),
            "{point}"
        );
    }
}

#[test]
fn a_killed_monitor_leaves_an_orphan_that_stops_and_goes() {
    let env = Env::new();
    let sb = env.core.run_pod_sandbox(&env.pod("orphan")).unwrap();
    let c = env.run(&sb, &env.ctr("c", &["sleep", "1000"]));
    let dir = env.root().join("containers").join(&c);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("monitor.pid")).unwrap()).unwrap();
    let monitor = m["pid"].as_i64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(monitor).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for("the orphan", Duration::from_secs(5), || {
        matches!(
            env.core.container_status(&c).unwrap().summary.state,
            ContainerState::Orphaned(_)
        )
    });
    env.core.stop_container(&c, Duration::from_secs(2)).unwrap();
    assert!(!env
        .core
        .container_status(&c)
        .unwrap()
        .summary
        .state
        .is_running());
    env.core.remove_container(&c).unwrap();
    env.core.remove_pod_sandbox(&sb).unwrap();
    assert!(leftovers(&env, &sb, &[c]).is_empty());
}
