#!/usr/bin/env bash
# Benchmark: tar -> EROFS conversion by `erofsctl convert` side by side with
# `tar -xf` into tmpfs and mkfs.erofs, on the Debian rootfs layer from page
# cache. Prints a markdown table (best of N: wall time, MB/s of tar input,
# CPU time, peak RSS, ratios to ours).
#
#   hack/bench/convert.sh [TAR] [N]
#
# Outputs go to tmpfs (/dev/shm) so no tool pays for a disk; ours skips its
# fsync there (-no-sync; on tmpfs it would be a no-op anyway). Wall times on
# a shared 2-core box are noisy: CPU time (user+sys) is the steadier number.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
tarfile=${1:-$root/_output/images/layers/1-rootfs.tar}
n=${2:-5}
[[ -f $tarfile ]] || { echo "missing $tarfile: run 'make test-image' (hack/build-test-image.sh)" >&2; exit 1; }

work=$(mktemp -d /dev/shm/bench-convert.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$root" && go build -o "$work/erofsctl" ./cmd/erofsctl)
cat "$tarfile" >/dev/null # page cache
bytes=$(stat -c %s "$tarfile")

# run NAME SETUP CMD...: best-of-n wall, with that run's cpu and rss.
declare -A wall cpu rss
run() {
	local name=$1 setup=$2
	shift 2
	local best="" bcpu="" brss="" i out
	for ((i = 0; i < n; i++)); do
		eval "$setup"
		out=$(/usr/bin/time -f '%e %U %S %M' "$@" 2>&1 >/dev/null | tail -1)
		read -r e u s m <<<"$out"
		if [[ -z $best ]] || awk "BEGIN{exit !($e < $best)}"; then
			best=$e
			bcpu=$(awk "BEGIN{print $u + $s}")
			brss=$m
		fi
	done
	wall[$name]=$best cpu[$name]=$bcpu rss[$name]=$brss
}

run ours "rm -f $work/out.erofs" "$work/erofsctl" convert -no-sync -o "$work/out.erofs" "$tarfile"
run tar "rm -rf $work/x; mkdir $work/x" tar -xf "$tarfile" -C "$work/x"
mkfsnote=""
if mkfs.erofs --help 2>&1 | grep -q -- '--tar'; then
	run mkfs "rm -f $work/mkfs.erofs" mkfs.erofs --quiet --tar=f "$work/mkfs.erofs" "$tarfile"
	mkfsnote="mkfs.erofs --tar=f"
else
	rm -rf "$work/x" && mkdir "$work/x" && tar -xf "$tarfile" -C "$work/x"
	run mkfs "rm -f $work/mkfs.erofs" mkfs.erofs --quiet "$work/mkfs.erofs" "$work/x"
	mkfsnote="mkfs.erofs from the extracted dir (no --tar; extraction not timed)"
fi

ver="erofs-utils $(dpkg-query -W -f='${Version}' erofs-utils 2>/dev/null || echo '?')"
echo "tar->EROFS conversion: $(basename "$tarfile"), $((bytes / 1000000)) MB, best of $n, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| tool | wall s | MB/s | CPU s (user+sys) | peak RSS MiB | wall vs ours | CPU vs ours |"
echo "|---|---|---|---|---|---|---|"
for t in ours tar mkfs; do
	case $t in
	ours) label="erofsctl convert" ;;
	tar) label="tar -xf into tmpfs" ;;
	mkfs) label="$mkfsnote ($ver)" ;;
	esac
	awk -v l="$label" -v w="${wall[$t]}" -v c="${cpu[$t]}" -v r="${rss[$t]}" -v b="$bytes" -v ow="${wall[ours]}" -v oc="${cpu[ours]}" \
		'BEGIN{printf "| %s | %.3f | %.0f | %.3f | %.1f | %.2fx | %.2fx |\n", l, w, b/1e6/w, c, r/1024, w/ow, (oc>0?c/oc:0)}'
done
