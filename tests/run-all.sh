#!/usr/bin/env bash
# The one test command (README "The two commands"; .ci/run calls exactly this).
# Installs what the tests need when missing, checks formatting and lints, then for x86-64, aarch64
# and armv7: builds the test binaries once, runs them (ARM under qemu-user, aarch64 twice: Cortex-A72
# and Cortex-A76); runs the README's first command as written (the front door); compares `classify`
# across architectures, checks the ARM binaries' glibc needs, builds and checks the amd64 .deb, and
# runs the V4L2 system test in VMs (x86-64 and aarch64 guests with the vivid driver).
# Prints each stage's time and, last, one line per architecture and a total.
#
# Budget (CI allows 90 min on 2 cores; CI runs on the session's machine, so its target dir is
# normally warm). Measured 2026-12-02 from an empty /var/cache/sonoedge/target (fresh machine,
# commit 53be5ac, before the cuts below; a niced build of another checkout shared the cores for the
# first 60 min): setup 13 s, lint 247 s (crate downloads included), x86-64 build 637 s, tests 132 s,
# release build 485 s, front door 13 s, setup-full 65 s, interop 105 s, live view 46 s, aarch64
# build 691 s, armv7 build 660 s, A72 tests 697 s, A76 578 s, armv7 606 s, parity 12 s, .deb 568 s
# (tract compiled once more), VMs 478 s (two of 238 s, one after the other): 6034 s, 100.6 min, over.
# Cuts since (README, "Time"): the .deb reuses the test build's tract (-~450 s), the A76 runs only
# the tests whose results come from tract's kernels (-~400 s), the armv7 build runs niced beside the
# A72 tests and the two VMs run at once (-~240 s): ~80 min cold by those figures.
# Measured 2026-12-03 cold (778b583): ~98 min, over again (lint 394 s, x86-64 build 790 s, release
# 600 s, aarch64 build 819 s, A72 828 s, armv7 build 964 s mostly after the A72 run, cargo-deb
# install 262 s). Since: the ARM builds and the cargo-deb install start at the beginning as
# idle-priority side jobs (below) that fill the cores' idle time; setup-full runs beside the lint.
# Measured cold 2026-12-04 after that (commit d086307, fresh machine, nothing beside it): 4923 s,
# 82.1 min (README, "Time"), ~8 min under the limit.
# Stage budgets every new test must fit in: lint <= 5 min cold, release build <= 9 min cold,
# interop <= 3 min, live-view <= 2 min, each full ARM test run <= 12 min, VMs <= 5 min;
# hardening, capture, clinical, eval and fleet tests get <= 3 min of x86-64 test time together
# (they run three more times on ARM).
#
# Usage: tests/run-all.sh            every stage (CI)
#        tests/run-all.sh --quick    day-to-day: lint, x86-64 build and tests, the front door only
#                                    (no ARM, no parity, no glibc check, no .deb, no VMs)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
case "${1:-}" in
    "") ;;
    --quick) quick=true ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

started=$SECONDS
stage() { # stage NAME CMD...: runs CMD, prints its wall time
    local name=$1 t0=$SECONDS; shift
    echo "=== [$name] $*"
    "$@"
    echo "=== [$name] done in $((SECONDS - t0)) s (total $((SECONDS - started)) s)"
}

ARM_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# ARM binaries are linked against glibc 2.31 (Pi OS Bullseye, Jetson L4T r35) by cargo-zigbuild.
GLIBC_MAX=2.31
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1

