#!/bin/busybox sh
# /init of the `cargo xtask vm-test` guest (busybox sh, embedded in the xtask).
#
# Stage 1 runs as PID 1 on the initramfs (rootfs): mounts proc/sys/devtmpfs, loads the
# modules listed in /etc/vmtest/modules, copies the root (without the modules, kept under
# /.modules) to a tmpfs and switch_roots there, because pivot_root(2) fails on rootfs and the
# tests need a real root. Stage 2 mounts the rest, waits for the disks, mounts the read-only 9p
# share of the workspace at its host path, runs the payload script (vmtest.script= on the kernel
# command line) and powers off. PID 1 must never exit: every path ends in poweroff.
# Markers, each on its own line: VMTEST-STAGE <name>, VMTEST-RESULT rc=<n>.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
TERM=dumb
export PATH HOME TERM

halt() {
	sync
	poweroff -f
	echo o >/proc/sysrq-trigger
	while :; do sleep 60; done
}

die() {
	echo "vmtest-init: $*"
	echo
	echo "VMTEST-RESULT rc=125"
	halt
}

if [ "$1" != stage2 ]; then
	/bin/busybox mkdir -p /proc /sys /dev /newroot /usr/bin /usr/sbin /sbin /tmp /run /root /mnt
	/bin/busybox --install -s /bin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	dmesg -n 1
	echo
	echo "VMTEST-STAGE init"
	for m in $(cat /etc/vmtest/modules); do
		modprobe "$m" || die "modprobe $m failed"
	done
	echo "VMTEST-STAGE modules"
	mount -t tmpfs -o mode=0755 tmpfs /newroot || die "cannot mount the new root"
	for d in /*; do
		case "$d" in
		/proc | /sys | /dev | /newroot) ;;
		*) cp -a "$d" /newroot/ || die "cannot copy $d to the new root" ;;
		esac
	done
	mkdir -p /newroot/proc /newroot/sys /newroot/dev
	mount --move /proc /newroot/proc
	mount --move /sys /newroot/sys
	mount --move /dev /newroot/dev
	exec switch_root /newroot /init stage2
	die "switch_root failed"
fi

mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount --make-rshared /
echo "VMTEST-STAGE root"

share=
tmpdev=
script=/vmtest/run.sh
for w in $(cat /proc/cmdline); do
	case "$w" in
	vmtest.share=*) share=${w#vmtest.share=} ;;
	vmtest.script=*) script=${w#vmtest.script=} ;;
	vmtest.tmp=*) tmpdev=${w#vmtest.tmp=} ;;
	esac
done

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done

if [ -n "$tmpdev" ]; then
	# A disk-backed /tmp like a Debian root file system (ext4, else XFS): user xattrs (tmpfs
	# has none before 6.6), overlay upper dirs, and no memory pressure.
	if grep -qw ext4 /proc/filesystems && [ -x /usr/sbin/mkfs.ext4 ]; then
		mkfs="mkfs.ext4 -q -F"
		fstype=ext4
	else
		mkfs="mkfs.xfs -q -f"
		fstype=xfs
	fi
	if $mkfs "$tmpdev" && mount -t $fstype "$tmpdev" /tmp; then
		chmod 1777 /tmp
	else
		echo "vmtest-init: cannot put /tmp on $tmpdev; it stays a tmpfs"
	fi
fi

if [ -n "$share" ]; then
	mkdir -p "$share"
	if mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose vmtest_ro "$share"; then
		# Tests write under CARGO_TARGET_TMPDIR; the share itself is read-only.
		[ -d "$share/target/tmp" ] && mount -t tmpfs -o mode=1777 tmpfs "$share/target/tmp"
	else
		echo "vmtest-init: cannot mount the 9p share at $share"
	fi
fi

sh "$script"
rc=$?
if [ "$rc" -ne 0 ]; then
	echo "--- dmesg (tail) ---"
	dmesg | tail -n 40
fi
echo
echo "VMTEST-RESULT rc=$rc"
halt
