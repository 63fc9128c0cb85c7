#!/usr/bin/env bash
# Benchmark: tar -> EROFS conversion by `erofsctl convert` side by side with
# `tar -xf` into tmpfs and mkfs.erofs, on the Debian rootfs layer from page
# cache. Prints a markdown table (best and median of N runs timed by
# hack/bench/timeit in milliseconds: wall time, MB/s of tar input, CPU
# time, peak RSS, ratios to ours).
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
(cd "$root" && go build -o "$work/erofsctl" ./cmd/erofsctl && go build -o "$work/timeit" ./hack/bench/timeit)
cat "$tarfile" >/dev/null # page cache
bytes=$(stat -c %s "$tarfile")

# run NAME SETUP CMD...: n timed runs (hack/bench/timeit: Go's monotonic
# clock for wall time, getrusage for CPU and peak RSS; SETUP runs before
# each run, untimed). Keeps the best wall, the median wall, the best CPU.
declare -A wall med cpu rss
run() {
	local name=$1 setup=$2
	shift 2
	local w m c r
	read -r w m c r _ < <("$work/timeit" -n "$n" -setup "$setup" -- "$@")
	wall[$name]=$w med[$name]=$m cpu[$name]=$c rss[$name]=$r
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
echo "| tool | best wall ms | median wall ms | MB/s (best) | best CPU ms (user+sys) | peak RSS MiB | wall vs ours | CPU vs ours |"
echo "|---|---|---|---|---|---|---|---|"
for t in ours tar mkfs; do
	case $t in
	ours) label="erofsctl convert" ;;
	tar) label="tar -xf into tmpfs" ;;
	mkfs) label="$mkfsnote ($ver)" ;;
	esac
	awk -v l="$label" -v w="${wall[$t]}" -v m="${med[$t]}" -v c="${cpu[$t]}" -v r="${rss[$t]}" -v b="$bytes" -v ow="${wall[ours]}" -v oc="${cpu[ours]}" \
		'BEGIN{printf "| %s | %.1f | %.1f | %.0f | %.1f | %.1f | %.2fx | %.2fx |\n", l, w*1000, m*1000, b/1e6/w, c*1000, r/1024, w/ow, (oc>0?c/oc:0)}'
done
