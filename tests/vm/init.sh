#!/bin/busybox sh
# Owns the guest's PID 1 (/init in the initramfs that run.sh builds): mounts, vivid + virtio modules, eth0, clock, then runs the command from /etc/vm/run.sh in /payload and powers off.
# Prints VM-READY (guest uptime when the command starts) and VM-EXIT-CODE=N, which run.sh reads.
# Not `set -e`: PID 1 must reach the power-off whatever fails on the way.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run /root
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
chmod 755 /
chmod 1777 /tmp

die() {
    echo "VM-INIT-ERROR: $*"
    echo "VM-EXIT-CODE=125"
    sync
    poweroff -f
}

# Settings for this run (written by run.sh): VM_VIVID_OPTS, VM_QUIET, VM_EPOCH.
. /etc/vm/run.conf || die "no /etc/vm/run.conf"

# Clock: the arm64 RTC driver and x86 CMOS both usually work, but never trust a 1970 clock.
now=$(date +%s)
if [ "$now" -lt 1600000000 ] && [ -n "${VM_EPOCH:-}" ]; then
    date -s "@$VM_EPOCH" >/dev/null || echo "VM-INIT-WARN: could not set the clock"
fi

# Modules, in dependency order (computed on the host with modprobe --show-depends).
while read -r ko; do
    [ -n "$ko" ] || continue
    opts=
    case $ko in vivid.ko) opts=$VM_VIVID_OPTS ;; esac
    # shellcheck disable=SC2086 # options are words on purpose
    insmod "/lib/modules/$ko" $opts || die "insmod $ko $opts failed"
done </lib/modules/load.list

i=0
while [ ! -e /dev/video0 ] && [ $i -lt 100 ]; do usleep 50000; i=$((i + 1)); done
[ -e /dev/video0 ] || die "/dev/video0 did not appear"

hostname sonoedge-vm
ip link set lo up
ip link set eth0 up || die "no eth0"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

[ "${VM_QUIET:-1}" = 1 ] && dmesg -n 1 # keep kernel messages off the console while the command runs

cd /payload || die "no /payload"
echo "VM-READY uptime=$(cut -d' ' -f1 /proc/uptime)s kernel=$(uname -r) machine=$(uname -m)"
sh /etc/vm/run.sh
rc=$?
echo
echo "VM-EXIT-CODE=$rc"
sync
poweroff -f
