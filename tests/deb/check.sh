#!/usr/bin/env bash
# tests/deb/check.sh owns the check of one sonoedge .deb: contents and control fields, install,
# upgrade, remove and purge in a throwaway Debian root (the real maintainer scripts run there,
# never on this host), and the installed unit's `systemd-analyze verify` and security score.
#
# Usage (as root): tests/deb/check.sh [PATH.deb]
#   Without PATH (CI, tests/run-all.sh): builds the amd64 package with deploy/debian/build-debs.sh
#   first (release, ~15 min cold; cargo-deb installed if missing) and checks that.
# The minimal Debian root (debootstrap --variant=minbase, ~75 s, ~240 MB) is cached outside the
# clone in $SONOEDGE_DEB_ROOT_CACHE (default /var/cache/sonoedge/deb-root) and reused; each run
# works on a copy that it deletes. A .deb for another architecture gets the contents stage only.
# Env: SONOEDGE_MAX_EXPOSURE (default 2.0), SONOEDGE_DEB_MIRROR (default deb.debian.org).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
max_exposure=${SONOEDGE_MAX_EXPOSURE:-2.0}
cache=${SONOEDGE_DEB_ROOT_CACHE:-/var/cache/sonoedge/deb-root}
mirror=${SONOEDGE_DEB_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
unit=usr/lib/systemd/system/sonoedge.service
conffile=/etc/sonoedge/sonoedge.toml
models=/var/lib/sonoedge/models

started=$SECONDS
stage_t0=$SECONDS
stage() { echo "=== [deb] $1"; stage_t0=$SECONDS; }
stage_done() { echo "=== [deb] $1 done in $((SECONDS - stage_t0)) s (total $((SECONDS - started)) s)"; }
fail() { echo "deb check: FAILED: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }
expect_eq() { # expect_eq WHAT ACTUAL EXPECTED
    [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
    ok "$1 = $3"
}

[ "$(id -u)" = 0 ] || { echo "deb check: needs root (chroot, file owners)" >&2; exit 2; }
if [ $# -eq 0 ]; then
    # The target dir rule of tests/run-all.sh and build-debs.sh, fixed here so both agree.
    if [ -z "${CARGO_TARGET_DIR:-}" ] && mkdir -p /var/cache/sonoedge/target 2>/dev/null; then
        export CARGO_TARGET_DIR=/var/cache/sonoedge/target
    fi
    t0=$SECONDS
    bash "$repo/deploy/debian/build-debs.sh" amd64
    echo "=== [deb] package built in $((SECONDS - t0)) s"
    started=$SECONDS
    set -- "$(ls -t "${CARGO_TARGET_DIR:-$repo/target}"/debian/sonoedge_*_amd64.deb | head -1)"
fi
if [ $# -ne 1 ] || [ ! -f "$1" ]; then echo "usage: $0 [PATH.deb]" >&2; exit 2; fi
deb=$(realpath "$1")
echo "deb check: $deb ($(du -k "$deb" | cut -f1) KiB)"

work=$(mktemp -d /tmp/sonoedge-deb-check.XXXXXX)
root=""
cleanup() {
    # --one-file-system: never follow into anything mounted inside the throwaway root.
    [ -z "$root" ] || rm -rf --one-file-system "$root"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # through the EXIT trap: no throwaway root left behind

# ---------------------------------------------------------------------------------------------
stage "1/4 contents and control fields"
field() { dpkg-deb --field "$deb" "$1"; }
expect_eq Package "$(field Package)" sonoedge
cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
case "$(field Version)" in
    "$cargo_version"-*|"$cargo_version") ok "Version $(field Version) (Cargo.toml $cargo_version)" ;;
    *) fail "Version $(field Version) does not start with Cargo.toml's $cargo_version" ;;
esac
arch=$(field Architecture)
dpkg-deb -x "$deb" "$work/data"
dpkg-deb -e "$deb" "$work/control"
# ELF e_machine (bytes 18-19, little endian) must match the control field.
machine=$(od -An -tx1 -j18 -N2 "$work/data/usr/bin/sonoedge" | tr -d ' \n')
case "$arch:$machine" in
    amd64:3e00|arm64:b700|armhf:2800) ok "Architecture $arch matches the binary (e_machine $machine)" ;;
    *) fail "Architecture $arch does not match the binary's ELF machine $machine" ;;
esac
depends=$(field Depends)
echo "  Depends: $depends"
echo "$depends" | grep -Eq '(^|, )libc6 \(>= 2\.[0-9]+\)' || fail "Depends lacks a versioned libc6: $depends"
echo "$depends" | grep -Eq '(^|, )adduser($|,)' || fail "Depends lacks adduser (postinst uses it): $depends"
for dep in $(echo "$depends" | tr ',' '\n' | sed 's/(.*)//; s/ //g'); do
    case "$dep" in
        libc6|adduser|libgcc-s1) ;;
        *) fail "unexpected dependency '$dep' (a cross toolchain or build-host package?): $depends" ;;
    esac
