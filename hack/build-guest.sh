#!/usr/bin/env bash
# build-guest.sh builds the guest kernel and base initramfs that the
# integration tests boot under qemu (docs/design.md §9):
#
#   _output/guest/vmlinuz             Debian's 6.12 cloud kernel from bookworm-backports
#   _output/guest/initramfs.cpio.gz   busybox-static + hack/guest/init + the .ko files the
#                                     guest needs (erofs, virtio_blk, overlay, ... and deps)
#
# Why 6.12 and not bookworm's own 6.1: mounting a multi-device EROFS image as ONE
# flat device (the merged.vmdk of docs/design.md §7) needs flat multi-device support,
# which 6.1 lacks (the mount fails with ENOENT).
#
# The kernel package is fetched with a PRIVATE apt configuration (own sources list,
# lists, cache): the host's apt state and installed kernel are never touched. The
# .deb is cached under ${EROFS_CACHE:-/var/cache/containerd-erofs}/guest-kernel so
# repeat runs are fast and work offline. Set EROFS_GUEST_REFRESH=1 to look for a
# newer kernel.
#
# The script is idempotent: outputs are rebuilt only when an input changed
# (kernel deb, hack/guest/*, this script, the host's busybox).
#
# Per-test scripts are NOT baked in here: a test appends a second gzip'd newc
# cpio holding /test.sh to this initramfs (the kernel unpacks concatenated
# archives in order), see integration/guest.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${EROFS_GUEST_OUT:-$ROOT/_output/guest}
CACHE=${EROFS_CACHE:-/var/cache/containerd-erofs}
KCACHE=$CACHE/guest-kernel
META_PKG=linux-image-cloud-amd64
SUITE=bookworm-backports

# Modules the guest needs, as kernel config symbol:module name. A symbol that
# is =y needs nothing; =m means the module (and its modules.dep closure) goes
# into the initramfs; anything else is an error, since the tests cannot work.
NEEDED=(
	VIRTIO_PCI:virtio_pci
	VIRTIO_BLK:virtio_blk
	EROFS_FS:erofs
	OVERLAY_FS:overlay
	EXT4_FS:ext4
	CRYPTO_CRC32C:crc32c_generic # libcrc32c finds crc32c through the crypto API (a softdep, not in modules.dep)
)

# Temp dirs removed on any exit, success or failure.
tmpdirs=()
trap 'rm -rf "${tmpdirs[@]}"' EXIT

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for tool in apt-get dpkg-deb depmod cpio gzip xz awk sha256sum; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install kmod cpio xz-utils dpkg apt)"
done
BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (apt-get install busybox-static)"
# The guest has no libc: a dynamically linked busybox would not run.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
	die "$BUSYBOX is not a static busybox (apt-get install busybox-static)"
fi

# debian_uri prints the URI of the host's Debian source that serves bookworm
# main, from deb822 .sources files or one-line sources.list entries, so the
# backports line uses the same mirror the machine already trusts.
debian_uri() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		awk '
			function flush() {
				if (!done && uri != "" && (" " suites " ") ~ / bookworm / && (" " comps " ") ~ / main /) { print uri; done = 1 }
				uri = ""; suites = ""; comps = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "suites:" { $1 = ""; suites = $0 }
			tolower($1) == "components:" { $1 = ""; comps = $0 }
			END { flush() }
		' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		# deb [opts] URI SUITE COMPONENTS...
		awk '$1 == "deb" {
			i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			if ($(i+1) == "bookworm") { for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit } }
		}' "$f"
	done
}

# fetch_kernel_deb downloads the versioned linux-image-6.12*-cloud-amd64 .deb
# that the meta package in bookworm-backports depends on, into $KCACHE.
fetch_kernel_deb() {
	local uri apt work pkg
	uri=$(debian_uri | head -1)
	[[ -n $uri ]] || die "no Debian bookworm main source in /etc/apt/sources.list{,.d}"
	work=$(mktemp -d "$CACHE/.apt.XXXXXX")
	tmpdirs+=("$work")
	mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/preferences.d"
	# Only backports: `apt-get download` resolves no dependencies, so the
	# bookworm main index (13 MB) would be fetched for nothing.
	cat >"$work/sources.list" <<-EOF
		deb $uri $SUITE main
	EOF
	apt=(apt-get -q
		-o "Dir::Etc::SourceList=$work/sources.list"
		-o Dir::Etc::SourceParts=/dev/null
		-o "Dir::Etc::Preferences=$work/etc/preferences"
		-o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
		-o "Dir::State::Lists=$work/lists"
		-o "Dir::Cache=$work/cache"
		-o "Dir::State::Status=/dev/null"
		-o APT::Get::List-Cleanup=false
		-o APT::Sandbox::User=root)
	log "apt-get update (private lists, $uri $SUITE)"
	"${apt[@]}" update >&2
	# The meta package's first dependency is the versioned image package;
	# ask apt for the backports candidate explicitly.
	pkg=$("${apt[@]/apt-get/apt-cache}" show "$META_PKG/$SUITE" 2>/dev/null |
		awk -F': ' '/^Depends:/ { print $2; exit }' | tr ',' '\n' |
		sed -n 's/^ *\(linux-image-6\.12[^ ]*-cloud-amd64[^ ]*\).*/\1/p' | head -1)
	[[ -n $pkg ]] || die "cannot resolve $META_PKG in $SUITE to a linux-image-6.12*-cloud-amd64 package"
	log "downloading $pkg"
	(cd "$work" && "${apt[@]}" download "$pkg/$SUITE" >&2)
	local deb
	deb=$(ls "$work"/"$pkg"_*.deb 2>/dev/null | head -1)
	[[ -n $deb ]] || die "apt-get download $pkg left no .deb"
	dpkg-deb --info "$deb" >/dev/null || die "$deb is not a valid .deb"
	mv -f "$deb" "$KCACHE/"
	# Keep exactly one kernel in the cache: the newest download.
	find "$KCACHE" -maxdepth 1 -name 'linux-image-*.deb' ! -name "$(basename "$deb")" -delete
}

