//! Device plugins end to end: berth-device-plugin-example offers loop device nodes as
//! example.com/loop to a `berth server` node; pods get exactly the devices they ask
//! for, a pod asking for more than is free waits Pending ("Insufficient
//! example.com/loop"), an unhealthy device is not handed out, an agent restart keeps
//! the assignments (checkpoint), and the Pod Resources API tells who holds what.
//! Plugins that misbehave (scripted ones) are met as the kubelet meets them.
//! Needs root (device nodes, namespaces, cgroups) and kubelet 1.32's kubectl.

mod common;
#[path = "devices/scripted.rs"]
mod scripted;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use berth_deviceplugin::podresources::pod_resources_lister_client::PodResourcesListerClient;
use berth_deviceplugin::podresources::{
    AllocatableResourcesRequest, GetPodResourcesRequest, ListPodResourcesRequest,
};
use common::cluster::{phase, Cluster};

const LOOP: &str = "example.com/loop";

/// The node's (capacity, allocatable) of `resource`, as the API shows them.
fn counts(c: &Cluster, resource: &str) -> (String, String) {
    let n = c.json("node", &c.node);
    let get = |k: &str| n["status"][k][resource].as_str().unwrap_or("").to_string();
    (get("capacity"), get("allocatable"))
}

fn wait_counts(c: &Cluster, resource: &str, want: (&str, &str)) {
    c.until(
        &format!("node {resource} capacity/allocatable {want:?}"),
        30,
        || {
            let now = counts(c, resource);
            (now.0 == want.0 && now.1 == want.1).then_some(())
        },
    );
}

/// A pod (scheduled by the scheduler) asking for `n` of `resource`.
fn device_pod(name: &str, resource: &str, n: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:1
    command: [sleep, "3600"]
    resources:
      limits: {{"{resource}": "{n}"}}
"#
    )
}

/// The loop device nodes a pod's container sees, and its EXAMPLE_LOOP_DEVICES.
fn loops_inside(c: &Cluster, pod: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = c.ok(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        "ls /dev; echo env=$EXAMPLE_LOOP_DEVICES",
    ]);
    let nodes = out
        .lines()
        .filter(|l| l.starts_with("loop"))
        .map(String::from)
        .collect();
    let env = out
        .lines()
        .find_map(|l| l.strip_prefix("env="))
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    (nodes, env)
}