done
ok "Depends: only libc6, adduser (libgcc-s1 allowed)"
for f in Maintainer Description Installed-Size Section Priority; do
    [ -n "$(field "$f")" ] || fail "control field $f is empty"
done
ok "Maintainer, Description, Installed-Size, Section, Priority set"

# Owners as numbers (cargo-deb writes 0/0, dpkg-deb -b root/root).
dpkg-deb --contents "$deb" | awk '{ sub(/^root\/root$/, "0/0", $2); print $1, $2, $6 }' > "$work/contents"
expect_path() { # expect_path MODE OWNER PATH
    grep -qxF -- "$1 $2 ./$3" "$work/contents" || fail "missing or wrong: $1 $2 /$3 (got: $(grep -F "./$3" "$work/contents" || echo nothing))"
    ok "$1 $2 /$3"
}
expect_path -rwxr-xr-x 0/0 usr/bin/sonoedge
expect_path -rw-r--r-- 0/0 "$unit"
expect_path -rw-r--r-- 0/0 etc/sonoedge/sonoedge.toml
expect_path -rw-r--r-- 0/0 usr/share/doc/sonoedge/copyright
expect_path -rw-r--r-- 0/0 usr/share/doc/sonoedge/README.Debian
expect_path -rw-r--r-- 0/0 usr/share/doc/sonoedge/README.md
expect_path -rw-r--r-- 0/0 usr/share/doc/sonoedge/examples/99-sonoedge-grabber.rules
! grep -Eq '\./(etc|usr/lib|lib)/udev/' "$work/contents" || fail "a udev rule would be active; it must stay an example"
ok "no active udev rule"
! grep -q '\./var/' "$work/contents" || fail "/var content in the package; postinst makes the state folders"
cmp -s "$work/data/$unit" "$repo/deploy/sonoedge.service" || fail "packaged unit differs from deploy/sonoedge.service"
cmp -s "$work/data$conffile" "$repo/deploy/sonoedge.toml" || fail "packaged config differs from deploy/sonoedge.toml"
ok "unit and config are the repo's deploy/ files, unchanged"
grep -q "path = \"$models/" "$work/data$conffile" || fail "the default config's model path is not under $models/"
ok "default [model] path is under $models/"
expect_eq conffiles "$(cat "$work/control/conffiles")" "$conffile"
for s in preinst postinst prerm postrm; do
    [ -f "$work/control/$s" ] || continue
    sh -n "$work/control/$s" || fail "$s: shell syntax error"
    ! grep -q '#DEBHELPER#' "$work/control/$s" || fail "$s: #DEBHELPER# was not replaced"
done
# Once: cargo-deb replaces every occurrence of the debhelper token, comments included.
expect_eq "daemon-reload lines in postinst" "$(grep -c 'systemctl --system daemon-reload' "$work/control/postinst")" 1
! grep -q 'deb-systemd-invoke start' "$work/control/postinst" || fail "postinst starts the service"
ok "maintainer scripts parse; postinst reloads systemd and never starts the service"
stage_done "1/4"

host_arch=$(dpkg --print-architecture)
if [ "$arch" != "$host_arch" ]; then
    echo "deb check: OK (contents only: an $arch package cannot be installed on this $host_arch host)"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
