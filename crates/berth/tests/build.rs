//! Multi-stage builds as users write them: stages named and numbered, ARG before
//! FROM, COPY --from a stage or an image, --target, independent stages built at the
//! same time; the same Dockerfile built by `podman build` gives an image that runs
//! the same; and the mistakes users make, each a clear error that leaves nothing.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;

/// A context whose Dockerfile has two independent stages and a final one that copies
/// from both.
fn multi_stage_context(env: &Env) -> std::path::PathBuf {
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("note.txt"), "a note from the context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"ARG BASE=localhost/busybox:1
FROM $BASE AS build
RUN sleep 2; mkdir -p /out && echo "built by stage build" > /out/app.txt \
    && printf '#!/bin/sh\ncat /app.txt /assets/note.txt\n' > /out/run && chmod +x /out/run
FROM ${BASE} AS assets
COPY note.txt /srv/note.txt
RUN sleep 2; echo assets ready
FROM $BASE
COPY --from=build /out/app.txt /app.txt
COPY --from=build /out/run /usr/local/bin/run
COPY --from=assets /srv/note.txt /assets/note.txt
CMD ["/usr/local/bin/run"]
"#,
    )
    .unwrap();
    ctx
}

/// Names of the build's step containers that exist now.
fn step_containers(env: &Env) -> usize {
    let o = env.run(&["ps", "-a", "--format", "{{.Names}}"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("build-"))
        .count()
}

#[test]
fn multi_stage_builds_run_their_independent_stages_at_once() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let ctx = multi_stage_context(&env);
    // Two stages' RUN containers seen at the same time: they were built at once.
    let most = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(step_containers(&env), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let out = env.ok(&["build", "-t", "localhost/ms:1", ctx.to_str().unwrap()]);
        done.store(true, Ordering::Relaxed);
        out
    });
    assert_eq!(most.load(Ordering::Relaxed), 2, "{out}");
    assert!(
        out.contains("[build] STEP 2/2: RUN") && out.contains("[assets] STEP 3/3: RUN"),
        "stages label their steps: {out}"
    );
    let run = env.ok(&["run", "--rm", "--network", "none", "ms:1"]);
    assert_eq!(run, "built by stage build\na note from the context\n");

    // Built again: every step from the cache.
    let again = env.ok(&["build", "-t", "localhost/ms:1", ctx.to_str().unwrap()]);
    assert_eq!(again.matches("Using cache").count(), 7, "{again}");

    // --target: only that stage (and what it uses) is built.
    let out = env.ok(&[
        "build",
        "--target",
        "assets",
        "-t",
        "localhost/assets:1",
        ctx.to_str().unwrap(),
    ]);
    assert!(!out.contains("[build]"), "{out}");
    let ls = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "assets:1",
        "ls",
        "/srv",
        "/",
    ]);
    assert!(ls.contains("note.txt") && !ls.contains("app.txt"), "{ls}");

    // COPY --from an image in the store, and FROM an earlier stage by index.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:1\nRUN echo zero > /zero\nFROM 0\nCOPY --from=localhost/ms:1 /app.txt /copied\nCMD [\"cat\", \"/zero\", \"/copied\"]\n",
    )
    .unwrap();
    env.ok(&[
        "build",
        "-q",
        "-t",
        "localhost/idx:1",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        env.ok(&["run", "--rm", "--network", "none", "idx:1"]),
        "zero\nbuilt by stage build\n"
    );
    // Nothing left: no step container, no root prepared for a COPY --from.
    assert_eq!(step_containers(&env), 0);
    let rootfs = env.ok(&["rootfs", "ls"]);
    assert!(!rootfs.contains("build-from-"), "{rootfs}");
}

