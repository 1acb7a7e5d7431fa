"""The Python kubernetes client against berth's API server (KUBECONFIG from the
environment): list, create, patch, watch and delete, checking what comes back."""
import sys
from kubernetes import client, config, watch

config.load_kube_config()
v1 = client.CoreV1Api()
apps = client.AppsV1Api()

names = sorted(ns.metadata.name for ns in v1.list_namespace().items)
assert names == ["default", "kube-node-lease", "kube-public", "kube-system"], names

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}), data={"a": "1"})
made = v1.create_namespaced_config_map("default", cm)
assert made.metadata.uid and made.metadata.resource_version, made.metadata

dep = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pyweb"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pyweb"}},
             "template": {"metadata": {"labels": {"app": "pyweb"}},
                          "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
}
d = apps.create_namespaced_deployment("default", dep)
assert d.spec.strategy.rolling_update.max_surge == "25%", d.spec.strategy
apps.patch_namespaced_deployment_scale("pyweb", "default", {"spec": {"replicas": 3}})
assert apps.read_namespaced_deployment("pyweb", "default").spec.replicas == 3

w = watch.Watch()
events = []
rv = v1.list_namespaced_config_map("default").metadata.resource_version
v1.patch_namespaced_config_map("py", "default", {"data": {"a": "2"}})
v1.delete_namespaced_config_map("py", "default")
for ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2):
    events.append((ev["type"], ev["object"].metadata.name))
    if ev["type"] == "DELETED":
        w.stop()
assert events == [("MODIFIED", "py"), ("DELETED", "py")], events

try:
    v1.read_namespaced_config_map("py", "default")
    sys.exit("read a deleted object")
except client.exceptions.ApiException as e:
    assert e.status == 404 and "NotFound" in e.body, e
print("ok")
