#!/usr/bin/env bash
# Owns running one command in a throw-away qemu VM (stock Debian kernel, vivid at /dev/video0, one host loopback TCP port at 10.0.2.100:PORT): builds the initramfs, boots, streams the console, returns the command's exit code.
#
# Usage: tests/vm/run.sh --arch x86_64|aarch64 --payload DIR [--port PORT] [options] -- CMD [ARGS...]
#   --payload DIR     copied to /payload in the guest; CMD runs there (so ./prog works)
#   --port PORT       host 127.0.0.1:PORT is reachable from the guest as 10.0.2.100:PORT (nothing else is);
#                     the guest also gets VM_HOST_ADDR=10.0.2.100 and VM_HOST_PORT=PORT in its environment
#   --timeout S       whole-VM wall-clock limit, default 300
#   --env K=V | K     environment for CMD (K alone passes the host's value); repeatable
#   --mem MiB         guest RAM, default 2048        --smp N   guest CPUs, default 1
#   --cpu MODEL       default: max (x86_64), cortex-a72 (aarch64)
#   --vivid-opts S    vivid module options, default "n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0"
#   --verbose         kernel messages stay on the console while CMD runs
# Exit code: CMD's exit code; 124 on timeout; 125 when the VM stopped without reporting one
# (boot failure, panic, init error); 2 on a usage error; 3 when tests/vm/setup.sh has not been run.
# Needs the cache made by tests/vm/setup.sh ($SONOEDGE_VM_CACHE, default /var/cache/sonoedge/vm).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SONOEDGE_VM_CACHE:-/var/cache/sonoedge/vm}
say() { echo "[vm] $*" >&2; }
usage() { awk 'NR > 2 && !/^#/ { exit } NR > 2' "$0" >&2; exit 2; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
t_start=$(date +%s.%N)

arch='' payload='' port='' timeout_s=300 mem=2048 smp=1 cpu='' verbose=0
vivid_opts="n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0"
envs=()
while [ $# -gt 0 ]; do
    case $1 in
        --arch) arch=${2:?}; shift ;;
        --payload) payload=${2:?}; shift ;;
        --port) port=${2:?}; shift ;;
        --timeout) timeout_s=${2:?}; shift ;;
        --env) envs+=("${2:?}"); shift ;;
        --mem) mem=${2:?}; shift ;;
        --smp) smp=${2:?}; shift ;;
        --cpu) cpu=${2:?}; shift ;;
        --vivid-opts) vivid_opts=${2?}; shift ;;
        --verbose) verbose=1 ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) say "unknown argument: $1"; usage ;;
    esac
    shift
done
[ $# -gt 0 ] || { say "no command given after --"; usage; }
[ -n "$payload" ] && [ -d "$payload" ] || { say "--payload must be a directory"; usage; }
if [ -n "$port" ]; then
    [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || { say "bad --port: $port"; usage; }
fi
[[ $timeout_s =~ ^[0-9]+$ && $mem =~ ^[0-9]+$ && $smp =~ ^[0-9]+$ ]] || { say "--timeout, --mem, --smp take integers"; usage; }

case $arch in
    x86_64)
        triplet=x86_64-linux-gnu
        libsrc=(/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu)
        loader_src=/lib64/ld-linux-x86-64.so.2 loader_dst=lib64/ld-linux-x86-64.so.2
        qemu_bin=qemu-system-x86_64 console=ttyS0 cpu=${cpu:-max}
        ;;
    aarch64)
        triplet=aarch64-linux-gnu
        libsrc=(/usr/aarch64-linux-gnu/lib /usr/lib/aarch64-linux-gnu)
        loader_src=/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 loader_dst=lib/ld-linux-aarch64.so.1
        qemu_bin=qemu-system-aarch64 console=ttyAMA0 cpu=${cpu:-cortex-a72}
        ;;
    *) say "--arch must be x86_64 or aarch64"; usage ;;
esac

adir=$CACHE/$arch
if [ ! -f "$adir/ready" ] || ! command -v "$qemu_bin" >/dev/null; then
    say "no VM cache for $arch in $adir or no $qemu_bin: run tests/vm/setup.sh (as root) first"
    exit 3
fi
kver=$(cat "$adir/kver")
modroot=$adir/root