#[test]
fn mistakes_in_multi_stage_dockerfiles_are_clear_errors() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let ctx = env.path("bad");
    std::fs::create_dir_all(&ctx).unwrap();
    let fails = |dockerfile: &str, extra: &[&str]| -> String {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        env.fails(&args)
    };
    let e = fails(
        "FROM localhost/busybox:1 AS a\nCOPY --from=a /bin/sh /x\n",
        &[],
    );
    assert!(
        e.contains("names the stage it is in") && e.contains("line 2"),
        "{e}"
    );
    let e = fails(
        "FROM localhost/busybox:1 AS a\nCOPY --from=nosuch /x /x\n",
        &[],
    );
    assert!(
        e.contains("--from=nosuch")
            && e.contains("not an earlier stage")
            && e.contains("pull it first"),
        "{e}"
    );
    let e = fails(
        "FROM localhost/busybox:1 AS a\nFROM localhost/busybox:1\nCOPY --from=a /no/such/file /x\n",
        &[],
    );
    assert!(
        e.contains("\"/no/such/file\" is not in the root filesystem of a"),
        "{e}"
    );
    let e = fails("FROM localhost/busybox:1 AS a\n", &["--target", "b"]);
    assert!(
        e.contains("--target \"b\": no such stage (the stages are a)"),
        "{e}"
    );
    let e = fails("FROM base AS base\n", &[]);
    assert!(e.contains("based on itself"), "{e}");
    let e = fails(
        "FROM localhost/busybox:1\nFROM localhost/busybox:1\nADD --from=0 /x /y\n",
        &[],
    );
    assert!(e.contains("ADD --from=0 is not supported"), "{e}");
    // A device node a step made is copied as an entry, never read (this one would
    // read the host's zero device without end).
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:1 AS dev\nRUN mknod /zero c 1 5\nFROM localhost/busybox:1\nCOPY --from=dev /zero /copied\n",
    )
    .unwrap();
    env.ok(&[
        "build",
        "-q",
        "-t",
        "localhost/devcopy:1",
        ctx.to_str().unwrap(),
    ]);
    // RUN does not get the host's network.
    let e = fails("FROM localhost/busybox:1\nRUN --network=host true\n", &[]);
    assert!(e.contains("--network=host is not allowed"), "{e}");
    // A failed COPY --from leaves no prepared root behind.
    let rootfs = env.ok(&["rootfs", "ls"]);
    assert!(!rootfs.contains("build-from-"), "{rootfs}");
}

#[test]
fn podman_builds_the_same_multi_stage_dockerfile_into_an_image_that_runs_the_same() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let ctx = multi_stage_context(&env);
    env.ok(&["build", "-q", "-t", "localhost/ms:1", ctx.to_str().unwrap()]);
    let ours = env.ok(&["run", "--rm", "--network", "none", "ms:1"]);
    // podman gets the same base image, then builds and runs.
    let archive = env.path("busybox.tar");
    env.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "localhost/busybox:1",
    ]);
    must(
        podman(&env, &["load", "-i", archive.to_str().unwrap()]),
        "podman load",
    );
    must(
        podman(
            &env,
            &[
                "--cgroup-manager=cgroupfs",
                "--runtime=runc",
                "build",
                "--pull=never",
                "--network=none",
                "-t",
                "localhost/ms:podman",
                ctx.to_str().unwrap(),
            ],
        ),
        "podman build",
    );
    // podman runs its image with runc (crun refuses this hybrid cgroup host), the
    // host's open-file limit and 4096 processes: its defaults are above what root may
    // raise to here without CAP_SYS_RESOURCE.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(1024);
    let theirs = must(
        podman(
            &env,
            &[
                "--cgroup-manager=cgroupfs",
                "run",
                "--rm",
                "--runtime=runc",
                "--network=none",
                &format!("--ulimit=nofile={nofile}:{nofile}"),
                "--ulimit=nproc=4096:4096",
                "localhost/ms:podman",
            ],
        ),
        "podman run",
    );
    assert_eq!(ours, theirs);
    assert_eq!(ours, "built by stage build\na note from the context\n");
    podman_cleanup(&env);
}

