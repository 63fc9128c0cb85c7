package erofs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Kernel-oracle helpers: the Linux EROFS driver and fsck.erofs judge the
// images this package writes.

// requireRoot skips when the kernel cannot be asked (not root, no loop or
// erofs): on the project's machines these tests must run.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount EROFS images")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
}

// losetup attaches path read-only to a free loop device, detached at cleanup.
func losetup(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", path).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", path, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// mountImage loop-mounts image read-only (with extra devices, each through
// its own loop device) under a temp dir and returns the mount point; it is
// unmounted at cleanup, even when the test fails.
func mountImage(t testing.TB, image string, devices ...string) string {
	t.Helper()
	requireRoot(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "ro"
	for _, d := range devices {
		opts += ",device=" + losetup(t, d)
	}
	dev := losetup(t, image)
	if out, err := exec.Command("mount", "-t", "erofs", "-o", opts, dev, mnt).CombinedOutput(); err != nil {
		dmesg, _ := exec.Command("sh", "-c", "dmesg | tail -5").Output()
		t.Fatalf("mount %s: %v: %s\ndmesg:\n%s", image, err, out, dmesg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

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
