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

# measure CMD...: runs CMD 3 times, prints "best_seconds max_rss_MiB".
measure() {
	best=""
	rss=0
	for _ in 1 2 3; do
		/usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err" || {
			cat "$WORK/err" >&2
			exit 1
		}
		read -r s kb <"$WORK/time"
		if [ -z "$best" ] || [ "$(echo "$s < $best" | bc)" = 1 ]; then best=$s; fi
		if [ "$kb" -gt "$rss" ]; then rss=$kb; fi
	done
	echo "$best $((rss / 1024))"
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
		# The comparator's input: the merged tree on disk, whiteouts applied.
		mkdir -p "$WORK/x"
		tar -xpf "$LAYERS_DIR/$t.tar" -C "$WORK/x" --xattrs --xattrs-include='*' 2>/dev/null || true
		(cd "$WORK/x" && find . -name '.wh.*' | while read -r wh; do
			d=$(dirname "$wh") b=$(basename "$wh")
			if [ "$b" = ".wh..wh..opq" ]; then
				find "$WORK/merged/$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
			else
				rm -rf "$WORK/merged/$d/${b#.wh.}"
			fi
			rm -f "$wh"
		done)
		cp -a "$WORK/x/." "$WORK/merged/"
		rm -rf "$WORK/x"
	done
	read -r ours ours_rss <<-END
		$(measure "$WORK/erofsctl" merge -o "$WORK/deb/fsmeta.erofs" "$@")
	END
	read -r vmdk vmdk_rss <<-END
		$(measure "$WORK/erofsctl" merge -o "$WORK/deb/fsmeta.erofs" --vmdk "$WORK/deb/merged.vmdk" "$@")
	END
	read -r mkfs mkfs_rss <<-END
		$(measure mkfs.erofs --quiet "$WORK/deb/full.erofs" "$WORK/merged")
	END
	fsz=$(stat -c %s "$WORK/deb/fsmeta.erofs")
	msz=$(stat -c %s "$WORK/deb/full.erofs")
	echo "### fsmeta: Debian 3-layer test image (best of 3)"
	echo
	echo "| tool | what it builds | time (s) | peak RSS (MiB) | output (bytes) | time vs ours |"
	echo "|---|---|---|---|---|---|"
	echo "| erofsctl merge | fsmeta over 3 layers | $ours | $ours_rss | $fsz | 1.00 |"
	echo "| erofsctl merge --vmdk | fsmeta + merged.vmdk | $vmdk | $vmdk_rss | $fsz | $(ratio "$vmdk" "$ours") |"
	echo "| mkfs.erofs 1.5 (no --aufs) | full image of the merged tree | $mkfs | $mkfs_rss | $msz | $(ratio "$mkfs" "$ours") |"
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
echo "| layers | entries (merged) | time (s) | µs/entry | peak RSS (MiB) | RSS bytes/entry | fsmeta (MiB) |"
echo "|---|---|---|---|---|---|---|"
for c in $CASES; do
	n=${c%%:*} e=${c##*:}
	rm -rf "$WORK/gen" && mkdir -p "$WORK/gen"
	FSMETA_GEN_DIR="$WORK/gen" FSMETA_GEN_LAYERS=$n FSMETA_GEN_ENTRIES=$e \
		"$WORK/erofs.test" -test.run '^TestFSMetaGenerateLayers$' >/dev/null
	read -r s rss <<-END
		$(measure "$WORK/erofsctl" merge -o "$WORK/fsmeta.erofs" "$WORK"/gen/layer*.erofs)
	END
	merged=$("$WORK/erofsctl" merge -o "$WORK/fsmeta.erofs" "$WORK"/gen/layer*.erofs | sed -n 's/.* \([0-9]*\) entries.*/\1/p')
	sz=$(stat -c %s "$WORK/fsmeta.erofs")
	echo "| $n | $merged | $s | $(echo "scale=2; $s * 1000000 / $merged" | bc) | $rss | $((rss * 1048576 / merged)) | $((sz / 1048576)) |"
done