#[test]
fn healthchecks_onbuild_triggers_cache_and_secret_mounts() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let ctx = env.path("features");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("note.txt"), "for the child\n").unwrap();
    let build = |dockerfile: &str, extra: &[&str]| -> String {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        env.ok(&args)
    };
    let config = |image: &str| -> serde_json::Value {
        serde_json::from_str(&env.ok(&["image", "inspect", "-f", "{{json .Config}}", image]))
            .unwrap()
    };

    // HEALTHCHECK and ONBUILD land in the image's config as docker writes them.
    build(
        "FROM localhost/busybox:1\nHEALTHCHECK --interval=5s --retries=2 CMD test -f /ok\n\
         ONBUILD RUN echo triggered > /onbuild.txt\nONBUILD COPY note.txt /from-child-context.txt\n",
        &["-t", "localhost/parent:1"],
    );
    let c = config("parent:1");
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 5_000_000_000i64, "Retries": 2})
    );
    assert_eq!(c["OnBuild"].as_array().unwrap().len(), 2, "{c}");
    // A build argument changes what a cached metadata step makes (cri-tools builds
    // its user images from one Dockerfile this way).
    for user in ["1002", "www-data:1004"] {
        build(
            "FROM localhost/busybox:1\nARG USER\nUSER ${USER}\n",
            &[
                "-t",
                "localhost/user:1",
                "--build-arg",
                &format!("USER={user}"),
            ],
        );
        assert_eq!(config("user:1")["User"], user);
    }
    // A child fires them (with its own context), and does not pass them on.
    let out = build(
        "FROM localhost/parent:1\nRUN cat /onbuild.txt\n",
        &["-t", "localhost/child:1"],
    );
    assert!(out.contains("ONBUILD RUN echo triggered"), "{out}");
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "child:1",
            "cat",
            "/onbuild.txt",
            "/from-child-context.txt"
        ]),
        "triggered\nfor the child\n"
    );
    assert!(config("child:1")["OnBuild"]
        .as_array()
        .is_none_or(Vec::is_empty));

    // A cache mount keeps its contents between builds, outside the image.
    let counting = "FROM localhost/busybox:1\nRUN --mount=type=cache,target=/cache echo run >> /cache/log && echo runs: $(wc -l < /cache/log)\n";
    assert!(build(counting, &["--no-cache", "-t", "localhost/cached:1"]).contains("runs: 1"));
    assert!(build(counting, &["--no-cache", "-t", "localhost/cached:1"]).contains("runs: 2"));
    let ls = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "cached:1",
        "ls",
        "/cache",
    ]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).trim().is_empty(),
        "the cache is not in the image"
    );

    // A locked cache shared by two stages built at once: one at a time.
    let out = build(
        "FROM localhost/busybox:1 AS a\n\
         RUN --mount=type=cache,id=shared,target=/c,sharing=locked echo start-a >> /c/log; sleep 1; echo end-a >> /c/log\n\
         FROM localhost/busybox:1 AS b\n\
         RUN --mount=type=cache,id=shared,target=/c,sharing=locked echo start-b >> /c/log; sleep 1; echo end-b >> /c/log\n\
         FROM localhost/busybox:1\nCOPY --from=a /bin/busybox /a\nCOPY --from=b /bin/busybox /b\n\
         RUN --mount=type=cache,id=shared,target=/c cat /c/log\n",
        &["--no-cache"],
    );
    let log: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("start-") || l.starts_with("end-"))
        .collect();
    assert_eq!(log.len(), 4, "{out}");
    assert!(
        log == ["start-a", "end-a", "start-b", "end-b"]
            || log == ["start-b", "end-b", "start-a", "end-a"],
        "{log:?}"
    );

    // A secret is there for the step, and nowhere in the image.
    let secret = env.path("token");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let src = format!("id=token,src={}", secret.display());
    let with_secret = "FROM localhost/busybox:1\nRUN --mount=type=secret,id=token,required echo secret bytes: $(wc -c < /run/secrets/token)\n";
    let out = build(with_secret, &["--secret", &src, "-t", "localhost/secret:1"]);
    assert!(out.contains("secret bytes: 7"), "{out}");
    let cat = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "secret:1",
        "cat",
        "/run/secrets/token",
    ]);
    assert!(!cat.status.success() && !String::from_utf8_lossy(&cat.stdout).contains("s3cret"));
    std::fs::write(ctx.join("Dockerfile"), with_secret).unwrap();
    let e = env.fails(&["build", "--no-cache", ctx.to_str().unwrap()]);
    assert!(e.contains("--secret id=token,src=FILE"), "{e}");
}

/// A plain HTTP server on loopback for ADD of a URL: `/hello.txt` (with a
/// Last-Modified time), `/pack.tar.gz` (an archive, which ADD must not unpack), 404
/// for the rest. Serves until the test ends.
fn file_server() -> (u16, std::sync::Arc<AtomicUsize>) {
    use std::io::{BufRead, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = std::io::BufReader::new(&conn);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            // The rest of the request's head.
            let mut h = String::new();
            while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("");
            if path == "/hello.txt" {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            let (status, body): (&str, Vec<u8>) = match path {
                "/hello.txt" => ("200 OK", b"hello from the web\n".to_vec()),
                "/pack.tar.gz" => ("200 OK", gzip(&busybox_tar()[..10240])),
                _ => ("404 Not Found", b"no\n".to_vec()),
            };
            let mut w = &conn;
            let _ = write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: Tue, 15 Nov 1994 08:12:31 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = w.write_all(&body);
        }
    });
    (port, hits)
}