/// A block device node for loop device `minor` at `dir/loopMINOR`.
fn mknod_loop(dir: &Path, minor: u32) {
    let path = dir.join(format!("loop{minor}"));
    let st = Command::new("mknod")
        .arg(&path)
        .args(["b", "7", &minor.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "mknod {}", path.display());
}

/// The example plugin's process, killed when dropped.
struct ExamplePlugin(Child);

impl ExamplePlugin {
    fn start(plugin_dir: &Path, dev_dir: &Path, log: PathBuf) -> ExamplePlugin {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth-device-plugin-example"))
            .arg("--plugin-dir")
            .arg(plugin_dir)
            .arg("--dev-dir")
            .arg(dev_dir)
            .args(["--health-interval", "200ms"])
            .env("BERTH_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        ExamplePlugin(child)
    }

    /// SIGKILL, as a crash.
    fn crash(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ExamplePlugin {
    fn drop(&mut self) {
        self.crash();
    }
}

fn pod_resources(c: &Cluster) -> PathBuf {
    c.env.root().join("agent/pod-resources/kubelet.sock")
}

/// The devices of `resource` the Pod Resources API says `pod`'s container holds.
fn held(rt: &tokio::runtime::Runtime, c: &Cluster, pod: &str) -> BTreeSet<String> {
    rt.block_on(async {
        let ch = berth_grpc_unix::connect(&pod_resources(c)).await.unwrap();
        let list = PodResourcesListerClient::new(ch)
            .list(ListPodResourcesRequest {})
            .await
            .unwrap()
            .into_inner();
        list.pod_resources
            .iter()
            .filter(|p| p.name == pod && p.namespace == "default")
            .flat_map(|p| p.containers.iter())
            .flat_map(|c| c.devices.iter())
            .filter(|d| d.resource_name == LOOP)
            .flat_map(|d| d.device_ids.iter().cloned())
            .collect()
    })
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn the_example_plugin_hands_loop_devices_to_pods() {
    let rt = common::runtime();
    let mut c = Cluster::start();
    let plugin_dir = c.env.root().join("agent/device-plugins");
    let dev = c.env.path("dev");
    std::fs::create_dir_all(&dev).unwrap();
    // Minors no host is likely to use, so that nothing here touches a real loop.
    let minors = [240u32, 241, 242];
    for m in minors {
        mknod_loop(&dev, m);
    }
    let mut plugin = ExamplePlugin::start(&plugin_dir, &dev, c.env.path("plugin.log"));
    wait_counts(&c, LOOP, ("3", "3"));

    // Two of three: exactly two device nodes inside, named in the environment.
    c.apply(&device_pod("two", LOOP, 2));
    c.wait_pod("two", "Running", 60, |p| phase(p) == "Running");
    let (nodes, env) = loops_inside(&c, "two");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert_eq!(nodes, env);
    assert_eq!(held(&rt, &c, "two"), nodes);
    // The plugin prefers the lowest-numbered devices.
    assert_eq!(nodes, BTreeSet::from(["loop240".into(), "loop241".into()]));

    // Two more do not fit: Pending, as kube-scheduler says it.
    c.apply(&device_pod("more", LOOP, 2));
    c.until("FailedScheduling for pod more", 30, || {
        let ev = c.events("more");
        ev.contains("FailedScheduling")
            .then_some(())
            .filter(|_| ev.contains("Insufficient example.com/loop"))
    });
    assert_eq!(phase(&c.pod("more")), "Pending");

    // The Pod Resources API: allocatable devices, and a pod not on the node.
    rt.block_on(async {
        let ch = berth_grpc_unix::connect(&pod_resources(&c)).await.unwrap();
        let mut client = PodResourcesListerClient::new(ch);
        let all = client
            .get_allocatable_resources(AllocatableResourcesRequest {})
            .await
            .unwrap()
            .into_inner();
        let ids: BTreeSet<String> = all
            .devices
            .iter()
            .filter(|d| d.resource_name == LOOP)
            .flat_map(|d| d.device_ids.clone())
            .collect();
        assert_eq!(ids.len(), 3, "{all:?}");
        let got = client
            .get(GetPodResourcesRequest {
                pod_name: "two".into(),
                pod_namespace: "default".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            got.pod_resources.unwrap().containers[0].devices[0]
                .device_ids
                .len(),
            2
        );
        let e = client
            .get(GetPodResourcesRequest {
                pod_name: "more".into(),
                pod_namespace: "default".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    });

    // The free device's node disappears: unhealthy, allocatable falls, capacity stays.
    std::fs::remove_file(dev.join("loop242")).unwrap();
    wait_counts(&c, LOOP, ("3", "2"));
    // "two" ends: "more" fits the two healthy devices, never the broken one.
    c.ok(&["delete", "pod", "two", "--wait=true"]);
    c.wait_pod("more", "Running", 60, |p| phase(p) == "Running");
    let (nodes, _) = loops_inside(&c, "more");
    assert_eq!(nodes, BTreeSet::from(["loop240".into(), "loop241".into()]));

    // The agent restarts: the checkpoint keeps "more"'s devices held; the plugin
    // registers again on the new socket; the device that came back is the only one
    // a new pod can get.
    c.kill();
    mknod_loop(&dev, 242);
    c.spawn();
    c.wait_ready();
    wait_counts(&c, LOOP, ("3", "3"));
    c.apply(&device_pod("one", LOOP, 1));
    c.wait_pod("one", "Running", 60, |p| phase(p) == "Running");
    assert_eq!(
        loops_inside(&c, "one").0,
        BTreeSet::from(["loop242".into()])
    );
    assert_eq!(loops_inside(&c, "more").0.len(), 2);
    assert_eq!(held(&rt, &c, "more").len(), 2);

    // The plugin crashes: its devices turn unhealthy; running pods keep theirs.
    plugin.crash();
    wait_counts(&c, LOOP, ("3", "0"));
    assert_eq!(phase(&c.pod("one")), "Running");
    let plugin_log = std::fs::read_to_string(c.env.path("plugin.log")).unwrap_or_default();
    assert!(plugin_log.contains("registered"), "{plugin_log}");
    for p in ["more", "one"] {
        c.ok(&["delete", "pod", p, "--wait=false"]);
    }
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn misbehaving_device_plugins_are_met_as_the_kubelet_meets_them() {
    use scripted::{device, register, Scripted};
    let rt = common::runtime();
    let c = Cluster::start();
    let dir = c.env.root().join("agent/device-plugins");
    const R: &str = "example.com/scripted";

    // Registrations that cannot be served are refused with the reason.
    let e = rt
        .block_on(register(&dir, "v1alpha1", "x.sock", R))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("not supported"), "{}", e.message());
    let e = rt
        .block_on(register(&dir, "v1beta1", "x.sock", "scripted"))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = rt
        .block_on(register(&dir, "v1beta1", "absent.sock", R))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());

    // A device listed twice counts once.
    let mut first = rt.block_on(Scripted::start(
        &dir,
        "first.sock",
        vec![device("d1", true), device("d1", true), device("d2", false)],
    ));
    rt.block_on(first.register(&dir, R)).unwrap();
    wait_counts(&c, R, ("2", "1"));

    // The plugin registers again from another socket: the new one serves, and the
    // old one going away changes nothing.
    let second = rt.block_on(Scripted::start(
        &dir,
        "second.sock",
        vec![device("d1", true), device("d2", true), device("d3", true)],
    ));
    rt.block_on(second.register(&dir, R)).unwrap();
    wait_counts(&c, R, ("3", "3"));
    first.stop();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(counts(&c, R), ("3".into(), "3".into()));
    // Health comes and goes with the plugin's lists.
    second.list(vec![
        device("d1", true),
        device("d2", true),
        device("d3", false),
    ]);
    wait_counts(&c, R, ("3", "2"));
    second.list(vec![
        device("d1", true),
        device("d2", true),
        device("d3", true),
    ]);
    wait_counts(&c, R, ("3", "3"));

    // Allocate fails: the pod is rejected with the plugin's reason, and nothing of
    // it was started.
    second.script.lock().unwrap().allocate_error = Some("d1 is on fire".into());
    c.apply(&device_pod("refused", R, 1));
    let p = c.wait_pod("refused", "Failed", 60, |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "UnexpectedAdmissionError");
    let msg = p["status"]["message"].as_str().unwrap();
    assert!(msg.contains("d1 is on fire"), "{msg}");
    assert!(c.events("refused").contains("UnexpectedAdmissionError"));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let sandboxes =
        berth_engine::cri::RuntimeService::list_pod_sandbox(&c.engine(), &Default::default())
            .unwrap();
    assert!(
        !sandboxes.iter().any(|s| s.metadata.uid == uid),
        "a sandbox was made for the rejected pod"
    );
    // Its device was not kept: all three are free for the next pod.
    second.script.lock().unwrap().allocate_error = None;

    // A preference outside what was offered is set aside; the pod still gets a
    // device of the plugin's, and exactly one.
    second.script.lock().unwrap().preferred = Some(vec!["nope".into()]);
    c.apply(&device_pod("lied-to", R, 1));
    let p = c.wait_pod("lied-to", "Running", 60, |p| phase(p) == "Running");
    let env = c.ok(&[
        "exec",
        "lied-to",
        "--",
        "sh",
        "-c",
        "echo $SCRIPTED_DEVICES",
    ]);
    assert!(["d1", "d2", "d3"].contains(&env.trim()), "{env:?} {p}");
    c.ok(&["delete", "pod", "lied-to", "--wait=true"]);

    // A device node that does not exist: the container cannot be created, and the
    // pod says why.
    second.script.lock().unwrap().preferred = None;
    second.script.lock().unwrap().host_path = Some("/dev/berth-no-such-device".into());
    c.apply(&device_pod("broken-node", R, 1));
    let p = c.wait_pod("broken-node", "CreateContainerError", 60, |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("CreateContainer"))
    });
    let why = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("/dev/berth-no-such-device"), "{why}");
    c.ok(&["delete", "pod", "broken-node", "--wait=false"]);
}

#[test]
#[cfg_attr(
    any(kubectl_missing, nvidia_gpu_missing),
    ignore = "needs kubectl 1.32, and an NVIDIA GPU with its driver and a CDI spec for nvidia.com/gpu in /etc/cdi or /var/run/cdi (nvidia-ctk cdi generate)"
)]
fn an_nvidia_gpu_reaches_a_pod_through_its_cdi_spec() {
    use scripted::{device, Scripted};
    let rt = common::runtime();
    let c = Cluster::start();
    let dir = c.env.root().join("agent/device-plugins");
    const GPU: &str = "nvidia.com/gpu";
    // A plugin answering as NVIDIA's does in CDI mode: the device by its CDI name,
    // resolved by the agent from the driver's spec.
    let gpu = rt.block_on(Scripted::start(
        &dir,
        "nvidia.sock",
        vec![device("0", true)],
    ));
    gpu.script.lock().unwrap().cdi_devices = vec![format!("{GPU}=0")];
    rt.block_on(gpu.register(&dir, GPU)).unwrap();
    wait_counts(&c, GPU, ("1", "1"));
    c.apply(&device_pod("cuda", GPU, 1));
    c.wait_pod("cuda", "Running", 120, |p| phase(p) == "Running");
    let out = c.ok(&[
        "exec",
        "cuda",
        "--",
        "sh",
        "-c",
        "test -c /dev/nvidia0 && echo gpu",
    ]);
    assert_eq!(out.trim(), "gpu");
}
