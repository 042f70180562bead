#!/bin/bash
# Fuzzes one target for a bounded time: fuzz/run.sh TARGET SECONDS (nightly and cargo-fuzz installed).
# The working corpus grows under $FUZZ_WORK (seeded from fuzz/corpus/TARGET and fuzz/seeds.py's
# output if present); crashes land in $FUZZ_WORK/artifacts/TARGET/. fuzz/README.md says how the
# saved corpus is refreshed from it.
set -euo pipefail
target=$1 seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
work=${FUZZ_WORK:-/var/cache/sonoedge/fuzz-work}
target_dir=${FUZZ_TARGET_DIR:-/var/cache/sonoedge/fuzz-target}
mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
cargo +nightly fuzz build --fuzz-dir "$here" --target-dir "$target_dir" --codegen-units 16 "$target"
dict=()
[ -f "$here/$target.dict" ] && dict=(-dict="$here/$target.dict")
# 64 MB per allocation is 4x any bound the harnesses set (16 MiB stills, 2048x2048 MJPG): an
# allocation past it is a limit that did not hold, reported as a crash.
exec "$target_dir/x86_64-unknown-linux-gnu/release/$target" "$work/corpus/$target" "$here/corpus/$target" \
    "${dict[@]}" -max_total_time="$seconds" -timeout=10 -malloc_limit_mb=64 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/$target/" -print_final_stats=1