apt_install() { # apt_install PACKAGE...: installs the Debian packages given, if any
    [ $# -gt 0 ] || return 0
    [ "$(id -u)" = 0 ] || { echo "missing: $*; run: sudo apt-get install -y $*" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# What the quick tier needs: the x86-64 build (libclang for the V4L2 bindings), the tests' broker
# and TLS keys, and the lint tools.
setup_quick() {
    local need=()
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
    command -v openssl >/dev/null || need+=(openssl)
    command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)   # the fleet guide's consumer commands, run as written
    # bindgen needs libclang itself (libclang-NN.so.N or libclang.so): libclang-cpp, which LLVM's
    # tools bring in, matches a looser glob but is not it (a fresh machine failed on exactly that).
    compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || compgen -G "/usr/lib/llvm-*/lib/libclang-[0-9]*.so*" >/dev/null ||
        need+=(libclang-dev)
    apt_install "${need[@]}"
    cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 ||
        rustup component add rustfmt clippy >/dev/null 2>&1 ||
        { echo "cargo fmt / cargo clippy missing and rustup cannot add them: rustup component add rustfmt clippy" >&2; exit 1; }
}

# The rest of a full run: qemu-user and the ARM libcs, zig and cargo-zigbuild, the ARM targets, the VMs.
setup_full() {
    local need=()
    command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
    [ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-arm64-cross)
    [ -e /usr/arm-linux-gnueabihf/lib/libc.so.6 ] || need+=(libc6-armhf-cross)
    command -v readelf >/dev/null || need+=(binutils)
    command -v chromium >/dev/null || need+=(chromium)   # the live-view stage's browser
    apt_install "${need[@]}"
    command -v cargo-zigbuild >/dev/null && python3 -m ziglang version >/dev/null 2>&1 ||
        python3 -m pip install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
    rustup target add "${ARM_TARGETS[@]}" >/dev/null 2>&1 || rustup target list --installed | grep -q armv7 ||
        { echo "rustup cannot add ${ARM_TARGETS[*]}" >&2; exit 1; }
    tests/vm/setup.sh
}

# mosquitto is started by the tests themselves on free loopback ports; the packaged service is not needed.
export PATH="$PATH:/usr/sbin"
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    cache=/var/cache/sonoedge/target
    if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then export CARGO_TARGET_DIR=$cache; fi
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
echo "cargo target dir: $CARGO_TARGET_DIR"
logs=$(mktemp -d)
trap 'side_kill_all; rm -rf "$logs"' EXIT

# run_tests NAME CMD...: runs a cargo test command, keeps its output, lists "SOURCE::test result"
# (SOURCE: src/lib.rs, src/main.rs, tests/it/main.rs...).
run_tests() {
    local name=$1; shift
    "$@" 2>&1 | tee "$logs/$name.log"
    # "Running unittests src/lib.rs (...)" or "Running tests/it/main.rs (...)": the source file.
    # "test NAME ... ok", "... FAILED", "... ignored" or "... ignored, REASON": the word after "...".
    awk '/^     Running / { bin = ($2 == "unittests") ? $3 : $2 }
         /^test .* \.\.\. / { l = $0; sub(/^test /, "", l); i = index(l, " ... "); r = substr(l, i + 5); sub(/[ ,].*/, "", r)
                                print bin "::" substr(l, 1, i - 1), r }' \
        "$logs/$name.log" | sort >"$logs/$name.list"
}

zig_target() { echo "$1.$GLIBC_MAX"; }
# Each ARM build has a target dir of its own: they run beside the x86-64 stages and each other
# (side jobs, below), and two cargo processes on one target dir wait on each other's lock (a
# --target build locks the host's debug dir too).
target_dir_for() {
    case $1 in
        aarch64-*) echo "$CARGO_TARGET_DIR/aarch64-side" ;;
        armv7-*) echo "$CARGO_TARGET_DIR/armv7-side" ;;
        *) echo "$CARGO_TARGET_DIR" ;;
    esac
}
debug_dir_for() { echo "$(target_dir_for "$1")/$1/debug"; }   # debug_dir_for TARGET: where its test build leaves sonoedge
cross_build() { # cross_build TARGET: the target's test binaries (and sonoedge, v4l2_ctl), built once
    CARGO_TARGET_DIR=$(target_dir_for "$1") cargo-zigbuild test --workspace --all-targets --no-run --locked --target "$(zig_target "$1")"
}

