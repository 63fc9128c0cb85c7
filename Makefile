# containerd-erofs: containerd with the erofs-vm snapshotter and differ.
#
#   make demo    install deps, build, build assets, run hack/demo.sh
#   make test    install deps, build, build assets, run every Go test
#
# Every target that runs a script of hack/ fails with a clear message if the
# script is not there (yet): nothing is skipped silently.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# Go lives in /usr/local/go on the machines we target; appended, so a go
# already on PATH wins. Exported: tests that build binaries run `go` too.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CONFDIR ?= /etc/containerd-erofs
UNITDIR ?= /etc/systemd/system

# Version stamping. containerd's version package is what `--version`, the
# version service and `ctr version` report, so our identity goes there:
# Package is this module, Version ours plus the containerd it embeds (read
# from go.mod, so it can never drift from what is linked in).
MODULE := github.com/erofs-vm/containerd-erofs
CONTAINERD_MODULE := github.com/containerd/containerd/v2
CONTAINERD_VERSION := $(shell $(GO) list -m -f '{{.Version}}' $(CONTAINERD_MODULE) 2>/dev/null)
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo 0.1.0-dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --no-ext-diff --quiet HEAD -- 2>/dev/null || echo .m)
VERSION_PKG := $(CONTAINERD_MODULE)/version

LDFLAGS := -X '$(VERSION_PKG).Package=$(MODULE)' \
	-X '$(VERSION_PKG).Version=$(VERSION) (containerd $(CONTAINERD_VERSION))' \
	-X '$(VERSION_PKG).Revision=$(REVISION)'
# The version is stamped above, so Go's own VCS stamping adds nothing and
# only fails in a checkout owned by another user ("dubious ownership").
BUILDFLAGS ?= -buildvcs=false
# ctr is containerd's own client at the go.mod version: stamp it as that.
CTR_LDFLAGS := -X '$(VERSION_PKG).Version=$(CONTAINERD_VERSION)'

# Tests: one package at a time (they share 2 cores, loop devices, memory
# and qemu TCG guests; packages side by side only make each slower and
# push guest boots towards their timeouts), never cached (they judge the kernel and the
# host tools, not only our code), and a timeout well past the slowest
# package (guest boots under TCG) so a hang fails instead of blocking CI.
TEST_TIMEOUT ?= 60m
TESTFLAGS ?= -p 1 -count=1 -timeout $(TEST_TIMEOUT)
TEST_PKGS ?= ./...
TEST_LOG := _output/test.log

# staticcheck pinned (2026.2.2, the newest release when pinned; it handles
# Go 1.26), so lint results do not change under our feet.
STATICCHECK_VERSION := v0.8.2

# run-script runs a hack/ script, or fails saying which one is missing.
define run-script
	@if [[ ! -f $(1) ]]; then \
		echo "make: $(1) is missing: it has not been written yet (target '$@')" >&2; \
		exit 1; \
	fi
	bash $(1)
endef

.PHONY: all build binaries deps guest test-image assets test stress bench demo lint install clean distclean version

all: build

## build: bin/containerd-erofs, bin/ctr (containerd's, go.mod version), bin/erofsctl
build: binaries

