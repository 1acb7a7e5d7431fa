#!/usr/bin/env bash
# Builds berth-runtime and berth-monitor as fully static binaries (glibc, and for the
# runtime libseccomp, linked in): short-lived or long-lived, each is mostly its own
# code, so they start faster and hold less memory than dynamically linked ones. Prints
# the directory holding both.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
host=$(rustc -vV | sed -n 's/^host: //p')
export LIBSECCOMP_LINK_TYPE=static
LIBSECCOMP_LIB_PATH=$(pkg-config --variable=libdir libseccomp)
export LIBSECCOMP_LIB_PATH
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --profile runtime --locked --target "$host" -p berth-runtime -p berth-monitor >&2
echo "target/$host/runtime"