stage "2/4 install into a throwaway $suite root"
# The cache key is what debootstrap was asked for: a different request builds a new root.
# systemd: the root's own systemctl and systemd-analyze (Debian 12's, as on the devices);
# adduser: what the package depends on.
# shellcheck disable=SC2054 # the commas belong to --include
bootstrap_args=(--variant=minbase --include=systemd,adduser "$suite")
base="$cache/$suite-$host_arch"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # two checks at once: one builds the root, the other waits for it
# Copies left by a run that was killed outright (SIGKILL skips the trap).
find "$cache" -maxdepth 1 -name 'run.*' -mmin +180 -exec rm -rf --one-file-system {} +
if [ "$(cat "$base/.sonoedge-root" 2>/dev/null)" != "${bootstrap_args[*]} $mirror" ]; then
    command -v debootstrap >/dev/null || {
        echo "  installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    t0=$SECONDS
    rm -rf --one-file-system "$base" "$base.new"
    echo "  debootstrap ${bootstrap_args[*]} $base $mirror"
    debootstrap "${bootstrap_args[@]}" "$base.new" "$mirror" > "$cache/debootstrap.log" 2>&1 \
        || { tail -20 "$cache/debootstrap.log" >&2; fail "debootstrap failed (log: $cache/debootstrap.log)"; }
    chroot "$base.new" apt-get clean
    echo "${bootstrap_args[*]} $mirror" > "$base.new/.sonoedge-root"
    mv "$base.new" "$base"
    echo "  root built in $((SECONDS - t0)) s"
else
    echo "  cached root: $base"
fi
t0=$SECONDS
root=$(mktemp -d "$cache/run.XXXXXX")
cp -a "$base/." "$root/"
chmod 755 "$root"
flock -u 9
echo "  copied to $root in $((SECONDS - t0)) s"
cp "$deb" "$root/tmp/sonoedge.deb"

in_root() { chroot "$root" "$@"; }
in_root dpkg -i /tmp/sonoedge.deb > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i failed"; }
echo "  dpkg -i output:"
sed 's/^/    | /' "$work/install.log"
expect_eq "package state" "$(in_root dpkg-query -W -f='${Status}' sonoedge)" "install ok installed"
enabled=$(in_root systemctl is-enabled sonoedge.service 2>&1 || true)
expect_eq "systemctl is-enabled sonoedge (in the root)" "$enabled" disabled
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/sonoedge.service" ] || fail "unit linked into multi-user.target.wants"
grep -q 'systemctl enable --now sonoedge' "$work/install.log" || fail "postinst did not print the next steps"
ok "postinst printed the next steps"

IFS=: read -r _ _ uid _ _ home shell < <(in_root getent passwd sonoedge) || fail "user sonoedge not created"
[ "$uid" -lt 1000 ] || fail "sonoedge uid $uid is not a system uid"
expect_eq "sonoedge shell" "$shell" /usr/sbin/nologin
expect_eq "sonoedge home" "$home" /var/lib/sonoedge
groups=$(in_root id -nG sonoedge)
for g in sonoedge video; do
    echo " $groups " | grep -q " $g " || fail "sonoedge is not in group $g (groups: $groups)"
done
ok "system user sonoedge (uid $uid) in groups: $groups"
expect_eq "/var/lib/sonoedge" "$(in_root stat -c '%U:%G %a' "/var/lib/sonoedge")" "sonoedge:sonoedge 750"
expect_eq "$models" "$(in_root stat -c '%U:%G %a' "$models")" "sonoedge:sonoedge 750"
[ -z "$(ls -A "$root$models")" ] || fail "$models is not empty"
ok "$models is empty"
expect_eq "$conffile" "$(in_root stat -c '%U:%G %a' "$conffile")" "root:root 644"
expect_eq "dpkg conffiles" "$(in_root dpkg-query -W -f='${Conffiles}' sonoedge | awk 'NF { print $1 }')" "$conffile"

# The packaged binary against this root's libc, as the service user, without the host's network.
in_root /usr/bin/sonoedge --version > /dev/null || fail "sonoedge --version does not run in the $suite root"
! in_root /usr/bin/sonoedge demo --help > /dev/null 2>&1 || fail "the package carries the demo command (embedded broker)"
ok "sonoedge $(in_root /usr/bin/sonoedge --version | awk '{ print $2 }') runs; no demo command (no embedded broker)"
# Numeric ids: chroot would otherwise look the names up in this host's /etc/passwd.
gid=$(in_root getent group sonoedge | cut -d: -f3)
video_gid=$(in_root getent group video | cut -d: -f3)
as_service() { unshare --net chroot --userspec="$uid:$gid" --groups="$gid,$video_gid" "$root" "$@"; }
rc=0; as_service /usr/bin/sonoedge check --config "$conffile" > "$work/check.log" 2>&1 || rc=$?
[ "$rc" = 78 ] && grep -q "$models/" "$work/check.log" || { cat "$work/check.log"; fail "check without a model: exit $rc, expected 78 naming $models/"; }
ok "sonoedge check, no model yet: exit 78 naming the model path"
tiny="$repo/models/tiny-random/int8"
if [ -f "$tiny/model.onnx" ]; then
    model_dir=$(sed -n "s|^path = \"\($models/[^\"]*\)\"|\1|p" "$root$conffile")
    cp -r "$tiny" "$root$model_dir"
    rc=0; as_service /usr/bin/sonoedge check --config "$conffile" > "$work/check.log" 2>&1 || rc=$?
    # 69: config and model good (read by the service user); the broker is unreachable (no
    # network in this namespace) and a grabber source finds no device here.
    [ "$rc" = 69 ] && grep -q '^config *ok' "$work/check.log" && grep -q '^model *ok' "$work/check.log" \
        && grep -q '^broker *UNAVAILABLE' "$work/check.log" \
        || { cat "$work/check.log"; fail "check with the tiny model as user sonoedge: exit $rc, expected 69 (config ok, model ok, broker unreachable)"; }
    ok "sonoedge check as user sonoedge, tiny model in $model_dir: config and model ok, broker unreachable (69)"
fi
stage_done "2/4"

# ---------------------------------------------------------------------------------------------
stage "3/4 installed unit: verify and security"
for line in Type=notify User=sonoedge Group=sonoedge SupplementaryGroups=video NoNewPrivileges=yes ProtectSystem=strict; do
    grep -qx "$line" "$root/$unit" || fail "installed unit lacks $line"
done
ok "unit keeps Type=notify, User/Group=sonoedge, SupplementaryGroups=video, hardening"
# The root's own systemd-analyze (Debian 12's systemd, as on the devices), offline: no manager runs.
verify=$(in_root systemd-analyze verify "/$unit" 2>&1) || { echo "$verify"; fail "systemd-analyze verify failed"; }
if echo "$verify" | grep -q sonoedge; then echo "$verify"; fail "systemd-analyze verify warns about the unit"; fi
ok "systemd-analyze $(in_root systemd-analyze --version | awk 'NR == 1 { print $2 }') verify: no complaint about sonoedge.service (binary present)"
in_root systemd-analyze security --offline=true sonoedge.service > "$work/security.log" 2>&1 \
    || { cat "$work/security.log"; fail "systemd-analyze security failed"; }
score_line=$(grep 'Overall exposure level' "$work/security.log") || { cat "$work/security.log"; fail "no exposure score"; }
score=$(echo "$score_line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
echo "  $score_line"
awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s != "" && s <= m) }' || fail "exposure $score above $max_exposure"
ok "exposure $score <= $max_exposure"
stage_done "3/4"

