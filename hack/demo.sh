#!/usr/bin/env bash
# The containerd-erofs demo: `make demo` runs it after deps, build and assets.
#
# It runs hack/demo (a Go program whose steps are integration/e2e.go, the
# code TestE2E runs) on a private temporary directory:
#
#   1. containerd-erofs starts with hack/config.toml on a temporary root
#   2. the 3-layer Debian test image is imported and unpacked with erofs-vm;
#      `ctr snapshots ls` and the erofs-vm/ labels are shown
#   3. a writable snapshot is prepared; `erofsctl snapshot-mounts` prints its
#      raw mounts (format/erofs over fsmeta + ext4) and the disks a VM gets
#   4. a qemu TCG guest boots from those disks, runs python3 and cat from the
#      image (chroot into the overlay root) and writes a file
#   5. the file is read on the host from rwlayer.img's upper/ (debugfs)
#   6. the container is diffed into an OCI layer (erofs-vm Compare) and committed
#   7. the daemon stops and everything is removed
#
# Needs root, bin/ (make build), _output/guest (make guest) and
# _output/images (make test-image). Takes about a minute on 2 cores.
# Cleanup runs on success, failure and ^C: the program removes what it
# made; the trap below catches what a killed program would leave behind.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

die() {
	echo "demo: $*" >&2
	exit 1
}

[[ $(id -u) == 0 ]] || die "must run as root (loop devices, qemu disks, debugfs on the snapshot files)"
for b in containerd-erofs ctr erofsctl; do
	[[ -x bin/$b ]] || die "bin/$b missing: run 'make build'"
done
for f in _output/guest/vmlinuz _output/guest/initramfs.cpio.gz; do
	[[ -s $f ]] || die "$f missing: run 'make guest'"
done
[[ -s _output/images/debian-3layer.oci.tar ]] || die "_output/images/debian-3layer.oci.tar missing: run 'make test-image'"
for tool in qemu-system-x86_64 debugfs go; do
	command -v "$tool" >/dev/null || die "$tool not found: run 'make deps'"
done

WORK=$(mktemp -d /tmp/ced-demo.XXXXXX) # short: unix socket paths have 108 bytes

cleanup() {
	local rc=$? pidfile=$WORK/run/d/containerd.pid
	trap - EXIT INT TERM
	if [[ -f $pidfile ]]; then
		local pid
		pid=$(<"$pidfile")
		if kill -0 "$pid" 2>/dev/null; then
			echo "demo: stopping the daemon left running (pid $pid)" >&2
			kill -TERM "$pid" 2>/dev/null || true
			for _ in {1..100}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	# Unmount anything still mounted below $WORK, deepest first.
	awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r mp; do umount -l "$mp" 2>/dev/null || true; done
	if [[ -e $WORK ]]; then
		chattr -R -f -i "$WORK" 2>/dev/null || true # set_immutable layer files
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$WORK/run"
# go run caches the linked program (Go >= 1.24): only the first demo after a
# source change pays for compiling and linking it.
go run -buildvcs=false ./hack/demo --repo "$REPO" --workdir "$WORK/run"