mkdir -p "$KCACHE" "$OUT"
deb=$(ls -t "$KCACHE"/linux-image-6.12*-cloud-amd64*.deb 2>/dev/null | head -1 || true)
if [[ -z $deb || ${EROFS_GUEST_REFRESH:-0} == 1 ]]; then
	fetch_kernel_deb
	deb=$(ls -t "$KCACHE"/linux-image-6.12*-cloud-amd64*.deb | head -1)
fi
log "kernel package: $deb"

# Inputs fingerprint: rebuild only when something that goes into the outputs changed.
stamp=$( (
	sha256sum "$deb" "$BUSYBOX" "$ROOT/hack/build-guest.sh" "$ROOT"/hack/guest/* | awk '{print $1}'
) | sha256sum | awk '{print $1}')
if [[ -f $OUT/vmlinuz && -f $OUT/initramfs.cpio.gz && -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$stamp" ]]; then
	log "up to date: $OUT"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/build-guest.XXXXXX")
tmpdirs+=("$work")
tree=$work/kernel
dpkg-deb -x "$deb" "$tree"
kver=$(ls "$tree/lib/modules" | head -1)
[[ -n $kver && -d $tree/lib/modules/$kver ]] || die "no /lib/modules/<version> in $deb"
config=$tree/boot/config-$kver
vmlinuz=$tree/boot/vmlinuz-$kver
[[ -f $config && -f $vmlinuz ]] || die "$deb lacks boot/config-$kver or boot/vmlinuz-$kver"
depmod -b "$tree" "$kver"
moddir=$tree/lib/modules/$kver
log "kernel $kver"

# EROFS flat multi-device (docs/design.md §7) is what the tests exist to prove: make
# sure the kernel we ship can do it, rather than failing later in a guest.
case "$kver" in
6.1[2-9]* | 6.[2-9][0-9]* | [7-9].*) ;;
*) die "kernel $kver is older than 6.12: no EROFS flat multi-device mounts" ;;
esac

# Resolve the modules to load and their load order (dependencies first) from
# modules.dep; paths are relative to $moddir.
declare -A depsof seen
while IFS= read -r line; do
	mod=${line%%:*}
	depsof[$mod]=${line#*:}
done <"$moddir/modules.dep"
modpath() { # name -> path in modules.dep (names use _ ; files may use - )
	local n=$1 p
	for p in "${!depsof[@]}"; do
		local b=${p##*/}
		b=${b%%.ko*}
		[[ ${b//-/_} == "${n//-/_}" ]] && {
			echo "$p"
			return
		}
	done
}
order=()
visit() {
	local p=$1 d
	[[ -n ${seen[$p]:-} ]] && return
	seen[$p]=1
	for d in ${depsof[$p]}; do visit "$d"; done
	order+=("$p")
}
for pair in "${NEEDED[@]}"; do
	sym=${pair%%:*} name=${pair#*:}
	val=$(sed -n "s/^CONFIG_$sym=//p" "$config")
	case "$val" in
	y) log "  $name: built in" ;;
	m)
		p=$(modpath "$name")
		[[ -n $p ]] || die "CONFIG_$sym=m but $name.ko is not in modules.dep"
		visit "$p"
		;;
	*) die "kernel $kver has CONFIG_$sym='$val': the guest cannot work" ;;
	esac
done

# Stage the initramfs tree.
stage=$work/initramfs
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,mnt,tmp,run,etc,lib/modules,usr/bin,usr/sbin}
cp "$BUSYBOX" "$stage/bin/busybox"
install -m 0755 "$ROOT/hack/guest/init" "$stage/init"
: >"$stage/etc/modules.order"
for p in "${order[@]}"; do
	src=$moddir/$p
	base=${p##*/}
	case "$base" in
	*.ko.xz) xz -dc "$src" >"$stage/lib/modules/${base%.xz}" ;;
	*.ko.zst) zstd -qdc "$src" >"$stage/lib/modules/${base%.zst}" ;;
	*.ko.gz) gzip -dc "$src" >"$stage/lib/modules/${base%.gz}" ;;
	*.ko) cp "$src" "$stage/lib/modules/$base" ;;
	*) die "unexpected module file $p" ;;
	esac
	echo "/lib/modules/${base%.ko*}.ko" >>"$stage/etc/modules.order"
	log "  module ${base%.ko*}"
done
echo "$kver" >"$stage/etc/kernel-release"
# Applets are linked at boot by `busybox --install -s` in /init, so the
# archive needs no per-applet links.

# Reproducible archive: sorted names, fixed mtimes, root-owned.
find "$stage" -exec touch -h -d @0 {} +
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$work/initramfs.cpio.gz"

install -m 0644 "$vmlinuz" "$OUT/.vmlinuz.tmp"
mv -f "$OUT/.vmlinuz.tmp" "$OUT/vmlinuz"
install -m 0644 "$work/initramfs.cpio.gz" "$OUT/.initramfs.tmp"
mv -f "$OUT/.initramfs.tmp" "$OUT/initramfs.cpio.gz"
echo "$kver" >"$OUT/kernel-release"
echo "$stamp" >"$OUT/.stamp"
log "wrote $OUT/vmlinuz and $OUT/initramfs.cpio.gz ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1))"
