#!/usr/bin/env bash
# install-deps.sh installs what building, testing and demonstrating
# containerd-erofs needs on a fresh Debian bookworm machine, as root.
#
# Idempotent: packages already installed are left alone and `apt-get update`
# runs only when something is missing, so a second run touches nothing and
# works offline.
#
# It does NOT fetch the guest kernel: hack/build-guest.sh does that (from
# bookworm-backports, with a private apt configuration; docs/design.md §9).
#
# Go >= 1.26 is checked, not installed: the Go module proxy serves modules,
# not toolchains, and this project does not download binaries from anywhere
# else. Install Go from https://go.dev/dl/ into /usr/local/go if it is missing.
set -euo pipefail

GO_MIN_MAJOR=1
GO_MIN_MINOR=26

PACKAGES=(
	e2fsprogs       # mkfs.ext4: the writable layer of block mode
	erofs-utils     # fsck.erofs, dump.erofs: tests judge our images with them
	qemu-utils      # qemu-img: reads our VMDK descriptors
	qemu-system-x86 # boots the test guest (TCG)
	busybox-static  # the guest's userland
	kmod            # depmod for the guest's modules
	cpio            # the guest's initramfs
	debootstrap     # the Debian rootfs of the test image
	isal            # igzip: containerd's fastest gzip inflater (docs/design.md §10)
	zstd            # zstd layers
	pigz            # parallel gzip, containerd's second choice
	xz-utils        # the guest kernel's modules are .ko.xz
	attr            # getfattr/setfattr: xattr and whiteout checks
	acl             # ACL xattrs in test layers
	libcap2-bin     # setcap/getcap: the file capability in the test image
	file
	ca-certificates
	git
	make
	gcc # cgo parts of containerd
)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (it installs system packages)"
command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
	die "this script is for Debian (bookworm): dpkg-query/apt-get not found"

if [[ -r /etc/os-release ]]; then
	# shellcheck disable=SC1091
	. /etc/os-release
	if [[ ${ID:-} != debian || ${VERSION_CODENAME:-} != bookworm ]]; then
		log "warning: written for Debian bookworm, this is ${PRETTY_NAME:-unknown}; trying anyway"
	fi
fi

installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
	log "all ${#PACKAGES[@]} packages already installed"
else
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q </dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
	for p in "${missing[@]}"; do
		installed "$p" || die "package $p did not install"
	done
fi

# Go: on PATH, or in /usr/local/go (the Makefile adds it to PATH).
go_bin=$(command -v go || true)
if [[ -z $go_bin && -x /usr/local/go/bin/go ]]; then
	go_bin=/usr/local/go/bin/go
fi
[[ -n $go_bin ]] ||
	die "Go >= $GO_MIN_MAJOR.$GO_MIN_MINOR not found (not on PATH, not in /usr/local/go): install it from https://go.dev/dl/ into /usr/local/go"
go_version=$("$go_bin" env GOVERSION) # e.g. go1.26.6
if [[ ! $go_version =~ ^go([0-9]+)\.([0-9]+) ]]; then
	die "cannot read the version of $go_bin ('$go_version')"
fi
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
if ((major < GO_MIN_MAJOR || (major == GO_MIN_MAJOR && minor < GO_MIN_MINOR))); then
	die "$go_bin is $go_version, need >= go$GO_MIN_MAJOR.$GO_MIN_MINOR: install a newer Go from https://go.dev/dl/ into /usr/local/go"
fi
log "go: $go_bin ($go_version)"

# The tests loop-mount EROFS and ext4 images on this host: say so now if the
# kernel cannot, rather than in the middle of `make test`. A warning only:
# building and the daemon itself do not need them.
for fs in erofs ext4 overlay; do
	if ! grep -qw "$fs" /proc/filesystems 2>/dev/null; then
		modprobe "$fs" 2>/dev/null || true
		grep -qw "$fs" /proc/filesystems 2>/dev/null ||
			log "warning: the host kernel has no $fs filesystem: tests that mount $fs images will fail"
	fi
done
[[ -e /dev/loop-control ]] || modprobe loop 2>/dev/null || true
[[ -e /dev/loop-control ]] || log "warning: no /dev/loop-control: tests that loop-mount images will fail"

log "done"
