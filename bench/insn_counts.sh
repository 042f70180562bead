#!/usr/bin/env bash
# bench/insn_counts.sh owns the ARM instruction counts in docs/speed.md ("Instruction counts on ARM"):
# exact guest instructions per inference under qemu-user, per format and CPU, with a per-function split.
#
# Not a timing and not part of CI (tests/run-all.sh, .ci/run never call it). It runs as root on a
# Debian machine, everything CPU-heavy under `nice -n 19`.
#
#   bench/insn_counts.sh setup                  # apt packages, qemu's source, the two TCG plugins
#   bench/insn_counts.sh build                  # sonoedge release for aarch64 and armv7 (cargo-zigbuild)
#   bench/insn_counts.sh count NAME=DIR ...     # e.g. fp32=$M/fp32 int8=$M/int8
#   bench/insn_counts.sh all NAME=DIR ...       # the three in a row
#
# How a figure is obtained: `sonoedge bench --model DIR --threads 1 --warmup 0 --runs 2` runs under
# qemu-user with the plugin bench/insn_split.c (libinsn_split.so), which counts every executed guest
# instruction and records the count at each CLOCK_MONOTONIC clock_gettime syscall (qemu-user 7.2
# gives the guest no vDSO, so every `Instant::now()` is one). bench takes three such readings per
# run: before preprocessing, after it, after the inference. So the count of one inference is exact
# and from one process: loading, optimizing and the load-time check (two inferences of its own) are
# outside the counted interval, and so is the preprocessing of bench's 1280x720 noise frame
# (reported beside it). The counted run is bench's second; its first is printed too (they agree to
# about a thousand instructions: allocation addresses move memcpy's path a little). The plugin
# also charges each executed block to its function (the binary's symbol table), per interval.
# CPUs: aarch64 as cortex-a72 (no dotprod: tract picks its plain NEON int8 kernels) and cortex-a76
# (dotprod, from the auxiliary vector), armv7 as cortex-a7 (NEON + VFPv4). Under qemu-user
# /proc/cpuinfo is the host's, so tract's CPU-part detection finds nothing and takes its "Generic"
# arm64 kernels: right for A72/A76 (tract has special kernels only for A53/A55).
#
# The plugins: Debian ships none in qemu-user, so qemu's source package of the SAME version as the
# installed qemu-user is downloaded with `apt-get source --download-only` (deb-src enabled in
# /etc/apt/sources.list.d/insn-counts-debsrc.sources), and only tests/plugin/insn.c (qemu's libinsn)
# and include/qemu/qemu-plugin.h are taken from it. libinsn.so is qemu's own counter (the setup's
# cross-check); libinsn_split.so (bench/insn_split.c) counts the same way (one inline add per
# instruction) and adds the marks and the per-function split.
#
# The binaries are release builds with the symbol table kept (`cargo rustc ... -- -C strip=none`:
# the release profile's strip = "debuginfo" becomes a full strip with zig as the linker, and qemu
# needs the symbols for the split; the code is the same, compare `readelf -S` .text sizes).
#
# Environment: WORK (default /var/cache/sonoedge/insn-counts: qemu source, plugins, raw counts),
# CARGO_TARGET_DIR (default /var/cache/sonoedge/target-insn), RUNS (2), PARALLEL (1: processes at
# once), CPUS (default "aarch64:cortex-a72 aarch64:cortex-a76 armv7:cortex-a7").
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/var/cache/sonoedge/insn-counts}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/sonoedge/target-insn}
RUNS=${RUNS:-2}
PARALLEL=${PARALLEL:-1}
CPUS=${CPUS:-"aarch64:cortex-a72 aarch64:cortex-a76 armv7:cortex-a7"}
ZIGLANG_VERSION=0.17.1 # as tests/run-all.sh
ZIGBUILD_VERSION=0.24.1
GLIBC=2.31
N="nice -n 19"

triple() { case $1 in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
mark_for() { case $1 in aarch64) echo 113 ;; armv7) echo 403 ;; esac; } # clock_gettime(64)
qemu_for() { case $1 in aarch64) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;; armv7) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;; esac; }

