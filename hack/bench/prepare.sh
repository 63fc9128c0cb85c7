#!/usr/bin/env bash
# Prepare latency of a writable snapshot over a 3- and a 64-layer parent:
# erofs-vm (block mode, ext4 rwlayer.img) and containerd's overlayfs
# snapshotter, in the same run, plus the ways to make the ext4 writable layer
# and the cost of an extract Commit (layer check, record; its merged disk is
# built at the first use instead, see deep.sh) by stack depth.
# Drives BenchmarkPrepare, BenchmarkRWLayer and BenchmarkCommit in
# ./snapshotter and prints markdown tables with ratios. Needs root (loop
# devices, mounts).
#
#   hack/bench/prepare.sh [iterations]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-200}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test ./snapshotter -run '^$' -bench '^(BenchmarkPrepare|BenchmarkRWLayer|BenchmarkCommit)$' \
	-benchtime="${n}x" -count=1 -timeout 60m | grep '^Benchmark' | tee "$out" >&2

echo
echo "### Prepare of a writable snapshot ($n runs each, alternating call by call, ms)"
echo
echo "| parent layers | erofs-vm p50 | overlayfs p50 | ratio p50 | erofs-vm p99 | overlayfs p99 | ratio p99 |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
awk '
/^BenchmarkPrepare\// {
	split($1, a, "/"); l = a[2]; sub("layers=", "", l); sub(/-[0-9]+$/, "", l)
	for (i = 2; i <= NF; i++) v[$i] = $(i-1)
	e50 = v["erofs-vm-p50-ms"]; o50 = v["overlayfs-p50-ms"]; e99 = v["erofs-vm-p99-ms"]; o99 = v["overlayfs-p99-ms"]
	printf "| %s | %.2f | %.2f | %.1f× | %.2f | %.2f | %.1f× |\n", l, e50, o50, (o50 > 0 ? e50 / o50 : 0), e99, o99, (o99 > 0 ? e99 / o99 : 0)
}' "$out"

echo
echo "### Making the 1 GiB ext4 writable layer ($n runs each, ms; fsync and rename included)"
echo
echo "| method | p50 | p99 | allocated MiB | p50 vs snapshotter's |"
echo "|---|---:|---:|---:|---:|"
awk '
/^BenchmarkRWLayer\// {
	split($1, a, "/"); m = a[2]; sub("method=", "", m); sub(/-[0-9]+$/, "", m)
	for (i = 2; i <= NF; i++) { if ($i == "p50-ms") p50[m] = $(i-1); if ($i == "p99-ms") p99[m] = $(i-1); if ($i == "alloc-MiB") al[m] = $(i-1) }
	ms[++n] = m
}
END {
	base = p50["template-copy+uuid"]
	for (k = 1; k <= n; k++) { m = ms[k]; printf "| %s | %.2f | %.2f | %.2f | %.1f× |\n", m, p50[m], p99[m], al[m], (base > 0 ? p50[m] / base : 0) }
}' "$out"

echo
echo "### Commit of an extract snapshot: layer check, chattr +i, record; no merged disk, which the first use builds ($n runs each, ms)"
echo
echo "| layers below | p50 | p99 |"
echo "|---:|---:|---:|"
awk '
/^BenchmarkCommit\// {
	split($1, a, "/"); l = a[2]; sub("layers=", "", l)
	for (i = 2; i <= NF; i++) { if ($i == "p50-ms") p50 = $(i-1); if ($i == "p99-ms") p99 = $(i-1) }
	printf "| %s | %.2f | %.2f |\n", l, p50, p99
}' "$out"
