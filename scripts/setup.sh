#!/usr/bin/env bash
# One command on a fresh Debian 12 machine, as root: install what berth needs, build
# it, install the binaries, and run the main job: a busybox rootfs stored as an image in
# berth's image store, a container run from it with memory and CPU limits, then the
# cluster: berth server (API server and node agent) started in the background and a pod
# of two containers run on its node (scripts/cluster-demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked
static=$(scripts/build-runtime.sh)
install -m 0755 "$static/berth-runtime" "$static/berth-monitor" /usr/local/bin/
install -m 0755 target/release/berth target/release/berth-device-plugin-example /usr/local/bin/
scripts/make-bundle.sh /var/lib/berth/bundles/busybox
tar -C /var/lib/berth/bundles/busybox/rootfs -c . |
  berth import -c 'CMD ["sh"]' - localhost/busybox:latest >/dev/null
berth images
berth run --rm -m 64m --cpus 0.5 --name "berth-demo-$$" localhost/busybox:latest \
  sh -c 'echo "hello from a berth container"; echo "hostname: $(hostname)"; echo "pid: $$"; echo "address: $(ip -4 -o addr show eth0 | awk "{print \$4}")"; echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"; echo "/proc/meminfo: $(head -1 /proc/meminfo)"'
scripts/cluster-demo.sh
