#!/usr/bin/env bash
# Makes an OCI bundle with a busybox root filesystem at $1 (default
# /var/lib/berth/bundles/busybox): rootfs/ with busybox and its applets, and a
# config.json from `berth-runtime spec` that runs a short demo without a terminal.
set -euo pipefail
dir=${1:-/var/lib/berth/bundles/busybox}
runtime=${BERTH_RUNTIME:-berth-runtime}
busybox=$(command -v busybox)
rm -rf "$dir"
mkdir -p "$dir/rootfs/bin" "$dir/rootfs/etc" "$dir/rootfs/tmp" "$dir/rootfs/root"
cp "$busybox" "$dir/rootfs/bin/busybox"
for applet in $("$dir/rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$dir/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/rootfs/etc/passwd"
echo 'root:x:0:' > "$dir/rootfs/etc/group"
(cd "$dir" && "$runtime" spec)
python3 - "$dir/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c",
    "echo hello from a berth container; echo hostname: $(hostname); "
    "echo pid: $$; echo processes: $(ps -o pid= | wc -l); "
    "echo cgroup: $(cut -d: -f3 /proc/self/cgroup | sort -u | tr '\\n' ' ')"]
json.dump(c, open(path, "w"), indent=2)
PY
echo "bundle ready: $dir"
