#!/usr/bin/env bash
# Owns the host side of the VM tests: installs qemu-system (x86 + arm), busybox-static, netcat-openbsd, cpio, kmod, and fetches/caches the Debian kernels, their module trees and the arm64 busybox.
#
# Usage: tests/vm/setup.sh [--refresh] [--arch x86_64|aarch64|all]
#   Idempotent; runs as root (apt-get). A complete cache is reused without touching the network;
#   --refresh re-resolves the kernel that linux-image-<arch> points to now and fetches it if it changed.
# Cache: $SONOEDGE_VM_CACHE (default /var/cache/sonoedge/vm)/<arch>/, outside any clone.
set -euo pipefail

CACHE=${SONOEDGE_VM_CACHE:-/var/cache/sonoedge/vm}
refresh=0
arches=(x86_64 aarch64)
while [ $# -gt 0 ]; do
    case $1 in
        --refresh) refresh=1 ;;
        --arch) shift; case ${1:-} in all) arches=(x86_64 aarch64) ;; x86_64|aarch64) arches=("$1") ;; *) echo "setup.sh: --arch x86_64|aarch64|all" >&2; exit 2 ;; esac ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

t_start=$(date +%s.%N)
say() { echo "[vm-setup] $*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- host packages
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
apt_updated=0
apt_update() { [ "$apt_updated" = 1 ] || { say "apt-get update"; apt-get update -qq; apt_updated=1; }; }
need_root() { [ "$(id -u)" = 0 ] || { echo "setup.sh: must run as root to $1" >&2; exit 1; }; }

plain=()
have_pkg busybox-static || plain+=(busybox-static)
have_pkg netcat-openbsd || plain+=(netcat-openbsd)
have_pkg cpio || plain+=(cpio)
have_pkg kmod || plain+=(kmod)
command -v readelf >/dev/null || plain+=(binutils)
if [ ${#plain[@]} -gt 0 ]; then
    need_root "install ${plain[*]}"
    apt_update
    say "apt-get install ${plain[*]}"
    apt-get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
fi

if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-system-aarch64 >/dev/null; then
    need_root "install qemu-system"
    apt_update
    qemu=(qemu-system-x86 qemu-system-arm qemu-system-common qemu-system-data seabios)
    # This machine kind carries qemu-utils from <codename>-backports (10.x), and the stable
    # qemu-system-common (7.2) is broken by it. Then take the whole qemu-system set from the same
    # backports suite (only those packages: qemu-user and the rest stay as they are).
    qu=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    cand=$(apt-cache policy qemu-system-common | awk '/Candidate:/ { print $2 }')
    if [ -n "$qu" ] && [ -n "$cand" ] && [ "$cand" != "(none)" ] && dpkg --compare-versions "$qu" gt "$cand"; then
        codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
        bpo=$codename-backports
        if ! grep -rqs -- "$bpo" /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then
            f=/etc/apt/sources.list.d/sonoedge-$bpo.sources
            say "adding Debian's $bpo suite ($f) to match qemu-utils $qu"
            printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$bpo" >"$f"
            apt_updated=0
            apt_update
        fi
        qemu=("${qemu[@]/%//$bpo}")
    fi
    say "apt-get install --no-install-recommends ${qemu[*]}"
    apt-get install -y -qq --no-install-recommends "${qemu[@]}" >/dev/null
fi
say "qemu: $(qemu-system-x86_64 --version | head -1)"

# ---------------------------------------------------------------- kernels
# A private apt state per Debian architecture (host sources, own lists), so that the host's dpkg
# architectures and apt lists are left untouched.
apt_for() { # apt_for DEBARCH: prints the APT_CONFIG file for that architecture, lists updated
    local debarch=$1 root=$CACHE/apt-$1
    mkdir -p "$root/lists/partial" "$root/cache/archives/partial"
    : >"$root/status"
    cat >"$root/apt.conf" <<EOF
APT::Architecture "$debarch";
APT::Architectures { "$debarch"; };
APT::Sandbox::User "root";
Dir::State::Lists "$root/lists";
Dir::State::status "$root/status";
Dir::Cache "$root/cache";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
EOF
    APT_CONFIG=$root/apt.conf apt-get update -qq >&2
    echo "$root/apt.conf"
}

extract_vmlinux() { # extract_vmlinux BZIMAGE OUT: the uncompressed ELF kernel, if it carries a PVH note
    local img=$1 out=$2 magic tool off
    for magic in $'\xfd7zXZ\x00':'xz -dc' $'\x28\xb5\x2f\xfd':'zstd -dc' $'\x1f\x8b\x08':'gzip -dc'; do
        tool=${magic#*:}; magic=${magic%%:*}
        command -v "${tool%% *}" >/dev/null || continue
        for off in $(LC_ALL=C grep -abo "$magic" "$img" 2>/dev/null | cut -d: -f1 | head -5); do
            tail -c +$((off + 1)) "$img" | $tool >"$out" 2>/dev/null || true
            if [ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" = '177ELF' ] && readelf -n "$out" 2>/dev/null | grep -q 'Unknown note type: (0x00000012)'; then
                return 0
            fi
        done
    done
    rm -f "$out"
    return 1
}

fetch_arch() { # fetch_arch ARCH
    local arch=$1 debarch dir t0 conf meta cand img ver kver tmp
    case $arch in x86_64) debarch=amd64 ;; aarch64) debarch=arm64 ;; esac
    dir=$CACHE/$arch
    t0=$(date +%s.%N)
    if [ -f "$dir/ready" ] && [ "$refresh" = 0 ]; then
        say "$arch: cached kernel $(cat "$dir/kver") in $dir (reused)"
        return
    fi
    need_root "write $CACHE"
    mkdir -p "$CACHE"
    say "$arch: resolving linux-image-$debarch"
    conf=$(apt_for "$debarch")
    export APT_CONFIG=$conf
    meta=linux-image-$debarch
    cand=$(apt-cache policy "$meta" | awk '/Candidate:/ { print $2 }')
    img=$(apt-cache show "$meta=$cand" | awk -F': ' '/^Depends:/ { print $2; exit }' | sed 's/[ ,(].*//')
    ver=$(apt-cache policy "$img" | awk '/Candidate:/ { print $2 }')
    kver=${img#linux-image-}
    if [ -f "$dir/ready" ] && [ "$(cat "$dir/kver")" = "$kver" ] && grep -qx "$img=$ver" "$dir/packages"; then
        say "$arch: $meta $cand -> $img $ver, already cached"
        unset APT_CONFIG
        return
    fi
    tmp=$CACHE/.$arch.new.$$
    rm -rf "$tmp"
    mkdir -p "$tmp/debs"
    say "$arch: apt-get download $img=$ver"
    (cd "$tmp/debs" && apt-get download -qq "$img=$ver")
    dpkg-deb -x "$tmp/debs/"linux-image-*.deb "$tmp/root"
    echo "$img=$ver" >"$tmp/packages"
    if [ "$arch" = aarch64 ]; then
        local bver
        bver=$(apt-cache policy busybox-static | awk '/Candidate:/ { print $2 }')
        say "$arch: apt-get download busybox-static=$bver"
        (cd "$tmp/debs" && apt-get download -qq "busybox-static=$bver")
        mkdir -p "$tmp/bb"
        dpkg-deb -x "$tmp/debs/"busybox-static_*.deb "$tmp/bb"
        cp "$tmp/bb/bin/busybox" "$tmp/busybox"
        echo "busybox-static:$debarch=$bver" >>"$tmp/packages"
        rm -rf "$tmp/bb"
    else
        cp /bin/busybox "$tmp/busybox"
        echo "busybox-static:amd64=$(dpkg-query -W -f='${Version}' busybox-static) (host)" >>"$tmp/packages"
    fi
    unset APT_CONFIG
    rm -rf "$tmp/debs"
    # Only the module tree and the kernel are kept; docs and the rest of the package are dropped.
    rm -rf "$tmp/root/usr"
    depmod -b "$tmp/root" "$kver"
    ln -s "root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
    if [ "$arch" = x86_64 ]; then
        # The ELF vmlinux inside the bzImage boots through qemu's PVH entry: that skips the
        # in-guest xz decompression, about 3 s under TCG. run.sh falls back to vmlinuz without it.
        extract_vmlinux "$tmp/vmlinuz" "$tmp/vmlinux" || say "$arch: no vmlinux extracted (boots the bzImage)"
    fi
    echo "$kver" >"$tmp/kver"
    touch "$tmp/ready"
    rm -rf "$dir.old"
    [ -e "$dir" ] && mv "$dir" "$dir.old"
    mv "$tmp" "$dir"
    rm -rf "$dir.old"
    say "$arch: cached $kver ($(du -sh "$dir" | cut -f1)) in $dir in $(elapsed "$t0") s"
}

for a in "${arches[@]}"; do fetch_arch "$a"; done
say "done in $(elapsed "$t_start") s"
