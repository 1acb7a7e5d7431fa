#!/usr/bin/env bash
# The cluster half of setup.sh's main job: `berth server` (API server and node agent in
# one process) started in the background — a systemd unit where systemd runs, else a
# process of its own with its log in /var/log/berth-server.log — then, once the node is
# Ready, examples/pod.yaml applied (two containers sharing an emptyDir and localhost),
# the pod shown as kubectl shows it and what it printed, and the pod removed again.
# kubectl ($KUBECTL, else the one on PATH) is used when there is one; without it the same
# requests go through curl.
set -euo pipefail
cd "$(dirname "$0")/.."
root=/var/lib/berth
pki=$root/server/pki
kc=$pki/admin.kubeconfig
node=$(uname -n | tr '[:upper:]' '[:lower:]')
url=https://127.0.0.1:6443

if [ -d /run/systemd/system ]; then
  cat >/etc/systemd/system/berth.service <<UNIT
[Unit]
Description=berth server (Kubernetes API server and node agent)
After=network-online.target

[Service]
ExecStart=/usr/local/bin/berth server
Restart=always
KillMode=process
Delegate=yes

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now berth.service >/dev/null
  echo "berth server: systemd unit berth.service (journalctl -u berth)"
else
  mkdir -p /run/berth
  if ! { [ -f /run/berth/server.pid ] && kill -0 "$(cat /run/berth/server.pid)" 2>/dev/null; }; then
    setsid /usr/local/bin/berth server >>/var/log/berth-server.log 2>&1 </dev/null &
    echo $! >/run/berth/server.pid
  fi
  echo "berth server: pid $(cat /run/berth/server.pid), log /var/log/berth-server.log"
fi

api() { curl -sS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"; }
for _ in $(seq 600); do
  [ -f "$pki/admin.key" ] && api "$url/api/v1/nodes/$node" 2>/dev/null | grep -q '"reason":"KubeletReady"' && break
  sleep 0.1
done
api "$url/api/v1/nodes/$node" | grep -q '"reason":"KubeletReady"' || {
  echo "node $node did not become Ready within 60 s; see the server's log" >&2
  exit 1
}
echo "node $node is Ready; admin kubeconfig: $kc"

manifest=$(cat examples/pod.yaml) # no nodeName: berth server's scheduler places it
kubectl=${KUBECTL:-kubectl}
if command -v "$kubectl" >/dev/null && "$kubectl" version --client >/dev/null 2>&1; then
  k() { "$kubectl" --kubeconfig "$kc" "$@"; }
  echo "$manifest" | k apply -f -
  k wait --for=condition=Ready pod/demo --timeout=60s >/dev/null
  k get pods -o wide
  k logs demo -c client
  k delete pod demo --wait >/dev/null
else
  echo "kubectl is not on PATH (scripts/deps.sh could not fetch it): the same requests through curl"
  api -X POST -H 'Content-Type: application/yaml' --data-binary "$manifest" \
    "$url/api/v1/namespaces/default/pods" >/dev/null
  for _ in $(seq 600); do
    api "$url/api/v1/namespaces/default/pods/demo" | grep -q '"type":"Ready"' &&
      api "$url/api/v1/namespaces/default/pods/demo" | tr ',' '\n' | grep -A1 '"status":"True"' | grep -q '"type":"Ready"' && break
    sleep 0.1
  done
  pod=$(api "$url/api/v1/namespaces/default/pods/demo")
  if ! echo "$pod" | tr ',' '\n' | grep -A1 '"status":"True"' | grep -q '"type":"Ready"'; then
    echo "the demo pod did not become Ready within 60 s; its status:" >&2
    echo "$pod" | tr ',' '\n' | grep -E '"(phase|reason|message)"' >&2 || true
    echo "the server's log: /var/log/berth-server.log (or journalctl -u berth)" >&2
    exit 1
  fi
  ip=$(echo "$pod" | tr ',' '\n' | sed -n 's/.*"podIP":"\([^"]*\)".*/\1/p' | head -1)
  phase=$(echo "$pod" | tr ',' '\n' | sed -n 's/.*"phase":"\([^"]*\)".*/\1/p' | head -1)
  ready=$(echo "$pod" | grep -o '"ready":true' | wc -l || true)
  printf '%-6s %-6s %-8s %-15s %s\n' NAME READY STATUS IP NODE
  printf '%-6s %-6s %-8s %-15s %s\n' demo "$ready/2" "$phase" "$ip" "$node"
  api "$url/api/v1/namespaces/default/pods/demo/log?container=client"
  api -X DELETE "$url/api/v1/namespaces/default/pods/demo" >/dev/null
  for _ in $(seq 300); do
    api "$url/api/v1/namespaces/default/pods/demo" | grep -q '"code":404' && break
    sleep 0.1
  done
fi
echo "the demo pod is removed; berth server keeps running (KUBECONFIG=$kc kubectl get nodes)"
