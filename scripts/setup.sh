#!/usr/bin/env bash
# One command on a fresh Debian 12 machine, as root: install what berth needs, build
# it, install the binaries, and run the main job (a busybox container started by
# berth-runtime from a bundle this script prepares).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked
install -m 0755 "$(scripts/build-runtime.sh)" /usr/local/bin/berth-runtime
scripts/make-bundle.sh /var/lib/berth/bundles/busybox
exec berth-runtime run --bundle /var/lib/berth/bundles/busybox "berth-demo-$$"
