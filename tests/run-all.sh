#!/usr/bin/env bash
# The one test command (README "Run all tests"; .ci/run calls exactly this).
# Installs what the tests need when missing, builds the test binaries once, runs them, and prints
# each stage's time. Uses a cargo target directory outside the clone when one can be kept there.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
stage() { # stage NAME CMD...: runs CMD, prints its wall time
    local name=$1 t0=$SECONDS; shift
    echo "=== [$name] $*"
    "$@"
    echo "=== [$name] done in $((SECONDS - t0)) s (total $((SECONDS - started)) s)"
}

need_apt=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        stage apt sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${need_apt[*]} >/dev/null"
    else
        echo "missing: ${need_apt[*]}; run: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
fi
# mosquitto is started by the tests themselves on free loopback ports; the packaged service is not needed.
export PATH="$PATH:/usr/sbin"

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    cache=/var/cache/sonoedge/target
    if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then export CARGO_TARGET_DIR=$cache; fi
fi
echo "cargo target dir: ${CARGO_TARGET_DIR:-target}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
stage build cargo test --workspace --all-targets --no-run --locked

t0=$SECONDS
echo "=== [test] cargo test --workspace --all-targets --locked"
# pipefail is set: a failing test fails this script even through tee.
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
echo "=== [test] done in $((SECONDS - t0)) s (total $((SECONDS - started)) s)"

echo "=== all stages passed in $((SECONDS - started)) s"
# The closing line, over every test binary (cargo prints a "test result" line per binary).
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
