#!/usr/bin/env bash
# Owns the VM infrastructure's own smoke check (not a cargo test): per arch, boots run.sh with dynamically linked glibc test programs and checks /dev/video0 (vivid formats at 1280x720), --env quoting, exit codes, and that exactly the one host loopback port is reachable.
#
# Usage: tests/vm/smoke.sh [x86_64] [aarch64]     (default: both; needs tests/vm/setup.sh first)
# Builds its programs with gcc / aarch64-linux-gnu-gcc in a temporary folder outside the clone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sonoedge-vm-smoke.XXXXXX")
listener=
cleanup() { [ -n "$listener" ] && kill "$listener" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
check() { # check NAME CONDITION...
    local name=$1; shift
    if "$@"; then echo "smoke: ok   $name"; pass=$((pass + 1)); else echo "smoke: FAIL $name"; fail=$((fail + 1)); fi
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cat >"$tmp/hello.c" <<'EOF'
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    volatile double x = 2.0;
    const char *w = getenv("WEIRD");
    printf("hello: sqrt(2)=%.4f WEIRD=[%s]\n", sqrt(x), w ? w : "(unset)");
    return 0;
}
EOF
cat >"$tmp/guest.sh" <<'EOF'
# runs inside the guest (busybox sh), in /payload
r=0
./hello || r=1
[ "$WEIRD" = "a b'c \$HOME \"q\"" ] || { echo "guest: WEIRD not passed verbatim: [$WEIRD]"; r=1; }
[ "$RUST_LOG" = debug ] || { echo "guest: RUST_LOG not passed"; r=1; }
echo "guest: video0 is $(cat /sys/class/video4linux/video0/name)"
dmesg | grep -i 'vivid' | sed 's/^/guest: dmesg: /'
./v4l2probe || r=1
echo "smoke-$(uname -m)" | nc 10.0.2.100 "$VM_HOST_PORT" || { echo "guest: send to 10.0.2.100:$VM_HOST_PORT failed"; r=1; }
other=$((VM_HOST_PORT + 1))
if echo x | nc -w 3 10.0.2.100 "$other" 2>/dev/null; then echo "guest: 10.0.2.100:$other reachable"; r=1; fi
if echo x | nc -w 3 10.0.2.2 "$VM_HOST_PORT" 2>/dev/null; then echo "guest: 10.0.2.2:$VM_HOST_PORT reachable"; r=1; fi
echo "guest: result $r"
exit $r
EOF

for arch in "${arches[@]}"; do
    case $arch in x86_64) cc=gcc ;; aarch64) cc=aarch64-linux-gnu-gcc ;; *) echo "unknown arch $arch" >&2; exit 2 ;; esac
    p=$tmp/$arch
    mkdir -p "$p"
    $cc -O1 -Wall -o "$p/hello" "$tmp/hello.c" -lm
    $cc -O1 -Wall -o "$p/v4l2probe" "$HERE/v4l2probe.c"
    cp "$tmp/guest.sh" "$p/"
    check "$arch: hello is dynamically linked" sh -c "readelf -l '$p/hello' | grep -q 'program interpreter'"

    port=$(free_port)
    : >"$tmp/recv"
    timeout 120 nc -l 127.0.0.1 "$port" </dev/null >"$tmp/recv" &
    listener=$!
    sleep 0.3
    set +e
    "$HERE/run.sh" --arch "$arch" --payload "$p" --port "$port" --timeout 120 \
        --env RUST_LOG=debug --env "WEIRD=a b'c \$HOME \"q\"" -- sh ./guest.sh | tee "$tmp/out"
    rc=${PIPESTATUS[0]}
    set -e
    sleep 0.3
    kill "$listener" 2>/dev/null || true
    wait "$listener" 2>/dev/null || true
    listener=
    check "$arch: guest checks passed (exit code $rc)" [ "$rc" = 0 ]
    check "$arch: glibc hello ran" grep -q '^hello: sqrt(2)=1.4142' "$tmp/out"
    check "$arch: vivid webcam at /dev/video0, 83 formats" grep -q '^probe: 83 formats' "$tmp/out"
    check "$arch: YUYV/NV12/GREY/RGB3 at 1280x720 + a frame" grep -q '^probe: OK' "$tmp/out"
    check "$arch: host listener got the guest's line" grep -qx "smoke-$arch" "$tmp/recv"

    # exit code pass-through
    set +e
    "$HERE/run.sh" --arch "$arch" --payload "$p" --timeout 60 -- sh -c 'exit 42' >/dev/null 2>&1
    rc=$?
    set -e
    check "$arch: exit code 42 passed through" [ "$rc" = 42 ]
done

set +e
"$HERE/run.sh" --arch "${arches[0]}" --payload "$tmp/${arches[0]}" --timeout 10 -- sleep 100 >/dev/null 2>&1
rc=$?
set -e
check "${arches[0]}: timeout gives 124" [ "$rc" = 124 ]

echo "smoke: $pass passed, $fail failed"
[ "$fail" = 0 ]