work=$(mktemp -d "${TMPDIR:-/tmp}/sonoedge-vm.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# ------------------------------------------------------------------ libraries
find_lib() { # find_lib NAME: prints the host path of the arch's library NAME
    local d
    for d in "${libsrc[@]}"; do
        [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}
base_libs=()
for l in libc.so.6 libm.so.6 libgcc_s.so.1 libdl.so.2 libpthread.so.0 librt.so.1 libutil.so.1; do
    p=$(find_lib "$l") && base_libs+=("$p")
done
[ -e "$loader_src" ] || { say "no dynamic loader $loader_src on the host"; exit 3; }

# ------------------------------------------------------------------ base initramfs (cached)
modules=(vivid virtio_net virtio_pci virtio_rng)
[ "$arch" = aarch64 ] && modules+=(virtio_mmio)
load_list=$(for m in "${modules[@]}"; do modprobe -d "$modroot" -S "$kver" --show-depends "$m"; done |
    awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
key=$( {
    echo "$kver"; echo "$load_list"; cat "$HERE/init.sh" "$adir/busybox" "$loader_src" "${base_libs[@]}"
} | sha256sum | cut -c1-16)
base=$adir/initramfs-base-$key.cpio.gz
t0=$(date +%s.%N)
if [ -f "$base" ]; then
    base_note="cached"
else
    s=$work/base
    mkdir -p "$s"/{bin,dev,etc/vm,lib/modules,"lib/$triplet",proc,sys,tmp,root,payload}
    install -m 755 "$HERE/init.sh" "$s/init"
    install -m 755 "$adir/busybox" "$s/bin/busybox"
    mknod -m 600 "$s/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$s/dev/null" c 1 3 2>/dev/null || true
    while read -r ko; do
        [ -n "$ko" ] || continue
        cp "$ko" "$s/lib/modules/"
        basename "$ko" >>"$s/lib/modules/load.list"
    done <<<"$load_list"
    mkdir -p "$s/$(dirname "$loader_dst")"
    cp -L "$loader_src" "$s/$loader_dst"
    for l in "${base_libs[@]}"; do cp -L "$l" "$s/lib/$triplet/"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$s/etc/passwd"
    printf 'root:x:0:\n' >"$s/etc/group"
    printf '127.0.0.1\tlocalhost\n10.0.2.15\tsonoedge-vm\n10.0.2.100\tvmhost\n' >"$s/etc/hosts"
    (cd "$s" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$work/base.gz"
    # The per-run segment is appended uncompressed; the kernel wants it 4-byte aligned (pad to 512).
    sz=$(stat -c %s "$work/base.gz")
    head -c $(((512 - sz % 512) % 512)) /dev/zero >>"$work/base.gz"
    mv "$work/base.gz" "$base.$$" && mv "$base.$$" "$base"
    rm -rf "$s"
    find "$adir" -maxdepth 1 -name 'initramfs-base-*.cpio.gz' ! -name "${base##*/}" -mmin +60 -delete 2>/dev/null || true
    base_note="built"
fi
t_base=$(elapsed "$t0")

# ------------------------------------------------------------------ per-run segment (uncompressed)
t0=$(date +%s.%N)
r=$work/run
mkdir -p "$r/etc/vm" "$r/lib/$triplet"
mkdir -p "$r/payload"
# Hard links where possible (same file system): no data copy for big binaries and models.
cp -al "$payload/." "$r/payload/" 2>/dev/null || { rm -rf "$r/payload" && mkdir "$r/payload" && cp -a "$payload/." "$r/payload/"; }

# Libraries that ELF files in the payload need beyond the base set (closure, arch lib dirs only).
declare -A have=()
for l in "${base_libs[@]}" "$loader_src"; do have[${l##*/}]=1; done
queue=()
while IFS= read -r -d '' f; do
    [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] && queue+=("$f")
done < <(find "$r/payload" -type f -size +0 -print0)
missing=()
while [ ${#queue[@]} -gt 0 ]; do
    f=${queue[0]}; queue=("${queue[@]:1}")
    while read -r n; do
        [ -n "$n" ] && [ -z "${have[$n]:-}" ] || continue
        have[$n]=1
        if p=$(find_lib "$n"); then
            cp -L "$p" "$r/lib/$triplet/"
            queue+=("$p")
        elif ! find "$r/payload" -name "$n" | grep -q .; then
            missing+=("$n")
        fi
    done < <(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done
[ ${#missing[@]} -eq 0 ] || say "warning: libraries not found for $arch: ${missing[*]}"

sq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
    echo "VM_VIVID_OPTS=$(sq "$vivid_opts")"
    echo "VM_QUIET=$((1 - verbose))"
    echo "VM_EPOCH=$(date +%s)"
} >"$r/etc/vm/run.conf"
{
    echo "export HOME=/root VM_HOST_ADDR=10.0.2.100 VM_HOST_PORT=$(sq "$port")"
    for e in "${envs[@]}"; do
        k=${e%%=*}
        [[ $k =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { say "bad --env: $e"; exit 2; }
        if [[ $e == *=* ]]; then v=${e#*=}; elif [ -n "${!k+x}" ]; then v=${!k}; else continue; fi
        echo "export $k=$(sq "$v")"
    done
    printf 'exec'
    for a in "$@"; do printf ' %s' "$(sq "$a")"; done
    echo
} >"$r/etc/vm/run.sh"
(cd "$r" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$work/run.cpio"
cat "$base" "$work/run.cpio" >"$work/initrd"
t_run=$(elapsed "$t0")
say "$arch: initramfs base ${base_note} in ${t_base}s, run segment $(($(stat -c %s "$work/run.cpio") / 1024)) KiB in ${t_run}s"
rm -rf "$r" "$work/run.cpio"

# ------------------------------------------------------------------ boot
netdev="user,id=n0,restrict=on"
[ -n "$port" ] && netdev+=",guestfwd=tcp:10.0.2.100:$port-cmd:nc -N 127.0.0.1 $port"
kernel=$adir/vmlinuz
[ -f "$adir/vmlinux" ] && kernel=$adir/vmlinux # x86_64: PVH entry, no in-guest decompression
append="console=$console panic=-1 rdinit=/init"
[ "$verbose" = 1 ] || append+=" quiet"
# shellcheck disable=SC2054 # commas are qemu's
qemu=("$qemu_bin" -accel tcg -cpu "$cpu" -m "$mem" -smp "$smp"
    -nodefaults -no-user-config -display none -no-reboot
    -chardev stdio,id=con,signal=off -serial chardev:con
    -kernel "$kernel" -initrd "$work/initrd" -append "$append"
    -netdev "$netdev")
# shellcheck disable=SC2054
case $arch in
    x86_64)
        qemu+=(-M pc -device virtio-net-pci,netdev=n0 -device virtio-rng-pci) ;;
    aarch64) qemu+=(-M virt -device virtio-net-device,netdev=n0 -device virtio-rng-device) ;;
esac
log=$work/console.log
say "$arch: booting $kver (tcg, cpu $cpu, ${mem} MiB, smp $smp, timeout ${timeout_s}s${port:+, host port $port})"
t_boot=$(date +%s.%N)
set +e
timeout -k 5 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log"
st=("${PIPESTATUS[@]}")
set -e
wall=$(elapsed "$t_boot")
ready=$(sed -n 's/^VM-READY uptime=\([0-9.]*\)s.*/\1/p' "$log" | head -1)
code=$(sed -n 's/^VM-EXIT-CODE=\([0-9]*\)$/\1/p' "$log" | tail -1)
if [ "${st[0]}" = 124 ] || [ "${st[0]}" = 137 ]; then
    say "$arch: TIMEOUT after ${timeout_s}s (command ${ready:+started at guest uptime ${ready}s}${ready:-never started}); VM killed"
    exit 124
fi
init_err=$(sed -n 's/^VM-INIT-ERROR: //p' "$log" | head -1)
if [ -n "$init_err" ]; then
    say "$arch: guest init failed before the command: $init_err (wall ${wall}s)"
    exit 125
fi
if [ -z "$code" ]; then
    say "$arch: VM stopped without VM-EXIT-CODE (qemu status ${st[0]}; boot failure or panic), wall ${wall}s"
    exit 125
fi
say "$arch: command exit code $code; command started at guest uptime ${ready:-?}s; VM wall ${wall}s; total $(elapsed "$t_start")s"
exit "$code"