setup() {
    local need=()
    command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
    [ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-arm64-cross)
    [ -e /usr/arm-linux-gnueabihf/lib/libc.so.6 ] || need+=(libc6-armhf-cross)
    pkg-config --exists glib-2.0 2>/dev/null || need+=(libglib2.0-dev)
    command -v dpkg-source >/dev/null || need+=(dpkg-dev)
    command -v c++filt >/dev/null || need+=(binutils)
    [ -x /usr/bin/time ] || need+=(time)
    if [ ${#need[@]} -gt 0 ]; then $N apt-get install -y "${need[@]}"; fi

    # qemu's source package, the version of the installed qemu-user (its source version: a binNMU
    # suffix such as +b3 does not exist as source).
    local ver src
    ver=$(dpkg-query -W -f='${source:Version}' qemu-user)
    src=$WORK/qemu-src
    if ! ls "$src"/qemu_*.orig.tar.* >/dev/null 2>&1; then
        local list=/etc/apt/sources.list.d/insn-counts-debsrc.sources
        if ! grep -qx "Version: $ver" <<<"$(apt-cache showsrc qemu 2>/dev/null)"; then
            sed -n 's/^Types: deb$/Types: deb-src/; /^Types:\|^URIs:\|^Suites:\|^Components:\|^Signed-By:\|^$/p' \
                /etc/apt/sources.list.d/debian.sources >"$list"
            $N apt-get update -q
        fi
        mkdir -p "$src"
        (cd "$src" && $N apt-get source --download-only "qemu=$ver")
    fi
    local tarball top
    tarball=$(ls "$src"/qemu_*.orig.tar.*)
    top=$(tar -tf "$tarball" | head -1 | cut -d/ -f1 || true) # (tar ends on SIGPIPE)
    # The Debian patches (debian.tar.xz) do not touch tests/plugin/ or the plugin header (checked for
    # 1:7.2+dfsg-7+deb12u18); re-check: nothing below may print.
    tar -tf "$src"/qemu_*.debian.tar.* | grep -i plugin || true
    (cd "$src" && $N tar -xf "$tarball" "$top/tests/plugin/insn.c" "$top/include/qemu/qemu-plugin.h" "$top/VERSION")
    local inc=$src/$top/include/qemu cflags libs
    cflags=$(pkg-config --cflags glib-2.0)
    libs=$(pkg-config --libs glib-2.0)
    mkdir -p "$WORK/plugins"
    # shellcheck disable=SC2086
    $N gcc -O2 -Wall -shared -fPIC -I "$inc" $cflags -o "$WORK/plugins/libinsn.so" "$src/$top/tests/plugin/insn.c" $libs
    # shellcheck disable=SC2086
    $N gcc -O2 -Wall -shared -fPIC -I "$inc" $cflags -o "$WORK/plugins/libinsn_split.so" bench/insn_split.c $libs
    echo "qemu-user $(dpkg-query -W -f='${Version}' qemu-user), plugin API from qemu $(cat "$src/$top/VERSION") ($ver)"

    # Self-check on a trivial program: 10^6 more loop iterations must cost a fixed number of
    # instructions more, and both plugins must agree.
    command -v cargo-zigbuild >/dev/null && python3 -m ziglang version >/dev/null 2>&1 ||
        $N python3 -m pip install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
    local t=$WORK/plugins/loop
    printf '%s\n' '#include <stdio.h>' \
        'int main(int argc, char **argv) { volatile long s = 0; long n = argc > 1 ? 1000000 : 0;' \
        '  for (long i = 0; i < n; i++) s += i; printf("%ld\n", (long)s); return 0; }' >"$t.c"
    $N python3 -m ziglang cc -O1 -target "aarch64-linux-gnu.$GLIBC" "$t.c" -o "$t-aarch64"
    local a b
    a=$($N qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin "$WORK/plugins/libinsn.so,inline=on" -d plugin "$t-aarch64" 2>&1 >/dev/null | sed -n 's/^insns: //p')
    b=$($N qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin "$WORK/plugins/libinsn.so,inline=on" -d plugin "$t-aarch64" x 2>&1 >/dev/null | sed -n 's/^insns: //p')
    $N qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin "$WORK/plugins/libinsn_split.so,out=$t.split" "$t-aarch64" x >/dev/null
    echo "self-check: libinsn $a insns without the loop, $b with 10^6 iterations ($(( (b - a) )) more);" \
        "libinsn_split total $(sed -n 's/^total\t//p' "$t.split"), per-function sum $(sed -n 's/^tbsum\t//p' "$t.split")"
}

build() {
    command -v cargo-zigbuild >/dev/null && python3 -m ziglang version >/dev/null 2>&1 ||
        $N python3 -m pip install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
    rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null
    local arch
    for arch in aarch64 armv7; do
        $N cargo-zigbuild rustc --release --locked --target "$(triple $arch).$GLIBC" --bin sonoedge -- -C strip=none
    done
}

count() {
    [ $# -gt 0 ] || { echo "count: give NAME=MODEL_DIR arguments (e.g. fp32=DIR int8=DIR)" >&2; exit 2; }
    local raw=$WORK/raw
    mkdir -p "$raw"
    local spec name dir cpu arch bin out running=0
    for spec in "$@"; do
        name=${spec%%=*}
        dir=${spec#*=}
        for cpu in $CPUS; do
            arch=${cpu%%:*}
            cpu=${cpu#*:}
            bin=$CARGO_TARGET_DIR/$(triple "$arch")/release/sonoedge
            out=$raw/$name.$cpu
            echo "== $name $cpu: $out.*"
            # shellcheck disable=SC2046
            /usr/bin/time -o "$out.time" -f "%e s wall, %M kB max RSS under qemu" $N $(qemu_for "$arch") -cpu "$cpu" \
                -plugin "$WORK/plugins/libinsn_split.so,out=$out.split,mark=$(mark_for "$arch")" -d plugin -D "$out.qemu.log" \
                "$bin" bench --model "$dir" --threads 1 --warmup 0 --runs "$RUNS" >"$out.json" 2>"$out.err" &
            running=$((running + 1))
            if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
        done
    done
    wait
    python3 bench/insn_split.py --raw "$raw" --runs "$RUNS"
}

case ${1:-} in
    setup) setup ;;
    build) build ;;
    count) shift; count "$@" ;;
    all) shift; setup; build; count "$@" ;;
    *) sed -n '2,30p' "$0"; exit 2 ;;
esac
