//! The engine's CRI-shaped traits driven as the kubelet drives CRI: pod sandboxes whose
//! containers share namespaces, limits read back from the kernel, exec, events, logs.
//! Needs root (real namespaces, cgroups, mounts, bridges).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_engine::cri::*;
use common::*;

#[test]
fn a_pod_of_three_shares_net_ipc_and_uts_and_keeps_its_ip_across_a_restart() {
    let env = Env::new();
    let mut cfg = env.pod("web");
    cfg.resources = Some(Resources {
        memory_limit_in_bytes: Some(256 << 20),
        cpu_shares: Some(512),
        ..Default::default()
    });
    let sb = env.core.run_pod_sandbox(&cfg).unwrap();
    let st = env.core.pod_sandbox_status(&sb).unwrap();
    assert_eq!(st.summary.state, SandboxState::Ready);
    let ip = st.ip.expect("a pod IP");
    assert!(
        ip.to_string().starts_with(&format!("10.44.{}.", env.n)),
        "{ip} is not from the pod CIDR"
    );
    let infra = st.infra_pid.expect("an infra process");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{infra}/comm"))
            .unwrap()
            .trim(),
        "berth-infra"
    );
    // Pod-level limits on the pod's cgroup, container-level on the container's.
    assert_eq!(memory_limit_of(&cfg.cgroup_parent), Some(256 << 20));
    let web = env.run(
        &sb,
        &env.ctr("web", &["httpd", "-f", "-p", "8080", "-h", "/www"]),
    );
    let mut limited = env.ctr("client", &["sleep", "1000"]);
    limited.resources.memory_limit_in_bytes = Some(64 << 20);
    let client = env.run(&sb, &limited);
    let third = env.run(&sb, &env.ctr("third", &["sleep", "1000"]));
    let client_cgroup = env.core.container_status(&client).unwrap().cgroup;
    assert!(
        client_cgroup.starts_with(&cfg.cgroup_parent),
        "{client_cgroup}"
    );
    assert_eq!(memory_limit_of(&client_cgroup), Some(64 << 20));
    // One network, IPC and UTS namespace for the three, the infra process's.
    for kind in ["net", "ipc", "uts"] {
        let want = ns_inode(infra, kind);
        for c in [&web, &client, &third] {
            assert_eq!(ns_inode(pid_of(&env.core, c), kind), want, "{kind} of {c}");
        }
    }
    // Not the PID namespace: that is shared only when asked for.
    assert_ne!(
        ns_inode(pid_of(&env.core, &web), "pid"),
        ns_inode(infra, "pid")
    );
    assert_eq!(env.sh(&third, "hostname").trim(), "web");
    // localhost between them.
    let fetches = |url: &str| {
        env.core
            .exec_sync(
                &client,
                &[
                    "wget".into(),
                    "-q".into(),
                    "-O".into(),
                    "/dev/null".into(),
                    url.into(),
                ],
                Some(Duration::from_secs(5)),
            )
            .is_ok_and(|r| r.exit_code == 0)
    };
    wait_for("httpd to listen", Duration::from_secs(10), || {
        fetches("http://127.0.0.1:8080/index.html")
    });
    assert_eq!(
        env.sh(&client, "wget -q -O - http://localhost:8080/index.html"),
        "hello from the pod\n"
    );
    // POSIX shared memory (/dev/shm) made in one is seen in another.
    env.sh(&client, "echo shared > /dev/shm/seg");
    assert_eq!(env.sh(&third, "cat /dev/shm/seg"), "shared\n");
    // One container restarted: same pod IP, its peers still there.
    env.core
        .stop_container(&web, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        env.core.container_status(&web).unwrap().summary.state,
        ContainerState::Exited
    );
    env.core.start_container(&web).unwrap();
    assert_eq!(env.core.pod_sandbox_status(&sb).unwrap().ip, Some(ip));
    assert_eq!(
        ns_inode(pid_of(&env.core, &web), "net"),
        ns_inode(infra, "net")
    );
    wait_for("httpd to listen again", Duration::from_secs(10), || {
        fetches("http://127.0.0.1:8080/")
    });
    // The pod's IP answers from the host too.
    let list = env
        .core
        .list_containers(&ContainerFilter {
            sandbox_id: Some(sb.clone()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|c| c.state.is_running()));
    // Stats from the container's cgroup.
    let stats = env.core.container_stats(&client).unwrap();
    assert!(stats.memory_usage > 0 && stats.pids >= 1, "{stats:?}");
    assert_eq!(stats.memory_limit, Some(64 << 20));
    // Limits changed on a running container.
    env.core
        .update_container_resources(
            &client,
            &Resources {
                memory_limit_in_bytes: Some(96 << 20),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(memory_limit_of(&client_cgroup), Some(96 << 20));
    // Removing the sandbox stops and removes its containers first; nothing is left.
    env.core.remove_pod_sandbox(&sb).unwrap();
    let ids = vec![web, client, third];
    wait_for("the pod to be gone", Duration::from_secs(5), || {
        leftovers(&env, &sb, &ids).is_empty()
    });
    assert!(
        memory_limit_of(&cfg.cgroup_parent).is_none(),
        "the pod cgroup went"
    );
    env.core.remove_pod_sandbox(&sb).unwrap();
}

#[test]
fn a_shared_process_namespace_has_the_infra_process_as_pid_1() {
    let env = Env::new();
    let mut cfg = env.pod("shared");
    cfg.namespaces.share_pid = true;
    let sb = env.core.run_pod_sandbox(&cfg).unwrap();
    let a = env.run(&sb, &env.ctr("a", &["sleep", "1001"]));
    let b = env.run(&sb, &env.ctr("b", &["sleep", "1002"]));
    let ps = env.sh(&b, "ps -o pid,args");
    assert!(
        ps.contains("sleep 1001") && ps.contains("sleep 1002"),
        "{ps}"
    );
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "berth-infra"]),
        "{ps}"
    );
    // A process of `a` can be signalled from `b`.
    env.sh(
        &b,
        "kill $(pidof sleep | tr ' ' '\\n' | head -1) 2>/dev/null; true",
    );
    let _ = a;
    env.core.remove_pod_sandbox(&sb).unwrap();
}

