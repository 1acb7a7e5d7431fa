#!/usr/bin/env bash
# Builds berth-runtime as a fully static binary (glibc and libseccomp linked in): it
# starts faster and with less memory than a dynamically linked one, and runs on hosts
# without libseccomp. Prints the path of the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
host=$(rustc -vV | sed -n 's/^host: //p')
export LIBSECCOMP_LINK_TYPE=static
LIBSECCOMP_LIB_PATH=$(pkg-config --variable=libdir libseccomp)
export LIBSECCOMP_LIB_PATH
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --profile runtime --locked --target "$host" -p berth-runtime >&2
echo "target/$host/runtime/berth-runtime"
