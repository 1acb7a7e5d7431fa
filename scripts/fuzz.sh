#!/usr/bin/env bash
# Fuzzes a target for SECONDS (default 300): the layer unpacker (fuzz/fuzz_targets/
# unpack.rs, the default) or, with FUZZ_TARGET=apirequest, the API server's request
# decoding and patch engines (fuzz/fuzz_targets/apirequest.rs).
# Needs root (layers make device nodes, chown, set trusted.* xattrs) and cargo-fuzz;
# works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the nightly-only flags
# cargo-fuzz passes (-Zsanitizer=address, ...).
#
#   scripts/fuzz.sh [SECONDS] [extra libFuzzer options...]
#
# New inputs go to fuzz/work/unpack/ (not committed); fuzz/corpus/unpack/ holds the seeds.
# A crash or timeout is saved under fuzz/artifacts/unpack/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run unpack fuzz/artifacts/unpack/<file>   (in fuzz/)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
secs="${1:-300}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
target="${FUZZ_TARGET:-unpack}"
mkdir -p "work/$target" "corpus/$target"
export RUSTC_BOOTSTRAP=1
dict=()
[ -f "$target.dict" ] && dict=(-dict="$target.dict")
exec cargo fuzz run "$target" "work/$target" "corpus/$target" -- \
  -max_total_time="$secs" -timeout=30 "${dict[@]}" -print_final_stats=1 "$@"
