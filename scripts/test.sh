#!/usr/bin/env bash
# The whole test suite, as CI runs it (needs root: the tests use real namespaces,
# cgroups and mounts): formatting, lints, then every test with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast "$@"
