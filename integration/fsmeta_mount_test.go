package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofs-vm/containerd-erofs/integration/guest"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// Host helpers for the fsmeta views: loop devices, mounts, tools. Every
// resource is released in t.Cleanup, also when the test fails.

// fsmetaRequireHost skips when the test cannot run here (not root, no tool) and
// fails instead under EROFS_REQUIRE_ASSETS=1, where everything must run.
func fsmetaRequireHost(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ")
	if os.Getenv("EROFS_REQUIRE_ASSETS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// fsmetaAsset returns the path of a built test asset, or skips (fails under
// EROFS_REQUIRE_ASSETS=1) naming the make target that builds it.
func fsmetaAsset(t *testing.T, rel, target string) string {
	t.Helper()
	root, err := guest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "_output", rel)
	if _, err := os.Stat(p); err != nil {
		msg := p + " missing: run `make " + target + "`"
		if os.Getenv("EROFS_REQUIRE_ASSETS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// fsmetaMount mounts src on a new dir under base and unmounts it at cleanup.
func fsmetaMount(t testing.TB, base, name, fstype, src string, opts ...string) string {
	t.Helper()
	dir := filepath.Join(base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	o := strings.Join(append([]string{"ro"}, opts...), ",")
	testmount.Run(t, "mount", "-t", fstype, "-o", o, src, dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
