//! Archives across tools: what berth saves, podman and skopeo load, and back; umoci's
//! layouts load into berth.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn diff_ids_of(env: &Env, name: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", name]))
            .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn podman_loads_what_berth_saves_and_back() {
    let env = Env::new();
    env.busybox_image("localhost/bb:1");
    let want = diff_ids_of(&env, "bb:1");
    for (fmt, file) in [
        ("docker-archive", "bb-docker.tar"),
        ("oci-archive", "bb-oci.tar"),
    ] {
        let path = env.path(file);
        env.ok(&[
            "save",
            "--format",
            fmt,
            "-o",
            path.to_str().unwrap(),
            "bb:1",
        ]);
        let out = must(
            podman(&env, &["load", "-i", path.to_str().unwrap()]),
            "podman load",
        );
        assert!(out.contains("localhost/bb:1"), "{fmt}: {out}");
        let v: Value = serde_json::from_str(&must(
            podman(&env, &["image", "inspect", "localhost/bb:1"]),
            "podman inspect",
        ))
        .unwrap();
        assert_eq!(v[0]["RootFS"]["Layers"], serde_json::json!(want), "{fmt}");
        must(podman(&env, &["rmi", "-f", "localhost/bb:1"]), "podman rmi");
    }
    // podman saves (both formats); berth loads.
    must(
        podman(
            &env,
            &["load", "-i", env.path("bb-docker.tar").to_str().unwrap()],
        ),
        "podman load",
    );
    must(
        podman(&env, &["tag", "localhost/bb:1", "localhost/frompodman:2"]),
        "podman tag",
    );
    for (fmt, file) in [
        ("docker-archive", "p-docker.tar"),
        ("oci-archive", "p-oci.tar"),
    ] {
        let path = env.path(file);
        must(
            podman(
                &env,
                &[
                    "save",
                    "--format",
                    fmt,
                    "-o",
                    path.to_str().unwrap(),
                    "localhost/frompodman:2",
                ],
            ),
            "podman save",
        );
        let env2 = Env::new();
        let out = env2.ok(&["load", "-i", path.to_str().unwrap()]);
        assert!(out.contains("Loaded image"), "{fmt}: {out}");
        let names = env2.image_names();
        assert!(
            names.iter().any(|n| n.contains("frompodman")),
            "{fmt}: {names:?}"
        );
        let name = names.iter().find(|n| n.contains("frompodman")).unwrap();
        assert_eq!(diff_ids_of(&env2, name), want, "{fmt}");
        let r = env2
            .ok(&["rootfs", "prepare", "p", name])
            .trim()
            .to_string();
        assert!(std::path::Path::new(&r).join("bin/busybox").exists());
        env2.ok(&["rootfs", "rm", "p"]);
    }
    podman_cleanup(&env);
}

#[test]
fn skopeo_and_umoci_layouts() {
    let env = Env::new();
    env.busybox_image("localhost/bb:1");
    let want = diff_ids_of(&env, "bb:1");
    // berth's OCI layout → skopeo → a new OCI layout (skopeo's own writer) → berth.
    let ours = env.path("ours");
    env.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        ours.to_str().unwrap(),
        "bb:1",
    ]);
    let theirs = env.path("theirs");
    must(
        Command::new("skopeo")
            .args([
                "copy",
                &format!("oci:{}", ours.display()),
                &format!("oci:{}:v1", theirs.display()),
            ])
            .output()
            .unwrap(),
        "skopeo copy",
    );
    let env2 = Env::new();
    let out = env2.ok(&["load", "-i", theirs.to_str().unwrap()]);
    // skopeo names the manifest only by tag ("v1"): the image loads untagged.
    assert!(out.contains("Loaded image ID: sha256:"), "{out}");
    // docker-archive written by skopeo, with a name.
    let da = env.path("sk-docker.tar");
    must(
        Command::new("skopeo")
            .args([
                "copy",
                &format!("oci:{}", ours.display()),
                &format!("docker-archive:{}:localhost/viaskopeo:3", da.display()),
            ])
            .output()
            .unwrap(),
        "skopeo copy to docker-archive",
    );
    let out = env2.ok(&["load", "-i", da.to_str().unwrap()]);
    assert!(out.contains("localhost/viaskopeo:3"), "{out}");
    assert_eq!(diff_ids_of(&env2, "viaskopeo:3"), want);

    // umoci: a new image, a layer added with `umoci insert`, loaded by berth.
    let lay = env.path("umoci");
    must(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&lay)
            .output()
            .unwrap(),
        "umoci init",
    );
    let img = format!("{}:u1", lay.display());
    must(
        Command::new("umoci")
            .args(["new", "--image", &img])
            .output()
            .unwrap(),
        "umoci new",
    );
    let src = env.path("ins");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/umoci-was-here"), "yes\n").unwrap();
    must(
        Command::new("umoci")
            .args(["insert", "--image", &img])
            .arg(src.join("etc"))
            .arg("/etc")
            .output()
            .unwrap(),
        "umoci insert",
    );
    let env3 = Env::new();
    let out = env3.ok(&["load", "-i", lay.to_str().unwrap()]);
    assert!(out.contains("Loaded image ID"), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_string();
    env3.ok(&["tag", &id, "localhost/umoci:1"]);
    let r = env3
        .ok(&["rootfs", "prepare", "u", "umoci:1"])
        .trim()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&r).join("etc/umoci-was-here")).unwrap(),
        "yes\n"
    );
    env3.ok(&["rootfs", "rm", "u"]);

    // A berth layout that umoci unpacks (umoci reads by ref.name tag).
    let bundle = env.path("umoci-bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:1", ours.display())])
        .arg(&bundle)
        .output()
        .unwrap();
    must(out, "umoci unpack of berth's layout");
    assert!(bundle.join("rootfs/bin/busybox").exists());
}
