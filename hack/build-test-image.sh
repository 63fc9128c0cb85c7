#!/usr/bin/env bash
# Builds the 3-layer Debian bookworm test/demo image into _output/images/:
#
#   layers/1-rootfs.tar     debootstrap --variant=minbase bookworm (apt lists,
#                           .debs, /dev nodes and host resolv.conf removed)
#   layers/2-packages.tar   apt-get install python3-minimal libcap2-bin, plus a
#                           copied binary with security.capability
#   layers/3-changes.tar    deletions (.wh.*), an opaque dir (.wh..wh..opq),
#                           file<->dir/symlink replacements, hardlinks, fifo,
#                           char/block devices, setuid/setgid/sticky, user.*
#                           xattrs, POSIX ACLs, a changed capability, sub-second mtimes,
#                           long and non-ASCII names, non-root owners
#   debian-3layer.oci.tar       OCI layout archive, gzip layers,
#                               image docker.io/library/erofs-test:3layer
#   debian-3layer-zstd.oci.tar  same layers, zstd (tar+zstd media type),
#                               image docker.io/library/erofs-test:3layer-zstd
#   manifest.txt            diff IDs, blob digests, sizes, entry counts
#
# Layers 2 and 3 are made the way a container runtime makes them: the change
# is done in an overlayfs mount over the layers below, and the upper dir (in
# overlay form: char 0:0 whiteouts, trusted.overlay.opaque) is converted to an
# OCI layer tar by hack/testimage. The only network used is the Debian mirror
# of the machine's apt sources (override: EROFS_DEBIAN_MIRROR).
#
# Everything expensive is cached in ${EROFS_CACHE:-/var/cache/containerd-erofs}:
# debs/ (downloaded packages, shared by all builds) and test-image-<key>/ (the
# finished outputs), where <key> hashes this script, the Go tool's sources and
# the mirror, so a changed recipe builds anew and a rerun only copies (seconds,
# and it survives `git clean`). EROFS_IMAGES_OUT overrides the output dir.
# Must run as root (debootstrap, chroot, overlay).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${EROFS_IMAGES_OUT:-$REPO/_output/images}
CACHE_ROOT=${EROFS_CACHE:-/var/cache/containerd-erofs}
SUITE=bookworm
PACKAGES=(python3-minimal libcap2-bin)
IMAGE_NAME=docker.io/library/erofs-test:3layer
CREATED=2025-05-20T00:00:00Z # fixed: config bytes depend on the layers only
OUTPUTS=(layers/1-rootfs.tar layers/2-packages.tar layers/3-changes.tar
	debian-3layer.oci.tar debian-3layer-zstd.oci.tar manifest.txt)

log() { printf '[build-test-image %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap, chroot and overlay mounts)"
for tool in debootstrap chroot setcap getcap setfattr getfattr setfacl mknod go tar; do
	command -v "$tool" >/dev/null || die "$tool not found (Debian packages: debootstrap, attr, acl, libcap2-bin)"
done

# debian_mirror prints the URI of the machine's apt source for $SUITE
# (deb822 .sources first, then one-line .list), else deb.debian.org.
debian_mirror() {
	if [[ -n ${EROFS_DEBIAN_MIRROR:-} ]]; then
		echo "$EROFS_DEBIAN_MIRROR"
		return
	fi
	local f uri
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		# Stanzas are separated by blank lines; take the first deb stanza
		# whose Suites has exactly $SUITE.
		uri=$(awk -v suite="$SUITE" '
			function flush() { if (isdeb && hassuite && uri != "" && !done) { print uri; done = 1 } isdeb = hassuite = 0; uri = "" }
			/^[[:space:]]*$/ { flush(); next }
			/^[[:space:]]*#/ { next }
			tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hassuite = 1 }
			END { flush() }' "$f")
		if [[ -n $uri ]]; then
			echo "$uri"
			return
		fi
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] || continue
		uri=$(awk -v suite="$SUITE" '
			$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }' "$f")
		if [[ -n $uri ]]; then
			echo "$uri"
			return
		fi
	done
	echo http://deb.debian.org/debian
}