#[test]
fn add_downloads_a_url_and_checks_its_checksum() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let (port, hits) = file_server();
    let ctx = env.path("add");
    std::fs::create_dir_all(&ctx).unwrap();
    let sum = "sha256:4ec6f5c8a84e6e1d0a1cf3ce09ba1b81766e6d0c8cc2cd86c4cea0f23b7d2db9";
    let build = |dockerfile: String| {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        env.run(&[
            "build",
            "-q",
            "-t",
            "localhost/add:1",
            ctx.to_str().unwrap(),
        ])
    };
    let real = {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(b"hello from the web\n"))
        )
    };
    let o = build(format!(
        "FROM localhost/busybox:1\n\
         ADD --checksum={real} http://127.0.0.1:{port}/hello.txt /srv/\n\
         ADD http://127.0.0.1:{port}/hello.txt /srv/renamed.txt\n\
         ADD --chown=7:8 http://127.0.0.1:{port}/pack.tar.gz /srv/\n"
    ));
    assert!(o.status.success(), "{o:?}");
    let out = env.ok(&[
        "run", "--rm", "localhost/add:1", "sh", "-c",
        "cat /srv/hello.txt /srv/renamed.txt; stat -c '%a %u:%g %Y %n' /srv/hello.txt /srv/pack.tar.gz",
    ]);
    assert_eq!(
        out,
        "hello from the web\nhello from the web\n600 0:0 784887151 /srv/hello.txt\n600 7:8 784887151 /srv/pack.tar.gz\n",
        "a downloaded archive stays packed, mode 0600, mtime from Last-Modified"
    );
    // Pinned by its checksum, a cached download is not made again.
    let pinned = format!(
        "FROM localhost/busybox:1\nADD --checksum={real} http://127.0.0.1:{port}/hello.txt /pinned/\n"
    );
    assert!(build(pinned.clone()).status.success());
    let before = hits.load(Ordering::SeqCst);
    assert!(build(pinned).status.success());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "the cached step downloaded again"
    );
    // A checksum that does not match, a missing file, and ADD flags that need a URL.
    let o = build(format!(
        "FROM localhost/busybox:1\nADD --checksum={sum} http://127.0.0.1:{port}/hello.txt /srv/\n"
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("checksum mismatch")
            && e.contains(&real)
            && e.contains("line 2"),
        "{e}"
    );
    let o = build(format!(
        "FROM localhost/busybox:1\nADD http://127.0.0.1:{port}/nosuch /srv/\n"
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("404"), "{e}");
    std::fs::write(ctx.join("local.txt"), "x").unwrap();
    let o = build(format!(
        "FROM localhost/busybox:1\nADD --checksum={sum} local.txt /srv/\n"
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("needs exactly one source, an http(s) URL"),
        "{e}"
    );
    let o = build(format!(
        "FROM localhost/busybox:1\nCOPY http://127.0.0.1:{port}/hello.txt /srv/\n"
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("COPY takes no URL"),
        "{e}"
    );
    let o = build(format!(
        "FROM localhost/busybox:1\nADD http://127.0.0.1:{port}/ /srv/\n"
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("names no file"), "{e}");
}

/// ADD of an https URL: trusted through the system's roots (here a test CA, given as
/// the system store's file in SSL_CERT_FILE), refused with the reason otherwise. The
/// server is Python's http.server behind its ssl module.
#[test]
fn add_of_an_https_url_trusts_the_system_roots_and_says_why_not() {
    let env = Env::new();
    env.busybox_image("localhost/busybox:1");
    let www = env.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello over tls\n").unwrap();
    let (ca, cert, key) = tls_certs();
    let tls = env.path("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(tls.join(name), pem).unwrap();
    }
    let port = free_port();
    let server = "import http.server, ssl, sys, functools\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n\
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
        s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[4])), handler)\n\
        s.socket = ctx.wrap_socket(s.socket, server_side=True)\n\
        s.serve_forever()\n";
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(server)
        .arg(&www)
        .arg(tls.join("cert.pem"))
        .arg(tls.join("key.pem"))
        .arg(port.to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let _server = Kill(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM localhost/busybox:1\nADD https://127.0.0.1:{port}/hello.txt /srv/\n"),
    )
    .unwrap();
    let build = |ca_file: Option<&std::path::Path>| {
        let mut c = env.cmd(&[
            "build",
            "-q",
            "-t",
            "localhost/tls:1",
            ctx.to_str().unwrap(),
        ]);
        match ca_file {
            Some(f) => c.env("SSL_CERT_FILE", f),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        c.stdin(std::process::Stdio::null()).output().unwrap()
    };
    let o = build(None);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("certificate") && e.contains("line 2"),
        "an unknown CA is refused with the reason: {e}"
    );
    let o = build(Some(&tls.join("ca.pem")));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        env.ok(&["run", "--rm", "localhost/tls:1", "cat", "/srv/hello.txt"]),
        "hello over tls\n"
    );
}
