//! `inspect --explain` in plain words.

use serde_json::Value;

/// The facts in plain words.
pub fn explain_text(v: &Value) -> String {
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    let mut o = String::new();
    o += &format!(
        "Container {} ({}) is process {} on the host, running {:?}.\n",
        s(&v["name"]),
        &s(&v["id"])[..12.min(s(&v["id"]).len())],
        v["pid"],
        s(&v["command"])
    );
    let sb = &v["sandbox"];
    if !sb.is_null() {
        let shares: Vec<String> = sb["shares"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let who = if s(&sb["kind"]) == "pod" {
            format!("pod {}'s sandbox {}", s(&sb["name"]), &s(&sb["id"])[..12])
        } else {
            format!("its own sandbox {}", &s(&sb["id"])[..12])
        };
        o += &format!(
            "It runs in {who} (network: {}){}; it shares {} with the sandbox{}.\n",
            s(&sb["network"]),
            sb["infra_pid"]
                .as_i64()
                .map(|p| format!(", whose infra process is {p}"))
                .unwrap_or_default(),
            if shares.is_empty() {
                "no namespace".to_string()
            } else {
                format!("its {} namespaces", shares.join(", "))
            },
            if s(&sb["kind"]) == "pod" {
                ""
            } else {
                " (pinned by bind mounts: they outlive any one process)"
            }
        );
    }
    o += "\n";
    o += &format!(
        "Namespaces (from /proc/{}/ns): what the container sees of its own\n",
        v["pid"]
    );
    for n in v["namespaces"].as_array().into_iter().flatten() {
        let shared = s(&n["shared_with"]);
        o += &format!(
            "  {:<7} {:<12} {:<32} {}\n",
            s(&n["type"]),
            n["inode"],
            s(&n["isolates"]),
            if shared.is_empty() {
                "its own".to_string()
            } else {
                format!("shared with {shared}")
            }
        );
    }
    o += &format!(
        "\nCgroups (from /proc/{}/cgroup): what the container may use\n",
        v["pid"]
    );
    for c in v["cgroups"].as_array().into_iter().flatten() {
        let files: Vec<String> = c["files"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, x)| format!("{k}={}", s(x)))
            .collect();
        o += &format!(
            "  {:<22} {}  {}\n",
            s(&c["controllers"]),
            s(&c["path"]),
            files.join(" ")
        );
    }
    o += &format!(
        "\nRoot filesystem (from /proc/{}/mountinfo): {}, top to bottom\n",
        v["pid"],
        s(&v["rootfs"]["type"])
    );
    let up = &v["rootfs"]["upper"];
    if !up.is_null() {
        o += &format!(
            "  upper (the container's own writes): {}  ({} entries)\n",
            s(&up["dir"]),
            up["entries"]
        );
        for w in up["whiteouts"].as_array().into_iter().flatten() {
            o += &format!(
                "    whiteout: {} is deleted (a 0:0 character device hides it below)\n",
                s(w)
            );
        }
        for d in up["opaque_dirs"].as_array().into_iter().flatten() {
            o += &format!("    opaque: {} hides everything below it\n", s(d));
        }
    }
    for l in v["rootfs"]["layers"].as_array().into_iter().flatten() {
        o += &format!(
            "  {}: {}{}\n",
            s(&l["role"]),
            s(&l["dir"]),
            l["diff_id"]
                .as_str()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    let rs = &v["root_switch"];
    if s(&rs["method"]) == "pivot_root" {
        o += &format!(
            "\nThe root was switched with pivot_root(2): the overlay above became / and the host's root was unmounted from the container's mount namespace ({} root mount left in /proc/PID/mountinfo), so no path — not even a chroot escape with '..' — leads to the host's files. chroot(2) alone would only change where / resolves for the process: the host's mounts would stay in its namespace, reachable by a process that may chroot again. berth-runtime falls back to moving the root over / and chrooting only on an initramfs host (here / is {}).\n",
            rs["root_mounts"],
            s(&rs["host_root_fstype"])
        );
    } else {
        o += &format!(
            "\nThe root was switched by moving it over / (MS_MOVE) and chrooting into it: the host's root is {}, an initramfs, which pivot_root(2) cannot leave. The host's root stays in the container's mount namespace, hidden below — weaker than pivot_root.\n",
            s(&rs["host_root_fstype"])
        );
    }
    o += "\nMounts inside the container\n";
    for m in v["mounts"].as_array().into_iter().flatten() {
        let bind = m["bind_of"]
            .as_str()
            .map(|b| format!("  bind mount of the host's {b}"))
            .unwrap_or_default();
        o += &format!(
            "  {:<24} {:<8} {}{}\n",
            s(&m["destination"]),
            s(&m["type"]),
            s(&m["options"]),
            bind
        );
    }
    let sec = &v["security"];
    o += "\nSecurity (from /proc/PID/status)\n";
    o += &format!("  uid {}  gid {}\n", s(&sec["uid"]), s(&sec["gid"]));
    let caps: Vec<String> = sec["capabilities_effective"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    o += &format!(
        "  effective capabilities ({}): {}\n",
        caps.len(),
        caps.join(", ")
    );
    o += &format!(
        "  seccomp: {} ({} filters), no_new_privs: {}\n",
        s(&sec["seccomp"]),
        s(&sec["seccomp_filters"]),
        sec["no_new_privs"]
    );
    let p = &sec["seccomp_profile"];
    if !p.is_null() {
        o += &format!(
            "  The filter lets {} system calls through; these fail instead of running:\n",
            p["allowed"]
        );
        for r in p["refused"].as_array().into_iter().flatten() {
            let calls: Vec<String> = r["calls"].as_array().into_iter().flatten().map(s).collect();
            o += &format!("    with {}: {}\n", s(&r["error"]), calls.join(", "));
        }
        if s(&p["default_action"]) == "SCMP_ACT_ERRNO" {
            o += &format!(
                "    and with {} every call the profile does not name (newer than it), so that libc falls back to an older call\n",
                s(&p["default_error"])
            );
        }
    }
    let served: Vec<String> = v["proc_view"]["served"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    if served.is_empty() {
        o += "\n/proc inside is the kernel's own: top and free there show the host's CPUs and memory, not these limits.\n";
    } else {
        o += &format!(
            "\n/proc is the kernel's own except {}: berth's /proc view (FUSE, what lxcfs does) serves those from the container's cgroup, so free, top and uptime inside show its limits and its own use. Programs that ask the kernel directly (sysinfo(2)) still see the host.\n",
            served.join(", ")
        );
    }
    o
}