MIRROR=$(debian_mirror)
KEY=$(
	{
		cat "${BASH_SOURCE[0]}"
		find "$REPO/hack/testimage" -name '*.go' ! -name '*_test.go' -print0 | sort -z | xargs -0 cat
		echo "$MIRROR"
	} | sha256sum | cut -c1-16
)
CACHE=$CACHE_ROOT/test-image-$KEY
DEBS=$CACHE_ROOT/debs

# install_outputs copies the cached outputs into _output/images, each file
# through a temp name and rename so a reader never sees a partial file, and
# skips the copy when _output already holds this build.
install_outputs() {
	if cmp -s "$CACHE/manifest.txt" "$OUT/manifest.txt"; then
		local f ok=1
		for f in "${OUTPUTS[@]}"; do
			[[ $(stat -c %s "$CACHE/$f") == $(stat -c %s "$OUT/$f" 2>/dev/null) ]] || ok=0
		done
		if ((ok)); then
			log "$OUT is up to date (key $KEY)"
			return
		fi
	fi
	mkdir -p "$OUT/layers"
	local f
	for f in "${OUTPUTS[@]}"; do
		cp --reflink=auto "$CACHE/$f" "$OUT/$f.tmp.$$"
		mv -f "$OUT/$f.tmp.$$" "$OUT/$f"
	done
	log "installed into $OUT (key $KEY)"
}

mkdir -p "$CACHE_ROOT" "$DEBS/partial"
# One build at a time per cache: concurrent runs wait, then find it cached.
exec 9>"$CACHE_ROOT/.test-image.lock"
flock 9

if [[ -f $CACHE/.complete ]]; then
	install_outputs
	exit 0
fi

