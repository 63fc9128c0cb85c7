package testmount

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestErofsMountsAndCleansUp mounts an image mkfs.erofs made, reads a file
// through the kernel, and checks that the mount and its loop device are
// gone once the subtest's cleanups ran.
func TestErofsMountsAndCleansUp(t *testing.T) {
	RequireRoot(t)
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("mkfs.erofs not installed")
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("from the kernel\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img.erofs")
	Run(t, "mkfs.erofs", "--quiet", img, src)

	var mnt string
	t.Run("mount", func(t *testing.T) {
		mnt = Erofs(t, img)
		b, err := os.ReadFile(filepath.Join(mnt, "hello"))
		if err != nil || string(b) != "from the kernel\n" {
			t.Fatalf("read through the mount: %q, %v", b, err)
		}
	})
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if mnt == "" || strings.Contains(string(mounts), " "+mnt+" ") {
		t.Fatalf("mount point %q still mounted after cleanup", mnt)
	}
	if out := Run(t, "losetup", "-j", img); strings.TrimSpace(out) != "" {
		t.Fatalf("loop device still attached to %s after cleanup: %s", img, out)
	}
}