#[test]
fn exec_sync_returns_output_and_code_and_a_timeout_kills() {
    let env = Env::new();
    let sb = env.core.run_pod_sandbox(&env.pod("ex")).unwrap();
    let c = env.run(&sb, &env.ctr("c", &["sleep", "1000"]));
    let r = env
        .core
        .exec_sync(
            &c,
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        (
            r.stdout.as_slice(),
            r.stderr.as_slice(),
            r.exit_code,
            r.timed_out
        ),
        (&b"out\n"[..], &b"err\n"[..], 3, false)
    );
    let t = Instant::now();
    let r = env
        .core
        .exec_sync(
            &c,
            &["sleep".into(), "30".into()],
            Some(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(r.timed_out, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.exit_code, 137);
    // The killed process is gone from the container.
    assert!(!env.sh(&c, "ps -o args").contains("sleep 30"));
    // Bad input: no command, a container that does not run.
    let e = env.core.exec_sync(&c, &[], None).unwrap_err().to_string();
    assert!(e.contains("give a command"), "{e}");
    env.core.stop_container(&c, Duration::ZERO).unwrap();
    let e = env
        .core
        .exec_sync(&c, &["true".into()], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exited: exec needs it running"), "{e}");
}

#[test]
fn streamed_exec_with_pipes_and_with_a_terminal() {
    let env = Env::new();
    let sb = env.core.run_pod_sandbox(&env.pod("stream")).unwrap();
    let c = env.run(&sb, &env.ctr("c", &["sleep", "1000"]));
    let mut s = env
        .core
        .exec(
            &c,
            &ExecRequest {
                cmd: vec!["sh".into(), "-c".into(), "tr a-z A-Z; echo done >&2".into()],
                stdin: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut input = s.stdin.take().unwrap();
    input.write_all(b"hello\nworld\n").unwrap();
    drop(input);
    let mut out = String::new();
    s.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    s.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("HELLO\nWORLD\n", "done\n"));
    assert_eq!(s.wait().unwrap(), 0);
    // A terminal: the process sees one; output arrives on the master.
    let mut s = env
        .core
        .exec(
            &c,
            &ExecRequest {
                cmd: vec!["sh".into(), "-c".into(), "tty; stty size; exit 5".into()],
                tty: true,
                stdin: true,
                ..Default::default()
            },
        )
        .unwrap();
    s.resize(33, 101).unwrap();
    let mut term = s.terminal.take().unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = term.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("/dev/pts/"), "{out}");
    assert_eq!(s.wait().unwrap(), 5);
}

#[test]
fn an_exit_arrives_as_an_event_without_polling() {
    let env = Env::new();
    let sb = env.core.run_pod_sandbox(&env.pod("ev")).unwrap();
    let mut events = env.core.container_events().unwrap();
    let c = env
        .core
        .create_container(&sb, &env.ctr("c", &["sh", "-c", "sleep 0.3; exit 7"]))
        .unwrap();
    env.core.start_container(&c).unwrap();
    let mut kinds = Vec::new();
    let t = Instant::now();
    while kinds.last() != Some(&ContainerEventKind::Stopped) {
        let e = events
            .next_event(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("an event within 10 s");
        if e.container_id == c {
            assert_eq!(e.sandbox_id, sb);
            kinds.push(e.kind);
        }
    }
    assert_eq!(
        kinds,
        [
            ContainerEventKind::Created,
            ContainerEventKind::Started,
            ContainerEventKind::Stopped
        ]
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let st = env.core.container_status(&c).unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"));
    assert!(st.finished_at > st.started_at && st.started_at > 0);
    env.core.remove_container(&c).unwrap();
    let e = events
        .next_event(Some(Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.container_id.as_str(), e.kind),
        (c.as_str(), ContainerEventKind::Deleted)
    );
    assert_eq!(e.sandbox_id, sb);
}

#[test]
fn logs_in_cri_format_at_the_given_path_are_reopened_after_rotation() {
    let env = Env::new();
    let mut cfg = env.pod("logs");
    let logdir = env.dir.path().join("pod-logs");
    cfg.log_directory = Some(logdir.clone());
    let sb = env.core.run_pod_sandbox(&cfg).unwrap();
    let mut c = env.ctr(
        "talker",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    c.log_path = Some("talker/0.log".into());
    let id = env.run(&sb, &c);
    let log = logdir.join("talker/0.log");
    wait_for("log lines", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 3)
    });
    let first = std::fs::read_to_string(&log).unwrap();
    let l = first.lines().next().unwrap();
    let e = berth_engine::log::parse(l.as_bytes()).unwrap();
    assert!(
        !e.stderr && e.full && e.content.starts_with(b"line "),
        "{l}"
    );
    // The kubelet's rotation: rename, then ReopenContainerLog.
    std::fs::rename(&log, logdir.join("talker/0.log.1")).unwrap();
    env.core.reopen_container_log(&id).unwrap();
    wait_for("lines in the new log", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
    });
    let old = std::fs::read_to_string(logdir.join("talker/0.log.1")).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    let num = |l: &str| -> u64 { l.rsplit(' ').next().unwrap().parse().unwrap() };
    assert!(
        num(new.lines().next().unwrap()) > num(old.lines().last().unwrap()),
        "the new log goes on where the old one ended"
    );
    // A relative log path needs a log directory.
    let mut bad = env.ctr("x", &["true"]);
    bad.log_path = Some("x.log".into());
    let sb2 = env.core.run_pod_sandbox(&env.pod("nolog")).unwrap();
    let e = env
        .core
        .create_container(&sb2, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no log_directory"), "{e}");
}

#[test]
fn a_full_disk_during_logging_is_recorded_and_never_blocks_the_container() {
    let env = Env::new();
    let tiny = env.dir.path().join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &tiny,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=64k",
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _u = Unmount(tiny.clone());
    let sb = env.core.run_pod_sandbox(&env.pod("full")).unwrap();
    let mut c = env.ctr("flood", &["sh", "-c", "seq 1 200000; exit 4"]);
    c.log_path = Some(tiny.join("flood.log"));
    let id = env.run(&sb, &c);
    wait_for("the flood to end", Duration::from_secs(30), || {
        env.core.container_status(&id).unwrap().summary.state == ContainerState::Exited
    });
    let st = env.core.container_status(&id).unwrap();
    assert_eq!(st.exit_code, 4);
    assert!(st.log_error.contains("No space left"), "{}", st.log_error);
}

#[test]
fn bad_input_gets_clear_errors() {
    let env = Env::new();
    let e = env
        .core
        .create_container("0123456789abcdef", &env.ctr("c", &["true"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such pod sandbox"), "{e}");
    let sb = env.core.run_pod_sandbox(&env.pod("bad")).unwrap();
    // The same sandbox name and attempt twice.
    let e = env
        .core
        .run_pod_sandbox(&env.pod("bad"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already reserved by sandbox"), "{e}");
    // Two containers of one name and attempt.
    env.core
        .create_container(&sb, &env.ctr("same", &["true"]))
        .unwrap();
    let e = env
        .core
        .create_container(&sb, &env.ctr("same", &["true"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already in use"), "{e}");
    // Two creates of one name at once: one wins, the other is told.
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    env.core
                        .create_container(&sb, &env.ctr("race", &["true"]))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let err = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(err.contains("already in use"), "{err}");
    // An image that is not there; a config without a command.
    let mut c = env.ctr("noimg", &["true"]);
    c.image = "localhost/nope:1".into();
    let e = env.core.create_container(&sb, &c).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let e = env
        .core
        .run_pod_sandbox(&SandboxConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("metadata.name is required"), "{e}");
    let mut c = env.pod("badcg");
    c.cgroup_parent = "kubepods/../x".into();
    let e = env.core.run_pod_sandbox(&c).unwrap_err().to_string();
    assert!(e.contains("cgroup parent"), "{e}");
    // A stopped sandbox takes no containers.
    env.core.stop_pod_sandbox(&sb).unwrap();
    assert_eq!(
        env.core.pod_sandbox_status(&sb).unwrap().summary.state,
        SandboxState::NotReady
    );
    let e = env
        .core
        .create_container(&sb, &env.ctr("late", &["true"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not ready"), "{e}");
    // Stop and remove are repeatable.
    env.core.stop_pod_sandbox(&sb).unwrap();
    env.core.remove_pod_sandbox(&sb).unwrap();
    env.core.remove_pod_sandbox(&sb).unwrap();
    assert!(env
        .core
        .list_containers(&ContainerFilter::default())
        .unwrap()
        .is_empty());
}

#[test]
fn attach_port_forward_and_stats_through_the_traits() {
    let env = Env::new();
    let sb = env.core.run_pod_sandbox(&env.pod("streams")).unwrap();
    // Attach: a container kept with stdin answers each line it is sent (a shell's
    // echo writes at once, where tr would buffer).
    let mut cfg = env.ctr(
        "answer",
        &["sh", "-c", "while read l; do echo \"got $l\"; done"],
    );
    cfg.stdin = true;
    let answer = env.run(&sb, &cfg);
    let mut a = env.core.attach(&answer, None).unwrap();
    a.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    a.stream.write_all(b"hello pod\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("got hello pod") {
        let n = a.stream.read(&mut buf).expect("the container answers");
        assert!(
            n > 0,
            "the attach ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // Attaching to a container without stdin or terminal says why not.
    let plain = env.run(&sb, &env.ctr("plain", &["sleep", "1000"]));
    let e = env.core.attach(&plain, None).err().expect("refused");
    assert!(e.to_string().contains("without a terminal or stdin"), "{e}");
    // PortForward: a connection to the pod's own loopback, from inside its network.
    let web = env.run(
        &sb,
        &env.ctr(
            "web",
            &[
                "sh",
                "-c",
                "mkdir -p /tmp/www && echo pod-page > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
            ],
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match env.core.port_forward(&sb, 8080) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "httpd never listened: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    assert!(
        page.contains("200 OK") && page.contains("pod-page"),
        "{page}"
    );
    let e = env.core.port_forward(&sb, 8081).expect_err("nothing there");
    assert!(e.to_string().contains("port 8081"), "{e}");
    // ContainerStats from the kernel's cgroup counters.
    let s = env.core.container_stats(&web).unwrap();
    assert_eq!(s.id, web);
    assert!(
        s.memory_usage > 0 && s.memory_working_set <= s.memory_usage,
        "{s:?}"
    );
    assert!(s.pids >= 1 && s.cpu_usage_ns > 0, "{s:?}");
    let all = env
        .core
        .list_container_stats(&ContainerFilter {
            sandbox_id: Some(sb.clone()),
            ..Default::default()
        })
        .unwrap();
    let mut ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    let mut want = vec![answer.as_str(), plain.as_str(), web.as_str()];
    want.sort();
    assert_eq!(ids, want);
    env.core.stop_pod_sandbox(&sb).unwrap();
    env.core.remove_pod_sandbox(&sb).unwrap();
}
