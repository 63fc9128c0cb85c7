package guest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildHint is how to build the guest assets, quoted in skip and error messages.
const BuildHint = "run `make guest` (hack/build-guest.sh)"

// RequireAssetsEnv, when "1", turns a missing asset into a test failure
// instead of a skip (`make test` sets it).
const RequireAssetsEnv = "EROFS_REQUIRE_ASSETS"

// Assets are the guest kernel and base initramfs.
type Assets struct {
	Kernel    string // _output/guest/vmlinuz
	Initramfs string // _output/guest/initramfs.cpio.gz
}

// RepoRoot returns the directory holding the module's go.mod, found by
// walking up from the working directory (a test runs in its package dir).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FindAssets locates the guest assets under <repo root>/_output/guest, or
// under $EROFS_GUEST_DIR when set. The error says how to build them.
func FindAssets() (Assets, error) {
	dir := os.Getenv("EROFS_GUEST_DIR")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return Assets{}, err
		}
		dir = filepath.Join(root, "_output", "guest")
	}
	a := Assets{Kernel: filepath.Join(dir, "vmlinuz"), Initramfs: filepath.Join(dir, "initramfs.cpio.gz")}
	for _, p := range []string{a.Kernel, a.Initramfs} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			return Assets{}, fmt.Errorf("guest asset %s missing: %s", p, BuildHint)
		}
	}
	return a, nil
}

// RequireAssets returns the guest assets and a qemu binary, or skips tb
// (fails it when EROFS_REQUIRE_ASSETS=1) naming what to build or install.
func RequireAssets(tb testing.TB) Assets {
	tb.Helper()
	a, err := FindAssets()
	if err == nil {
		_, err = exec.LookPath(QEMU)
		if err != nil {
			err = fmt.Errorf("%s not installed (apt-get install qemu-system-x86): %w", QEMU, err)
		}
	}
	if err != nil {
		if os.Getenv(RequireAssetsEnv) == "1" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	return a
}