binaries:
	@if [[ -z "$(CONTAINERD_VERSION)" ]]; then \
		echo "make: cannot read the containerd version from go.mod ($(GO) list -m $(CONTAINERD_MODULE) failed)" >&2; \
		exit 1; \
	fi
	@mkdir -p bin
	$(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o bin/containerd-erofs ./cmd/containerd-erofs
	$(GO) build $(BUILDFLAGS) -ldflags "$(CTR_LDFLAGS)" -o bin/ctr $(CONTAINERD_MODULE)/cmd/ctr
	$(GO) build $(BUILDFLAGS) -o bin/erofsctl ./cmd/erofsctl
	@# go build leaves an up-to-date binary untouched; the integration
	@# helper trusts bin/ only when it is newer than every source.
	@touch bin/containerd-erofs bin/ctr bin/erofsctl

version:
	@echo "$(VERSION) (containerd $(CONTAINERD_VERSION)) $(REVISION)"

## deps: system packages and the Go toolchain check (Debian bookworm, root)
deps:
	$(call run-script,hack/install-deps.sh)

## guest: _output/guest/{vmlinuz,initramfs.cpio.gz}
guest:
	$(call run-script,hack/build-guest.sh)

## test-image: _output/images/ (layer tars and OCI archives)
test-image:
	$(call run-script,hack/build-test-image.sh)

assets: guest test-image

## test: everything, assets required (a missing asset fails instead of skipping)
test: deps build assets
	@mkdir -p $(dir $(TEST_LOG))
	@status=0; \
	EROFS_REQUIRE_ASSETS=1 $(GO) test $(TESTFLAGS) $(TEST_PKGS) 2>&1 | tee $(TEST_LOG) || status=$$?; \
	echo; \
	echo "== go test summary (full log: $(TEST_LOG))"; \
	grep -E '^(ok  |FAIL|--- FAIL|panic: )' $(TEST_LOG) || true; \
	if [[ $$status -eq 0 ]]; then echo "== PASS"; else echo "== FAIL (go test exit status $$status)"; fi; \
	exit $$status

## stress: the long crash-consistency run (EROFS_STRESS=1: 400 SIGKILLs
## of the daemon during unpack, commit, remove and GC; seed in the log)
STRESS_LOG := _output/stress.log
stress: build test-image
	@mkdir -p $(dir $(STRESS_LOG))
	EROFS_STRESS=1 EROFS_REQUIRE_ASSETS=1 $(GO) test -count=1 -timeout 240m -run '^TestCrashConsistency$$' -v ./integration/ 2>&1 | tee $(STRESS_LOG)

## bench: every hack/bench/*.sh, then hack/bench/report.sh if present.
## Each script's stdout is also saved in $(BENCH_OUT)/<script>.md (plus
## <script>.failed if it fails) for report.sh, which writes BENCHMARKS.md.
## A failing script does not stop the others; the target fails at the end.
BENCH_OUT := _output/bench
bench: build assets
	@shopt -s nullglob; \
	rm -rf $(BENCH_OUT); mkdir -p $(BENCH_OUT); \
	scripts=(hack/bench/*.sh); \
	ran=0; failed=(); \
	for s in "$${scripts[@]}"; do \
		[[ $$(basename "$$s") == report.sh ]] && continue; \
		echo "== $$s"; \
		out=$(BENCH_OUT)/$$(basename "$$s" .sh).md; \
		bash "$$s" | tee "$$out" || { failed+=("$$s"); touch "$${out%.md}.failed"; }; \
		ran=$$((ran + 1)); \
	done; \
	if [[ $$ran -eq 0 ]]; then echo "make: no benchmark scripts in hack/bench/" >&2; exit 1; fi; \
	if [[ -f hack/bench/report.sh ]]; then echo "== hack/bench/report.sh"; BENCH_RESULTS=$(BENCH_OUT) bash hack/bench/report.sh || failed+=(hack/bench/report.sh); fi; \
	if [[ $${#failed[@]} -gt 0 ]]; then echo "make: failed: $${failed[*]}" >&2; exit 1; fi

## demo: install deps, build, build assets, run hack/demo.sh
demo: deps build assets
	$(call run-script,hack/demo.sh)

## lint: gofmt, go vet, staticcheck (pinned)
lint:
	@out=$$(find . -name '*.go' -not -path './_output/*' -not -path './.git/*' -print0 | xargs -0 gofmt -l); \
	if [[ -n "$$out" ]]; then echo "gofmt -l: these files need gofmt:" >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

## install: binaries to $(BINDIR), config (if absent), systemd unit
install:
	@for b in containerd-erofs ctr erofsctl; do \
		[[ -x bin/$$b ]] || { echo "make: bin/$$b missing: run 'make build' first" >&2; exit 1; }; \
	done
	install -D -m 0755 bin/containerd-erofs $(DESTDIR)$(BINDIR)/containerd-erofs
	install -D -m 0755 bin/ctr $(DESTDIR)$(BINDIR)/ctr
	install -D -m 0755 bin/erofsctl $(DESTDIR)$(BINDIR)/erofsctl
	@if [[ -e $(DESTDIR)$(CONFDIR)/config.toml ]]; then \
		echo "keeping existing $(DESTDIR)$(CONFDIR)/config.toml"; \
	else \
		install -D -m 0644 hack/config.toml $(DESTDIR)$(CONFDIR)/config.toml; \
		echo "installed $(DESTDIR)$(CONFDIR)/config.toml"; \
	fi
	install -D -m 0644 hack/containerd-erofs.service $(DESTDIR)$(UNITDIR)/containerd-erofs.service
	@if [[ -z "$(DESTDIR)" && -d /run/systemd/system ]]; then systemctl daemon-reload; fi
	@echo "start it with: systemctl enable --now containerd-erofs"

## clean: build outputs (bin/). distclean also drops _output/ (guest, images)
clean:
	rm -rf bin

distclean: clean
	rm -rf _output
