#!/usr/bin/env bash
# One command on a fresh Debian 12 machine, as root: install what berth needs, build
# it, install the binaries, and run the main job (a busybox container started by
# berth-runtime from a bundle this script prepares, after storing its root filesystem as
# an image in berth's image store).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked
static=$(scripts/build-runtime.sh)
install -m 0755 "$static/berth-runtime" "$static/berth-monitor" /usr/local/bin/
install -m 0755 target/release/berth /usr/local/bin/berth
scripts/make-bundle.sh /var/lib/berth/bundles/busybox
tar -C /var/lib/berth/bundles/busybox/rootfs -c . |
  berth import -c 'CMD ["sh"]' - localhost/busybox:latest >/dev/null
berth images
exec berth-runtime run --bundle /var/lib/berth/bundles/busybox "berth-demo-$$"