# ---------------------------------------------------------------------------------------------
stage "4/4 admin edits, upgrade, remove, purge"
echo '# edited by the admin' >> "$root$conffile"
digest() { sha256sum < "$1" | cut -c1-16; }
edited=$(digest "$root$conffile")
in_root systemctl enable sonoedge.service > /dev/null 2>&1
# A next version whose packaged config changed: dpkg must keep the admin's file and leave the new
# one beside it (--force-confold answers the prompt the way an unattended upgrade does).
dpkg-deb -R "$deb" "$work/next"
sed -i "s/^Version: .*/&+next/" "$work/next/DEBIAN/control"
echo '# changed upstream' >> "$work/next$conffile"
dpkg-deb -Zgzip -b "$work/next" "$root/tmp/next.deb" > /dev/null
in_root dpkg -i --force-confold /tmp/next.deb > "$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "upgrade failed"; }
expect_eq "after upgrade: admin's config kept" "sha256 $(digest "$root$conffile")" "sha256 $edited"
[ -f "$root$conffile.dpkg-dist" ] || fail "after upgrade: no $conffile.dpkg-dist with the new packaged config"
ok "after upgrade: new packaged config left as $conffile.dpkg-dist"
expect_eq "after upgrade: is-enabled" "$(in_root systemctl is-enabled sonoedge.service 2>&1 || true)" enabled
! grep -q 'NOT enabled' "$work/upgrade.log" || fail "after upgrade: next steps printed although the service is enabled"
ok "after upgrade: no next-steps message for an enabled service"

in_root dpkg -r sonoedge > "$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "dpkg -r failed"; }
expect_eq "after remove: state" "$(in_root dpkg-query -W -f='${Status}' sonoedge)" "deinstall ok config-files"
[ ! -e "$root/usr/bin/sonoedge" ] && [ ! -e "$root/$unit" ] || fail "after remove: binary or unit still there"
expect_eq "after remove: admin's config kept" "sha256 $(digest "$root$conffile")" "sha256 $edited"
[ -d "$root$models" ] || fail "after remove: $models deleted (only purge may)"
ok "after remove: binary and unit gone; config and $models kept"

in_root dpkg -P sonoedge > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg -P failed"; }
case "$(in_root dpkg-query -W -f='${Status}' sonoedge 2>/dev/null || true)" in
    ""|"unknown ok not-installed") ;;
    *) fail "after purge: dpkg still lists sonoedge" ;;
esac
for p in "$conffile" "$conffile.dpkg-dist" /etc/sonoedge /var/lib/sonoedge; do
    [ ! -e "$root$p" ] || fail "after purge: $p still there"
done
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/sonoedge.service" ] || fail "after purge: enablement symlink left"
ok "after purge: config, /etc/sonoedge, /var/lib/sonoedge and the enablement link gone"
in_root getent passwd sonoedge > /dev/null || fail "after purge: user removed (expected kept)"
ok "after purge: user sonoedge kept (Debian practice)"
stage_done "4/4"

echo "deb check: OK ($arch, exposure $score, $((SECONDS - started)) s)"
