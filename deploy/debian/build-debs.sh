#!/usr/bin/env bash
# deploy/debian/build-debs.sh owns building the sonoedge .deb packages (cargo-deb, metadata in
# Cargo.toml [package.metadata.deb]). Production builds: release profile, no `demo` feature.
#
# Usage: deploy/debian/build-debs.sh [amd64|arm64|armhf|all|tools]   (default amd64)
#   amd64        `cargo deb` on this x86-64 host (glibc of the build host; Depends from dpkg-shlibdeps)
#   arm64 armhf  `cargo zigbuild` against glibc 2.31, then `cargo deb --no-build` (variant glibc231)
#   tools        only installs cargo-deb if missing (tests/run-all.sh does it early, beside other stages)
# The .debs land in $CARGO_TARGET_DIR/debian/ (default target dir: /var/cache/sonoedge/target when
# writable, as tests/run-all.sh). Needs cargo-deb 3.8.0 (installed here if missing); the ARM builds
# also need cargo-zigbuild and zig (`pip install cargo-zigbuild ziglang`) and the Debian binutils
# for their strip (binutils-aarch64-linux-gnu / binutils-arm-linux-gnueabihf).
# A cold release build takes ~15 min per architecture on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo_deb_version=3.8.0
glibc_floor=2.31

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    cache=/var/cache/sonoedge/target
    if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then export CARGO_TARGET_DIR=$cache; fi
fi
target_dir=${CARGO_TARGET_DIR:-target}
out="$target_dir/debian"
mkdir -p "$out"

timed() { # timed NAME CMD...: runs CMD, prints its wall time
    local name=$1 t0=$SECONDS; shift
    echo "=== [$name] $*"
    "$@"
    echo "=== [$name] done in $((SECONDS - t0)) s"
}

ensure_cargo_deb() {
    if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
        timed cargo-deb-install cargo install cargo-deb --locked --version "$cargo_deb_version"
    fi
}

# Every versioned glibc symbol the binary needs must exist in glibc $glibc_floor (the Depends floor).
check_glibc_floor() {
    local newest
    newest=$(readelf -V --wide "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
    if [ "$(printf '%s\n%s\n' "$newest" "$glibc_floor" | sort -V | tail -1)" != "$glibc_floor" ]; then
        echo "error: $1 needs GLIBC_$newest, newer than the package's floor $glibc_floor" >&2
        exit 1
    fi
    echo "glibc: newest symbol version needed GLIBC_$newest (floor $glibc_floor)"
}

report() { # report DEB: path, size, control fields that matter
    local deb=$1
    echo "built: $deb ($(du -k "$deb" | cut -f1) KiB; installed $(dpkg-deb --field "$deb" Installed-Size) KiB)"
    dpkg-deb --field "$deb" Package Version Architecture Depends | sed 's/^/    /'
}

build_amd64() {
    # Default features off (metadata default-features = false): no embedded demo broker.
    # CI sets SONOEDGE_DEB_PROFILE=dev: it checks the package (layout, scripts, unit), not the
    # optimiser, and reuses the test build instead of a ~15 min cold release build.
    timed deb-amd64 cargo deb --locked ${SONOEDGE_DEB_PROFILE:+--profile "$SONOEDGE_DEB_PROFILE"} --output "$out/"
    report "$(ls -t "$out"/sonoedge_*_amd64.deb | head -1)"
}

build_cross() { # build_cross DEBIAN_ARCH RUST_TARGET
    local arch=$1 target=$2
    command -v cargo-zigbuild >/dev/null || { echo "error: cargo-zigbuild missing: pip install cargo-zigbuild ziglang" >&2; exit 1; }
    # .2.31: link against glibc 2.31's symbol versions (zig ships the stubs), whatever this host has.
    timed "zigbuild-$arch" cargo zigbuild --release --locked --no-default-features --target "$target.$glibc_floor"
    check_glibc_floor "$target_dir/$target/release/sonoedge"
    # --no-build: package the binary zigbuild left in $target_dir/$target/release/; the strip used
    # is the Debian cross binutils' (/usr/bin/<triple>-strip), found by cargo-deb.
    timed "deb-$arch" cargo deb --locked --no-build --variant glibc231 --target "$target" --output "$out/"
    report "$(ls -t "$out"/sonoedge_*_"$arch".deb | head -1)"
}

ensure_cargo_deb
case "${1:-amd64}" in
    amd64) build_amd64 ;;
    arm64) build_cross arm64 aarch64-unknown-linux-gnu ;;
    armhf) build_cross armhf armv7-unknown-linux-gnueabihf ;;
    all)
        build_amd64
        build_cross arm64 aarch64-unknown-linux-gnu
        build_cross armhf armv7-unknown-linux-gnueabihf
        ;;
    tools) ;;   # cargo-deb only: ensure_cargo_deb above
    *) echo "usage: $0 [amd64|arm64|armhf|all|tools]" >&2; exit 2 ;;
esac