# Side jobs: the cold builds of a full run (the ARM test builds, cargo-deb) start early in the
# background at idle CPU priority (SCHED_IDLE): they get only the CPU time the stages leave idle
# (one-core phases of rustc, links, tests waiting on daemons and brokers) and take nothing from a
# stage that wants both cores, so timing-sensitive tests beside them run as they would alone. The
# stage that needs one waits for it and first raises it to normal priority. setup-full (downloads
# and apt) runs beside the lint at normal priority; the ARM builds wait for it.
declare -A side_pid=()
tree_pids() { # tree_pids PID: PID's descendants, parents first
    local p
    for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$p"; tree_pids "$p"; done
}
side_start() { # side_start NAME idle|normal CMD...: runs CMD in the background, output in $logs/NAME.log
    local name=$1 prio=$2; shift 2
    (
        if [ "$prio" = idle ]; then chrt --idle -p 0 "$BASHPID" >/dev/null; fi
        "$@"
    ) >"$logs/$name.log" 2>&1 &
    side_pid[$name]=$!
    echo "=== [$name] started in the background ($prio priority): $*"
}
side_promote() { # side_promote NAME: the side job and its processes back to normal priority
    local p
    for p in ${side_pid[$1]} $(tree_pids "${side_pid[$1]}"); do chrt -a -o -p 0 "$p" >/dev/null 2>&1 || true; done
}
side_wait() { # side_wait NAME: waits for the side job at normal priority, prints its log; fails as it did
    local rc=0
    side_promote "$1"
    wait "${side_pid[$1]}" || rc=$?
    unset "side_pid[$1]"
    cat "$logs/$1.log"
    [ $rc = 0 ] || echo "FAIL: side job $1 exited $rc"
    return $rc
}
side_kill_all() {
    local name p
    for name in "${!side_pid[@]}"; do
        for p in ${side_pid[$name]} $(tree_pids "${side_pid[$name]}"); do kill "$p" 2>/dev/null || true; done
    done
}
after_setup_full() { # after_setup_full CMD...: waits (polling) until setup-full has finished, then runs CMD if it passed
    until [ -e "$logs/setup-full.rc" ]; do sleep 2; done
    [ "$(cat "$logs/setup-full.rc")" = 0 ] || { echo "not run: setup-full failed"; return 1; }
    "$@"
}
setup_full_job() { # setup_full (errexit on: not under `||`), its exit status left in $logs/setup-full.rc
    trap 'echo $? >"$logs/setup-full.rc"' EXIT   # the side job's subshell: its own trap, not the script's
    setup_full
}
runner_for() {
    case $1 in
        aarch64-*) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
        armv7-*) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    esac
}

# Cross test runs: the test binaries run under qemu-user (cargo's runner, .cargo/config.toml); the
# daemon they spawn goes through SONOEDGE_TEST_RUNNER; deadlines are scaled, never timings.
cross_tests() { # cross_tests TARGET QEMU_CPU NAME [FILTER...]: FILTERs as libtest's (substrings of test names)
    local target=$1 cpu=$2 name=$3; shift 3
    CARGO_TARGET_DIR=$(target_dir_for "$target") QEMU_CPU=$cpu SONOEDGE_TEST_RUNNER="$(runner_for "$target")" SONOEDGE_TEST_TIME_SCALE=10 \
        run_tests "$name" cargo-zigbuild test --workspace --all-targets --locked --target "$(zig_target "$target")" -- "$@"
}

# The Cortex-A76 run (dotprod, fp16) takes only the tests whose results come from tract's kernels,
# which are what differ from the A72: tract picks other int8 and f16 kernels there. Everything else
# (capture, clinical, MQTT, config...) runs the same NEON code as on the A72, so it runs once, there.
A76_FILTERS=(infer:: golden:: model_contract:: demo_model:: eval_cli::)
# armv7 (32-bit: other pointer width, tract's armv7 kernels) takes those and the code whose
# arithmetic sees buffer sizes and strides: capture and pixel formats, preprocessing, config ranges,
# the allocation counts. The daemon, MQTT, clinical and eval tests run the same logic as on the A72
# (64-bit) and x86-64, and spawn the daemon under emulation: ~450 s of the armv7 run, so they run there.
ARMV7_FILTERS=("${A76_FILTERS[@]}" capture pixfmt:: preprocess config:: allocate)

