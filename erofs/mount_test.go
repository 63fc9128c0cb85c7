package erofs

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// Kernel-oracle helpers: the Linux EROFS driver and fsck.erofs judge the
// images this package writes.

// fsck runs fsck.erofs on image (with extra devices), extracting to a temp
// dir, which it returns; it fails the test on any complaint.
func fsck(t testing.TB, image string, devices ...string) string {
	t.Helper()
	if _, err := exec.LookPath("fsck.erofs"); err != nil {
		t.Skip("fsck.erofs not installed (apt-get install erofs-utils)")
	}
	out := filepath.Join(t.TempDir(), "fsck")
	args := []string{"--extract=" + out}
	for _, d := range devices {
		args = append(args, "--device="+d)
	}
	args = append(args, image)
	b, err := exec.Command("fsck.erofs", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.erofs %s: %v:\n%s", image, err, b)
	}
	return out
}