# unmount_under DIR: unmount everything mounted below DIR, deepest first.
# Fails if something stays mounted: then DIR must not be removed, it may hold
# a bind mount of the host's /dev.
unmount_under() {
	local m
	for m in $(awk -v b="$1/" 'index($5, b) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" || true
	done
	! awk -v b="$1/" 'index($5, b) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# A build killed hard (SIGKILL, power loss) leaves its dir and mounts behind;
# the lock says no build is running now, so they are all stale.
for stale in "$CACHE_ROOT"/test-image-*.build.* "$CACHE_ROOT"/test-image-*.new.*; do
	[[ -d $stale ]] || continue
	log "removing stale $stale"
	if unmount_under "$stale"; then
		rm -rf --one-file-system "$stale"
	else
		die "cannot unmount everything under $stale"
	fi
done

B=$CACHE_ROOT/test-image-$KEY.build.$$
# cleanup unmounts everything under $B and removes it; if a mount refuses to
# go it leaves $B alone rather than rm -rf through a bind mount of /dev.
cleanup() {
	local rc=$?
	if unmount_under "$B"; then
		rm -rf --one-file-system "$B"
	else
		log "mounts remain under $B; not removing it"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$B/out/layers"
START=$(date +%s)

log "building hack/testimage"
(cd "$REPO" && go build -o "$B/testimage" ./hack/testimage)
TI=$B/testimage

# --- layer 1: debootstrap minbase ------------------------------------------
ROOTFS=$B/rootfs
log "debootstrap --variant=minbase $SUITE from $MIRROR (log: $B/debootstrap.log)"
if ! debootstrap --variant=minbase --cache-dir="$DEBS" "$SUITE" "$ROOTFS" "$MIRROR" >"$B/debootstrap.log" 2>&1; then
	tail -n 30 "$B/debootstrap.log" >&2
	die "debootstrap failed"
fi
# What official Debian images drop too: package caches and lists, the host's
# resolver and hostname, device nodes (a runtime provides /dev).
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
	"$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/bootstrap.log
mkdir -p "$ROOTFS/var/lib/apt/lists/partial"
: >"$ROOTFS/etc/resolv.conf"
echo localhost >"$ROOTFS/etc/hostname"
find "$ROOTFS/dev" -mindepth 1 -delete
"$TI" layer -o "$B/out/layers/1-rootfs.tar" "$ROOTFS"

# overlay_mount LOWERDIRS UPPER WORK MERGED: a plain overlay whose upper dir
# is a self-contained diff (no redirects, no metacopy, no index).
overlay_mount() {
	mkdir -p "$2" "$3" "$4"
	mount -t overlay overlay \
		-o "lowerdir=$1,upperdir=$2,workdir=$3,redirect_dir=off,metacopy=off,index=off,xino=off" "$4"
}

# --- layer 2: packages, installed in a chroot over the rootfs ----------------
L2=$B/l2
overlay_mount "$ROOTFS" "$L2/upper" "$L2/work" "$L2/merged"
M=$L2/merged
# Bind mounts sit on top of the overlay, so nothing done through them lands in
# the upper dir: /dev, /proc, /sys, the host resolver, and the shared .deb
# cache as apt's archives dir (the debs never enter the layer).
mount --bind /dev "$M/dev"
mount -t proc proc "$M/proc"
mount -t sysfs sysfs "$M/sys"
mount --bind "$(readlink -f /etc/resolv.conf)" "$M/etc/resolv.conf"
mount --bind "$DEBS" "$M/var/cache/apt/archives"
log "apt-get install ${PACKAGES[*]} (in a chroot over layer 1)"
chroot "$M" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root /bin/sh -euc '
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
	# A file capability set inside the layer (security.capability xattr).
	cp /usr/bin/true /usr/local/bin/netraw-true
	setcap cap_net_raw+ep /usr/local/bin/netraw-true
	python3 -c "import sys; assert sys.version_info >= (3, 11)"
' sh "${PACKAGES[@]}" >"$B/apt.log" 2>&1 || {
	tail -n 30 "$B/apt.log" >&2
	die "package install failed"
}
for m in var/cache/apt/archives etc/resolv.conf sys proc dev; do
	umount "$M/$m"
done
rm -rf "$M"/var/lib/apt/lists/* "$M"/var/cache/apt/*.bin
mkdir -p "$M/var/lib/apt/lists/partial"
getcap "$M/usr/local/bin/netraw-true" | grep -q cap_net_raw || die "capability lost on netraw-true"
umount "$M"
"$TI" layer -o "$B/out/layers/2-packages.tar" "$L2/upper"

# --- layer 3: every kind of change a layer can carry -------------------------
L3=$B/l3
overlay_mount "$L2/upper:$ROOTFS" "$L3/upper" "$L3/work" "$L3/merged"
M=$L3/merged
log "layer 3 changes"
(
	cd "$M"
	# Deletions: a file and a whole tree of layer 1, a file of layer 2.
	rm usr/bin/rgrep etc/issue.net
	rm -r usr/share/common-licenses
	rm usr/sbin/getpcaps
	# Opaque dir: deleted and recreated, only the new content is visible.
	rm -r etc/apt/apt.conf.d
	mkdir etc/apt/apt.conf.d
	echo 'APT::Install-Recommends "false";' >etc/apt/apt.conf.d/99erofs-test
	# Replacements: file by dir, dir by file, file by symlink, symlink by file.
	rm etc/host.conf
	mkdir etc/host.conf
	echo 'was a file in layer 1' >etc/host.conf/README
	rm -r etc/apt/preferences.d
	echo 'was a dir in layer 1' >etc/apt/preferences.d
	ln -sf os-release etc/issue
	rm usr/sbin/rmt
	echo 'was a symlink in layer 1' >usr/sbin/rmt
	# Modified in place, and a capability changed on a layer-2 file.
	echo 'erofs-test layer 3' >>etc/motd
	setcap cap_net_bind_service+ep usr/local/bin/netraw-true
	# New tree with every entry type.
	T=opt/erofs-test
	mkdir -p "$T/empty-dir" "$T/sub"
	head -c 300000 <(yes 'erofs test data') >"$T/data.bin" # no pipe: pipefail would see yes's SIGPIPE
	ln "$T/data.bin" "$T/data-link"
	ln "$T/data.bin" "$T/sub/data-link2"
	ln usr/bin/dash "$T/dash-link" # hardlink to a lower file: copied up with it
	: >"$T/empty-file"
	truncate -s 1M "$T/sparse"
	printf 'tail' >>"$T/sparse"
	mkfifo "$T/fifo"
	mknod "$T/null" c 1 3
	mknod "$T/loop7" b 7 7
	cp usr/bin/true "$T/suid-true"
	chmod 4755 "$T/suid-true"
	mkdir "$T/setgid-dir" "$T/sticky-dir"
	chmod 2775 "$T/setgid-dir"
	chmod 1777 "$T/sticky-dir"
	echo xattrs >"$T/xattr-file"
	setfattr -n user.erofs.test -v hello "$T/xattr-file"
	setfattr -n user.erofs.empty "$T/xattr-file"
	setfattr -n user.erofs.dir -v on-a-dir "$T/sub"
	# POSIX ACLs are system.posix_acl_* xattrs with binary values.
	echo acl >"$T/acl-file"
	setfacl -m u:1000:rw,g:1000:r "$T/acl-file"
	mkdir "$T/acl-dir"
	setfacl -d -m u:1000:rwx "$T/acl-dir"
	ln -s ../data.bin "$T/sub/rel-link"
	ln -s /etc/os-release "$T/abs-link"
	ln -s does/not/exist "$T/dangling-link"
	echo owned >"$T/owned-1000"
	chown 1000:1000 "$T/owned-1000"
	chown 65534:65534 "$T/sub"
	echo subsecond >"$T/subsecond"
	touch -d '2024-01-02 03:04:05.123456789' "$T/subsecond"
	long=$T/$(printf 'long-name-%.0s' {1..20})
	echo long >"$long"
	echo 'non-ascii' >"$T/naïve café ✓"
	mkdir -p "$T/deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z"
	echo deep >"$T/deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/file"
)
umount "$M"
"$TI" layer -subsecond -o "$B/out/layers/3-changes.tar" "$L3/upper"

# --- image archives ---------------------------------------------------------
LAYERS=("$B"/out/layers/{1-rootfs,2-packages,3-changes}.tar)
HIST=(-layer "${LAYERS[0]}" -history "debootstrap --variant=minbase $SUITE"
	-layer "${LAYERS[1]}" -history "apt-get install --no-install-recommends ${PACKAGES[*]}"
	-layer "${LAYERS[2]}" -history "hack/build-test-image.sh layer 3: whiteouts, opaque dir, special files")
log "writing OCI archives (gzip, zstd)"
"$TI" oci -o "$B/out/debian-3layer.oci.tar" -name "$IMAGE_NAME" -compression gzip -created "$CREATED" "${HIST[@]}"
"$TI" oci -o "$B/out/debian-3layer-zstd.oci.tar" -name "$IMAGE_NAME-zstd" -compression zstd -created "$CREATED" "${HIST[@]}"

# --- checks: the archives verify, GNU tar applies the layers, python runs ----
(
	echo "# _output/images, built by hack/build-test-image.sh"
	echo "cache-key: $KEY"
	echo "mirror: $MIRROR $SUITE; packages: ${PACKAGES[*]}"
	cd "$B/out"
	for f in layers/*.tar; do
		echo "$f: $(stat -c %s "$f") bytes, sha256:$(sha256sum "$f" | cut -d' ' -f1)"
	done
	"$TI" verify debian-3layer.oci.tar layers/{1-rootfs,2-packages,3-changes}.tar
	"$TI" verify debian-3layer-zstd.oci.tar layers/{1-rootfs,2-packages,3-changes}.tar
) >"$B/out/manifest.txt"
X=$B/extract
mkdir -p "$X"
for f in "${LAYERS[@]}"; do
	tar -xf "$f" -C "$X" --xattrs --xattrs-include='*' --numeric-owner
done
grep -q 'VERSION_CODENAME=bookworm' "$X/etc/os-release" || die "extracted image has no bookworm /etc/os-release"
chroot "$X" /usr/bin/python3 -c 'print("python ok")' >/dev/null || die "python3 does not run in the extracted image"
getcap "$X/usr/local/bin/netraw-true" | grep -q cap_net_bind_service || die "capability lost in the layer tars"
[[ $(getfattr --absolute-names --only-values -n user.erofs.test "$X/opt/erofs-test/xattr-file") == hello ]] || die "user xattr lost"

mv "$B/out" "$CACHE.new.$$"
touch "$CACHE.new.$$/.complete"
rm -rf "$CACHE"
mv "$CACHE.new.$$" "$CACHE"
log "built in $(($(date +%s) - START)) s; cached in $CACHE"
# Keep the three newest builds; older keys are stale recipes.
find "$CACHE_ROOT" -maxdepth 1 -name 'test-image-*' ! -name '*.build.*' ! -name '*.new.*' -printf '%T@ %p\n' |
	sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf
install_outputs
cat "$OUT/manifest.txt"