classify_json() { # classify_json NAME RUNNER BINARY: probabilities of the fixtures, one JSON line each, in $logs/classify-NAME.jsonl
    local out=$logs/classify-$1 rc=0
    [ -x "$3" ] || { echo "FAIL: no $3 (built by the $1 build stage?)"; return 1; }
    $2 "$3" classify --model models/tiny-random/fp32 tests/fixtures/images/*.png tests/fixtures/images/*.jpg >"$out.jsonl" 2>"$out.err" || rc=$?
    [ "$rc" = 0 ] || { echo "FAIL: classify on $1 exited $rc; its stderr:"; tail -n 20 "$out.err"; return 1; }
}

parity() {
    classify_json x86_64 "" "$CARGO_TARGET_DIR/debug/sonoedge"
    QEMU_CPU=cortex-a72 classify_json aarch64 "$(runner_for aarch64-unknown-linux-gnu)" "$(debug_dir_for aarch64-unknown-linux-gnu)/sonoedge"
    QEMU_CPU=cortex-a76 classify_json aarch64-a76 "$(runner_for aarch64-unknown-linux-gnu)" "$(debug_dir_for aarch64-unknown-linux-gnu)/sonoedge"
    classify_json armv7 "$(runner_for armv7-unknown-linux-gnueabihf)" "$(debug_dir_for armv7-unknown-linux-gnueabihf)/sonoedge"
    python3 tests/cross_parity.py 1e-4 "$logs"/classify-x86_64.jsonl "$logs"/classify-aarch64.jsonl "$logs"/classify-aarch64-a76.jsonl "$logs"/classify-armv7.jsonl
}

glibc_check() {
    local target bin need
    for target in "${ARM_TARGETS[@]}"; do
        bin=$(debug_dir_for "$target")/sonoedge
        need=$(readelf -V --wide "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
        echo "$target: sonoedge needs glibc $need (limit $GLIBC_MAX)"
        [ "$(printf '%s\n%s\n' "$need" "$GLIBC_MAX" | sort -V | tail -1)" = "$GLIBC_MAX" ] || { echo "FAIL: $bin needs glibc $need" >&2; return 1; }
    done
}

# Tests that run on x86-64 only, as run_tests lists them ("SOURCE::module::test"), each with the
# reason it cannot run on ARM under qemu-user. Every other test runs on every architecture (the VM
# test is ignored everywhere and runs in its own stage).
X86_ONLY_TESTS=(
    # QLinear is an x86-64 AVX2 kernel; the rewrite never uses it on ARM (src/infer/qlinear.rs).
    src/lib.rs::infer::qlinear::tests::extreme_values_do_not_overflow_the_pairs
    src/lib.rs::infer::qlinear::tests::fused_product_equals_the_integer_product
)

# Every ARM list must equal x86-64's minus X86_ONLY_TESTS. The list must stay true: an entry x86-64
# did not run, or one an ARM run ran after all, fails the comparison.
filter_names() { # filter_names "FILTER...": x86-64's test names (of $logs/x.names) that libtest's substring filters select
    awk -v f="$1" 'BEGIN { n = split(f, fs, " ") }
        { t = substr($0, index($0, "::") + 2); for (i = 1; i <= n; i++) if (index(t, fs[i])) { print; next } }' "$logs/x.names"
}

compare_lists() {
    local name t
    sed 's/ .*//' "$logs/x86_64.list" | sort >"$logs/x.all"
    printf '%s\n' "${X86_ONLY_TESTS[@]}" | sed '/^$/d' | sort >"$logs/x86-only"
    if [ -n "$(comm -23 "$logs/x86-only" "$logs/x.all")" ]; then
        echo "FAIL: X86_ONLY_TESTS names tests x86_64 did not run (renamed or removed?):"; comm -23 "$logs/x86-only" "$logs/x.all"; return 1
    fi
    comm -23 "$logs/x.all" "$logs/x86-only" >"$logs/x.names"
    for t in "${X86_ONLY_TESTS[@]}"; do echo "x86-64 only: $t"; done
    # The A76 and armv7 lists must equal x86-64's names that their filters select, matched as libtest matches them.
    filter_names "${A76_FILTERS[*]}" >"$logs/x.aarch64-a76"
    filter_names "${ARMV7_FILTERS[*]}" >"$logs/x.armv7"
    for name in aarch64-a72 aarch64-a76 armv7; do
        local want=$logs/x.names what="the same"
        [ "$name" = aarch64-a72 ] || { want=$logs/x.$name; what="its filters' share of the"; }
        [ -s "$want" ] || { echo "FAIL: the $name filters select none of x86_64's tests"; return 1; }
        sed 's/ .*//' "$logs/$name.list" | sort >"$logs/a.names"
        if ! diff "$want" "$logs/a.names" >"$logs/diff"; then
            echo "FAIL: $name ran a different set of tests than x86_64 (minus X86_ONLY_TESTS):"; cat "$logs/diff"; return 1
        fi
        echo "$name: $what $(wc -l <"$logs/a.names") tests as x86_64 (${#X86_ONLY_TESTS[@]} x86-64 only)"
    done
}

