#!/usr/bin/env bash
# Deep images: unpack of a Debian rootfs plus N-1 small layers (N = 3, 32,
# 128) with erofs-vm vs overlayfs + walking in the same daemon, and the
# first Prepare of a container on each (where erofs-vm builds the merged
# disk since it stopped building one per Commit; docs/design.md §4).
# Timed with Go's clock around each call (hack/bench/deep). Needs root,
# `make build` and `make test-image`.
#
#   hack/bench/deep.sh [runs]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) == 0 ]] || { echo "bench/deep: must run as root" >&2; exit 1; }
[[ -x bin/containerd-erofs ]] || { echo "bench/deep: bin/containerd-erofs missing: run make build" >&2; exit 1; }
go run ./hack/bench/deep -runs "${1:-3}"
