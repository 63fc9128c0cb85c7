#!/usr/bin/env bash
# Unpack time of the 3-layer Debian test image: erofs-vm (snapshotter +
# differ) vs overlayfs + walking, in the same daemon, in one run.
#
# As docs/design.md §10 measured it: every run imports the image into a fresh
# namespace with the content already present (a warm-up import put it
# there), once with `ctr images import --snapshotter X` and once with
# `--no-unpack`; unpack = the difference. Runs alternate between the
# snapshotters; the best of N (default 3) counts. Each archive is measured
# with the daemon as configured (igzip on PATH) and again in a second daemon
# with CONTAINERD_DISABLE_IGZIP=1 (Go's gzip), the gzip fallback both
# differs share. Needs root and `make build test-image` (bin/, _output/images).
#
#   hack/bench/unpack.sh [runs]   (default 5: overlayfs's unpack alone swings
#                                  by 2-3x from run to run on this machine kind)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
runs=${1:-5}

log() { printf '[bench/unpack] %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { log "must run as root"; exit 1; }

images=(debian-3layer.oci.tar debian-3layer-zstd.oci.tar)
for a in "${images[@]}"; do
	[[ -f _output/images/$a ]] || { log "_output/images/$a missing: run make test-image"; exit 1; }
done

bindir=$REPO/bin
if [[ ! -x $bindir/containerd-erofs || ! -x $bindir/ctr ]]; then
	bindir=$REPO/_output/bench-bin
	log "no bin/ (make build): building into $bindir"
	mkdir -p "$bindir"
	go build -o "$bindir/containerd-erofs" ./cmd/containerd-erofs
	go build -o "$bindir/ctr" github.com/containerd/containerd/v2/cmd/ctr
fi

work=$(mktemp -d /tmp/bench-unpack.XXXXXX)
pid=
stop_daemon() {
	if [[ -n $pid ]]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
cleanup() {
	stop_daemon
	# Mounts the daemon left (mount manager) and immutable layer files.
	# || true: grep finds nothing when nothing is mounted, and under
	# pipefail + set -e that would end cleanup here, leaving $work behind.
	{ grep -o " $work[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	chattr -R -f -i "$work" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# start_daemon DIR [ENV...]: containerd-erofs on the example config, private root.
start_daemon() {
	local dir=$1
	shift
	mkdir -p "$dir"
	sed '/^version/a\
[plugins."io.containerd.nri.v1.nri"]\
  socket_path = "'"$dir"'/nri.sock"' hack/config.toml >"$dir/config.toml"
	env "$@" "$bindir/containerd-erofs" --config "$dir/config.toml" --root "$dir/root" \
		--state "$dir/state" --address "$dir/c.sock" --log-level debug >"$dir/log" 2>&1 &
	pid=$!
	for _ in $(seq 300); do
		if "$bindir/ctr" --address "$dir/c.sock" version >/dev/null 2>&1; then return; fi
		kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/log" >&2; log "daemon died"; exit 1; }
		sleep 0.1
	done
	log "daemon did not come up"; exit 1
}

ctr() { "$bindir/ctr" --address "$sock" "$@" 2> >(grep -v DEPRECATION >&2); }

# daemon_cpu: CPU seconds the daemon and its reaped children (igzip,
# unpigz) used so far: utime+stime+cutime+cstime of /proc/PID/stat.
tck=$(getconf CLK_TCK)
daemon_cpu() {
	awk -v t="$tck" '{ sub(/^.*\) /, ""); print ($12 + $13 + $14 + $15) / t }' "/proc/$pid/stat"
}

# timed CMD...: runs CMD, prints "wall-seconds daemon-cpu-seconds". The
# CPU figure does not depend on how busy the host is; wall time does.
timed() {
	local t0 t1 c0 c1
	c0=$(daemon_cpu)
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	c1=$(daemon_cpu)
	echo "$(echo "$t1 - $t0" | bc) $(echo "$c1 - $c0" | bc)"
}

results=$work/results
: >"$results"
# The unpacker's own figure: containerd logs `image unpacked` with the
# duration of the whole unpack (Prepare, Apply, Commit of every layer) at
# debug level. It leaves out the import around it, whose own run-to-run
# noise (±0.1 s) the import difference above carries, so both are shown.
unpacker=$work/unpacker
: >"$unpacker"

# unpacked_seconds LOG: the duration of the last `image unpacked` in LOG,
# in seconds (Go duration syntax: 1m2.5s, 1.2s, 858.9ms, 950µs).
unpacked_seconds() {
	grep 'msg="image unpacked"' "$1" | tail -1 | grep -o 'duration=[^ ]*' | cut -d= -f2 | awk '
	{
		d = $0; t = 0
		if (match(d, /^[0-9.]+m[^s]/)) { t += substr(d, 1, index(d, "m") - 1) * 60; d = substr(d, index(d, "m") + 1) }
		if (d ~ /ms$/) t += substr(d, 1, length(d) - 2) / 1000
		else if (d ~ /µs$/) t += substr(d, 1, length(d) - 3) / 1e6
		else if (d ~ /s$/) t += substr(d, 1, length(d) - 1)
		printf "%.3f\n", t
	}'
}
ns=0
measure() { # label "archives..." env...
	local label=$1 archives=$2
	shift 2
	local dir=$work/d$((++ns))
	start_daemon "$dir" "$@"
	sock=$dir/c.sock
	for a in $archives; do
		ctr -n warmup images import --no-unpack "_output/images/$a" >/dev/null
		for r in $(seq "$runs"); do
			order=(erofs-vm overlayfs)
			((r % 2 == 0)) && order=(overlayfs erofs-vm)
			for sn in "${order[@]}"; do
				total=$(timed ctr -n "u-$sn-$r-$ns-${a%%.*}" images import --snapshotter "$sn" "_output/images/$a")
				base=$(timed ctr -n "n-$sn-$r-$ns-${a%%.*}" images import --no-unpack "_output/images/$a")
				echo "$label $a $sn $r $total $base" >>"$results"
				echo "$label $a $sn $r $(unpacked_seconds "$dir/log")" >>"$unpacker"
				log "$label $a $sn run $r: import $total, --no-unpack $base (wall s, daemon CPU s)"
			done
		done
	done
	stop_daemon
}

measure igzip "${images[*]}"
measure go-gzip "${images[0]}" CONTAINERD_DISABLE_IGZIP=1

echo
echo "### Unpack of the 3-layer Debian image: erofs-vm vs overlayfs + walking (same daemon, runs alternated, best of $runs, s)"
echo
echo "unpack = best \`import --snapshotter X\` − best \`import --no-unpack\` (content already present), wall time;"
echo "unpack CPU = the same for the CPU time of the daemon and the inflaters it ran (robust to a busy host)."
echo
echo "median ratio = the same computed from the medians of the $runs runs instead of the best."
echo
echo "| image | gzip inflater | erofs-vm unpack | overlayfs+walking unpack | ratio | median ratio | erofs-vm unpack CPU | overlayfs unpack CPU | CPU ratio | erofs-vm import | overlayfs import | --no-unpack import |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
# fields: label archive sn run total-wall total-cpu base-wall base-cpu
awk '
function min(a, k, v) { if (!(k in a) || v < a[k]) a[k] = v }
# add(k, v) keeps every value of key k, for median(k).
function add(k, v) { vals[k, ++cnt[k]] = v }
function median(k,    i, j, m, t, s) {
	m = cnt[k]
	for (i = 1; i <= m; i++) s[i] = vals[k, i]
	for (i = 2; i <= m; i++) for (j = i; j > 1 && s[j - 1] > s[j]; j--) { t = s[j]; s[j] = s[j - 1]; s[j - 1] = t }
	return (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
}
{
	k = $1 SUBSEP $2 SUBSEP $3; kb = $1 SUBSEP $2
	min(tot, k, $5); min(cpu, k, $6); min(nou, kb, $7); min(noucpu, kb, $8)
	add("t" SUBSEP k, $5); add("n" SUBSEP kb, $7)
	if (!(kb in seen)) { seen[kb] = 1; order[++n] = kb }
}
END {
	for (i = 1; i <= n; i++) {
		split(order[i], p, SUBSEP)
		kb = p[1] SUBSEP p[2]; ke = kb SUBSEP "erofs-vm"; ko = kb SUBSEP "overlayfs"
		# Rounded as printed, so the ratio here and the one report.sh
		# plots from the BENCH line agree.
		e = sprintf("%.2f", tot[ke] - nou[kb]) + 0; o = sprintf("%.2f", tot[ko] - nou[kb]) + 0
		ec = cpu[ke] - noucpu[kb]; oc = cpu[ko] - noucpu[kb]
		mn = median("n" SUBSEP kb); me = median("t" SUBSEP ke) - mn; mo = median("t" SUBSEP ko) - mn
		inf = (p[2] ~ /zstd/) ? "n/a (zstd)" : p[1]
		printf "| %s | %s | %.2f | %.2f | %.2f× | %.2f× | %.2f | %.2f | %.2f× | %.2f | %.2f | %.2f |\n", p[2], inf, e, o, (o > 0 ? e / o : 0), (mo > 0 ? me / mo : 0), ec, oc, (oc > 0 ? ec / oc : 0), tot[ke], tot[ko], nou[kb]
		bench[i] = sprintf("BENCH unpack image=%s inflater=%s erofs_vm_s=%.2f overlayfs_s=%.2f erofs_vm_cpu_s=%.2f overlayfs_cpu_s=%.2f", p[2], (p[2] ~ /zstd/) ? "none" : p[1], e, o, ec, oc)
	}
	# Machine-readable lines for hack/bench/report.sh (convention documented there).
	for (i = 1; i <= n; i++) print bench[i]
}' "$results"
echo
echo "ratio = erofs-vm unpack / overlayfs+walking unpack (goal ≤ 0.6×). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."

echo
echo "### The same unpacks as containerd's unpacker times them (\`image unpacked\` duration, debug log; s)"
echo
echo "| image | gzip inflater | erofs-vm best | overlayfs best | ratio | erofs-vm median | overlayfs median | median ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
awk '
function median(k,    i, j, m, t, s) {
	m = cnt[k]
	for (i = 1; i <= m; i++) s[i] = vals[k, i]
	for (i = 2; i <= m; i++) for (j = i; j > 1 && s[j - 1] > s[j]; j--) { t = s[j]; s[j] = s[j - 1]; s[j - 1] = t }
	return (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
}
NF == 5 {
	k = $1 SUBSEP $2 SUBSEP $3; kb = $1 SUBSEP $2
	vals[k, ++cnt[k]] = $5
	if (!(k in best) || $5 < best[k]) best[k] = $5
	if (!(kb in seen)) { seen[kb] = 1; order[++n] = kb }
}
END {
	for (i = 1; i <= n; i++) {
		split(order[i], p, SUBSEP)
		ke = order[i] SUBSEP "erofs-vm"; ko = order[i] SUBSEP "overlayfs"
		me = median(ke); mo = median(ko)
		printf "| %s | %s | %.2f | %.2f | %.2f× | %.2f | %.2f | %.2f× |\n", p[2], (p[2] ~ /zstd/) ? "n/a (zstd)" : p[1], best[ke], best[ko], (best[ko] > 0 ? best[ke] / best[ko] : 0), me, mo, (mo > 0 ? me / mo : 0)
	}
}' "$unpacker"

# The differs alone, in process, on the 121 MB rootfs layer: no daemon,
# no snapshotter, no gRPC (differ/apply_bench_test.go).
echo
echo "### Apply of the rootfs layer alone, in process (best of $runs, s)"
echo
echo "| blob | erofs-vm Apply | containerd applier (walking) | ratio |"
echo "|---|---:|---:|---:|"
for i in $(seq "$runs"); do
	go test ./differ -run '^$' -bench '^BenchmarkApplyRootfs$' -benchtime 1x -count 1 2>/dev/null | grep '^BenchmarkApplyRootfs/'
done | awk '
{
	split($1, a, "/"); c = a[2]; w = a[3]; sub(/-[0-9]+$/, "", w)
	v = $3 / 1e9
	if (!((c, w) in best) || v < best[c, w]) best[c, w] = v
	if (!(c in seen)) { seen[c] = 1; order[++n] = c }
}
END {
	for (i = 1; i <= n; i++) {
		c = order[i]; e = best[c, "erofs-vm"]; o = best[c, "walking"]
		printf "| %s | %.2f | %.2f | %.2f× |\n", c, e, o, (o > 0 ? e / o : 0)
	}
}'
