#!/bin/sh
# fsmeta merge benchmark: wall time and peak RSS of `erofsctl merge`
#   1. on the 3-layer Debian test image, side by side with erofs-utils;
#   2. on synthetic stacks, scaling layers (16..500) and entries (100k, 1M).
# Prints markdown tables. Usage: hack/bench/fsmeta.sh [--quick]
#
# Comparator: erofs-utils here is 1.5 (Debian bookworm), which has no
# `mkfs.erofs --aufs --ovlfs-strip` (1.8+) and no --tar. The closest it can
# do is mkfs.erofs on the merged tree extracted to disk (whiteouts applied
# by this script), which writes a full image with all data, not metadata
# only: it bounds what "building the merged view" costs with erofs-utils.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
QUICK=${1:-}
WORK=$(mktemp -d /var/tmp/fsmeta-bench.XXXXXX)
trap 'umount -q "$WORK"/mnt 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM

cd "$ROOT"
go build -o "$WORK/erofsctl" ./cmd/erofsctl
go test -c -o "$WORK/erofs.test" ./erofs
go build -o "$WORK/timeit" ./hack/bench/timeit

# measure CMD...: runs CMD $RUNS times through hack/bench/timeit (Go's
# monotonic clock, getrusage) and prints "best_wall_s best_cpu_s
# max_rss_MiB", times in seconds with microsecond digits: a 3-layer merge
# takes ~20-30 ms, far too short for /usr/bin/time's hundredths. CPU
# (user+sys) is reported beside wall time because the machine is shared:
# wall time swings with the load, CPU time much less.
RUNS=${RUNS:-3}
measure() {
	out=$("$WORK/timeit" -n "$RUNS" -- "$@" 2>"$WORK/err") || {
		cat "$WORK/err" >&2
		exit 1
	}
	echo "$out" | awk '{printf "%.4f %.4f %d\n", $1, $3, $4 / 1024}'
}

ratio() { echo "scale=2; $1 / $2" | bc; }

# --- 1. Debian 3-layer image -------------------------------------------
LAYERS_DIR="$ROOT/_output/images/layers"
if [ -f "$LAYERS_DIR/1-rootfs.tar" ] && "$WORK/erofsctl" help 2>&1 | grep -q ' convert'; then
	mkdir -p "$WORK/deb" "$WORK/merged"
	set --
	for t in 1-rootfs 2-packages 3-changes; do
		"$WORK/erofsctl" convert -o "$WORK/deb/$t.erofs" "$LAYERS_DIR/$t.tar" >/dev/null
		set -- "$@" "$WORK/deb/$t.erofs"
		# The comparator's input: the merged tree on disk. Apply the layer's
		# whiteouts to what is below, then extract it over the result.
		tar -tf "$LAYERS_DIR/$t.tar" | grep '\.wh\.' | while read -r wh; do
			d=$(dirname "$wh") b=$(basename "$wh")
			if [ "$b" = ".wh..wh..opq" ]; then
				find "$WORK/merged/$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
			else
				rm -rf "${WORK:?}/merged/$d/${b#.wh.}"
			fi
		done
		# A name changing between dir and non-dir: remove the lower one
		# (tar would refuse), as overlayfs hides it.
		tar -tf "$LAYERS_DIR/$t.tar" | while read -r n; do
			m="$WORK/merged/${n%/}"
			case "$n" in
			*/) if [ -e "$m" ] || [ -L "$m" ]; then [ -d "$m" ] && [ ! -L "$m" ] || rm -f "$m"; fi ;;
			*) if [ -d "$m" ] && [ ! -L "$m" ]; then rm -rf "$m"; fi ;;
			esac
		done
		tar -xpf "$LAYERS_DIR/$t.tar" -C "$WORK/merged" \
			--exclude='.wh.*' --xattrs --xattrs-include='*' --numeric-owner
	done
	read -r ours ours_cpu ours_rss <<-END
		$(measure "$WORK/erofsctl" merge -o "$WORK/deb/fsmeta.erofs" "$@")
	END
	read -r vmdk vmdk_cpu vmdk_rss <<-END
		$(measure "$WORK/erofsctl" merge -o "$WORK/deb/fsmeta.erofs" --vmdk "$WORK/deb/merged.vmdk" "$@")
	END
	read -r mkfs mkfs_cpu mkfs_rss <<-END
		$(measure mkfs.erofs --quiet "$WORK/deb/full.erofs" "$WORK/merged")
	END
	fsz=$(stat -c %s "$WORK/deb/fsmeta.erofs")
	msz=$(stat -c %s "$WORK/deb/full.erofs")
	echo "### fsmeta: Debian 3-layer test image (best of 3)"
	echo
	echo "| tool | what it builds | wall (s) | CPU (s) | peak RSS (MiB) | output (bytes) | wall vs ours | CPU vs ours |"
	echo "|---|---|---|---|---|---|---|---|"
	echo "| erofsctl merge | fsmeta over 3 layers | $ours | $ours_cpu | $ours_rss | $fsz | 1.00 | 1.00 |"
	echo "| erofsctl merge --vmdk | fsmeta + merged.vmdk | $vmdk | $vmdk_cpu | $vmdk_rss | $fsz | $(ratio "$vmdk" "$ours") | $(ratio "$vmdk_cpu" "$ours_cpu") |"
	echo "| mkfs.erofs $(dpkg-query -W -f='${Version}' erofs-utils 2>/dev/null || echo '?') (no --aufs in this version) | full image of the merged tree | $mkfs | $mkfs_cpu | $mkfs_rss | $msz | $(ratio "$mkfs" "$ours") | $(ratio "$mkfs_cpu" "$ours_cpu") |"
	echo
	rm -rf "$WORK/merged" "$WORK/deb"
else
	echo "### fsmeta: Debian 3-layer test image: SKIPPED (needs _output/images/layers from \`make test-image\` and \`erofsctl convert\`)"
	echo
fi

# --- 2. Scaling ------------------------------------------------------------
if [ "$QUICK" = --quick ]; then
	CASES="16:100000 128:100000"
else
	CASES="16:100000 64:100000 128:100000 500:100000 16:1000000 64:1000000 128:1000000 500:1000000"
fi
echo "### fsmeta: scaling (synthetic layers, every dir in every layer; best of 3)"
echo
echo "| layers | input entries | merged entries | wall (s) | CPU (s) | CPU µs/input entry | peak RSS (MiB) | RSS bytes/merged entry | fsmeta (MiB) |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in $CASES; do
	n=${c%%:*} e=${c##*:}
	rm -rf "$WORK/gen" && mkdir -p "$WORK/gen"
	FSMETA_GEN_DIR="$WORK/gen" FSMETA_GEN_LAYERS=$n FSMETA_GEN_ENTRIES=$e \
		"$WORK/erofs.test" -test.run '^TestFSMetaGenerateLayers$' >/dev/null
	read -r s cpu rss <<-END
		$(measure "$WORK/erofsctl" merge -o "$WORK/fsmeta.erofs" "$WORK"/gen/layer*.erofs)
	END
	merged=$("$WORK/erofsctl" merge -o "$WORK/fsmeta.erofs" "$WORK"/gen/layer*.erofs | sed -n 's/.* \([0-9]*\) entries.*/\1/p')
	sz=$(stat -c %s "$WORK/fsmeta.erofs")
	echo "| $n | $e | $merged | $s | $cpu | $(echo "scale=2; $cpu * 1000000 / $e" | bc) | $rss | $((rss * 1048576 / merged)) | $((sz / 1048576)) |"
done