lint() { # formatting and clippy, before any long build (x86-64 only: the lints are the same on ARM)
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    tests/deb/same-features.sh   # the .deb stage reuses the test build's tract
}

# The README's first command, read out of README.md (the first line of the sh block under
# "## The two commands", comment stripped), so the README as it stands is what gets tested.
front_door_command() {
    awk '/^## The two commands/ { s = 1; next }
         s && /^## / { exit }
         s && /^```sh/ { getline; print; exit }' README.md | sed 's/[[:space:]]*#.*//'
}

# front_door: runs that command, with only its duration shortened, and wants >= 10 predictions.
# The release build is done by the stage before, so this one times the demo itself.
front_door() {
    local cmd n
    cmd=$(front_door_command)
    case "$cmd" in
        *"--duration-s 30"*) cmd=${cmd/--duration-s 30/--duration-s 12} ;;
        *) echo "FAIL: the README's first command is no longer '... --duration-s 30': got '$cmd'; update front_door in $0" >&2; return 1 ;;
    esac
    echo "README's first command, duration shortened: $cmd"
    timeout 300 bash -c "$cmd" >"$logs/front-door.jsonl"
    n=$(grep -c '"schema":"sonoedge.prediction.v1"' "$logs/front-door.jsonl" || true)
    echo "front door: $(wc -l <"$logs/front-door.jsonl") messages printed, $n predictions"
    [ "$n" -ge 10 ] || { echo "FAIL: the README's first command printed $n predictions (want >= 10):"; tail -5 "$logs/front-door.jsonl"; return 1; }
}

# The daemon and `check` against RabbitMQ's MQTT plugin and NATS (tests/it/interop.rs: ignored by
# the plain runs above, x86-64 only: the brokers are native either way). The packages' own services
# are not started (a policy-rc.d for the install, unless one is there); the tests start private
# instances on loopback ports and stop them.
interop_tests() {
    local need=() own_policy=false
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
    command -v nats-server >/dev/null || need+=(nats-server)
    if [ ${#need[@]} -gt 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=true
    fi
    local rc=0
    apt_install "${need[@]}" || rc=$?
    if $own_policy; then rm -f /usr/sbin/policy-rc.d; fi
    [ $rc = 0 ] || return $rc
    SONOEDGE_INTEROP_REQUIRED=1 run_tests interop cargo test --locked --test it interop:: -- --ignored --nocapture
    grep '^MATRIX' "$logs/interop.log" || true
}

# The live view (view/index.html) in headless Chromium against mosquitto's websockets listener and the
# daemon (tests/it/live_view.rs: ignored by the plain runs, x86-64 only: the browser is native).
# Measured 2026-12-02: ~45 s (most of it waits for the synthetic source's first freeze).
live_view_tests() {
    run_tests live-view cargo test --locked --test it live_view:: -- --ignored --nocapture
}

# The two VMs run at once: each guest has one vCPU (qemu TCG, one busy host thread), so on 2 cores
# they take about as long together as one alone (each ~240 s, measured cold 2026-12-02). The test
# binary runs directly, not through cargo, which would hold the target dir's lock for the first
# run's whole length; run_tests still gets cargo's "Running" line for its list.
vm_tests() {
    local bin
    bin=$(cargo test --locked --test vivid_vm --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys; print(*[m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["kind"] == ["test"]])')
    [ -x "$bin" ] || { echo "FAIL: no vivid_vm test binary (got '$bin')"; return 1; }
    vm_run() { # vm_run ARCH [ENV=VALUE...]: the VM test for one guest architecture
        echo "     Running tests/vivid_vm.rs ($bin, SONOEDGE_VM_ARCH=$1)"
        env SONOEDGE_VM_ARCH="$@" "$bin" --ignored --nocapture
    }
    run_tests vm-aarch64 vm_run aarch64 SONOEDGE_VM_BIN_DIR="$(debug_dir_for aarch64-unknown-linux-gnu)" >"$logs/vm-aarch64.out" 2>&1 &
    local aarch64_vm=$! rc=0
    run_tests vm-x86_64 vm_run x86_64   # (not in an `||`: that would turn off errexit inside it)
    wait "$aarch64_vm" || rc=$?
    echo "--- the aarch64 VM, run beside it:"
    cat "$logs/vm-aarch64.out"
    return $rc
}

summary() { # summary NAME: "NAME: N passed, N failed, N ignored"
    awk -v n="$1" '{ if ($2 == "ok") p++; else if ($2 == "ignored") s++; else f++ }
        END { printf "tests %s: %d passed, %d failed, %d skipped\n", n, p, f, s }' "$logs/$1.list"
}

stage setup setup_quick
if ! $quick; then
    side_start setup-full normal setup_full_job
    side_start cargo-deb idle env CARGO_TARGET_DIR="$CARGO_TARGET_DIR/cargo-deb-build" deploy/debian/build-debs.sh tools
    side_start build-aarch64 idle after_setup_full cross_build aarch64-unknown-linux-gnu
    side_start build-armv7 idle after_setup_full cross_build armv7-unknown-linux-gnueabihf
fi
stage lint lint
stage build-x86_64 cargo test --workspace --all-targets --no-run --locked
stage test-x86_64 run_tests x86_64 cargo test --workspace --all-targets --locked
stage build-release cargo build --release --locked --bin sonoedge   # what the front door's `cargo run --release` builds
stage front-door front_door
if $quick; then
    echo "=== quick tier passed in $((SECONDS - started)) s (no ARM, parity, glibc, .deb or VM stages: run without --quick for those)"
    summary x86_64
    exit 0
fi
stage setup-full side_wait setup-full
stage interop interop_tests
stage live-view live_view_tests
# The side builds' stages time only what is left of them when they are needed.
stage build-aarch64 side_wait build-aarch64
# The armv7 build goes on beside the A72 tests (still at idle priority: emulated tests wait on
# their daemons and brokers and leave the cores partly idle).
stage test-aarch64-a72 cross_tests aarch64-unknown-linux-gnu cortex-a72 aarch64-a72
stage build-armv7 side_wait build-armv7
stage test-aarch64-a76 cross_tests aarch64-unknown-linux-gnu cortex-a76 aarch64-a76 "${A76_FILTERS[@]}"
stage test-armv7 cross_tests armv7-unknown-linux-gnueabihf cortex-a7 armv7 "${ARMV7_FILTERS[@]}"
stage compare-test-lists compare_lists
stage classify-parity parity
stage glibc glibc_check
# The dev profile, not release: the package is built with --no-default-features, so a release .deb
# could not reuse the front door's release build (tract compiled a third time). In the dev profile
# it reuses the x86-64 test build's tract: Cargo.toml's "Feature unification" block gives tract's
# tree the same features without rumqttd and the dev-dependencies (checked in the lint stage by
# tests/deb/same-features.sh).
export SONOEDGE_DEB_PROFILE=dev   # see deploy/debian/build-debs.sh
stage cargo-deb side_wait cargo-deb
stage deb tests/deb/check.sh
stage vm-vivid vm_tests

echo "=== all stages passed in $((SECONDS - started)) s"
for name in x86_64 interop live-view aarch64-a72 aarch64-a76 armv7 vm-x86_64 vm-aarch64; do summary "$name"; done
# The closing line, over every run above.
cat "$logs"/*.list | awk '{ if ($2 == "ok") p++; else if ($2 == "ignored") s++; else f++ }
    END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }'
