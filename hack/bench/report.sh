#!/usr/bin/env bash
# Regenerates BENCHMARKS.md and BENCHMARKS.svg from the last `make bench`.
#
# `make bench` runs every other hack/bench/*.sh and saves what each printed
# on stdout in _output/bench/<script>.md (and touches <script>.failed when
# it exits non-zero; a hand-written <script>.note is quoted under the
# script's heading, e.g. to say it was rerun alone), then runs this script, which does not run any
# benchmark itself: it assembles those outputs with a description of the
# machine (nproc, CPU model, memory, kernel, userland, date, load) and the
# command, and draws the plots (hack/bench/report, Go, hand-written SVG).
#
# The convention a benchmark script follows:
#
#   * stdout is markdown: optional `###` headings, text and tables, copied
#     into BENCHMARKS.md under the script's own section as printed; progress
#     and logs go to stderr.
#   * machine-readable numbers are lines of their own on stdout:
#
#         BENCH <series> <key>=<value> [<key>=<value>...]
#
#     values without spaces, numbers in plain decimal (units in the key name:
#     _s, _ms, _mib). They are removed from the markdown and feed the plots.
#     Series read today:
#
#         BENCH unpack image=<archive> inflater=<igzip|go-gzip|none> erofs_vm_s=<s> overlayfs_s=<s>
#         BENCH fsmeta-scaling layers=<n> entries=<n> wall_s=<s> rss_mib=<MiB>
#
#     Without BENCH lines the plots fall back to the script's markdown
#     tables, found by column header ("erofs-vm unpack" and
#     "overlayfs+walking unpack"; "layers", "input entries", "wall (s)" and
#     "peak RSS (MiB)"), so renaming those columns needs BENCH lines.
#
#   hack/bench/report.sh              (BENCH_RESULTS=_output/bench by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

results=${BENCH_RESULTS:-_output/bench}
shopt -s nullglob
outs=("$results"/*.md)
if [[ ${#outs[@]} -eq 0 ]]; then
	echo "report.sh: no benchmark outputs in $results/: run 'make bench' (it saves each script's output there)" >&2
	exit 1
fi
go run -buildvcs=false ./hack/bench/report --results "$results" --out BENCHMARKS.md --svg BENCHMARKS.svg \
	--command "${BENCH_COMMAND:-make bench}"
