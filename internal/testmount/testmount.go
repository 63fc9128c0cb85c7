// Package testmount is how tests ask the Linux kernel to judge an image:
// loop devices and read-only mounts, each undone when the test ends.
//
// Only tests import it. The product never mounts anything on the host
// (docs/design.md §14); snapshotter and differ code that imported this
// package would fail the no-mount test of those packages.
package testmount

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RequireRoot skips t where the kernel cannot be asked: not root, or no
// losetup. On the project's machines (and in `make test`) it never skips.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and kernel mounts")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
}

// Run runs a command with a five-minute timeout and returns its combined
// output; a failure fails t with that output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return RunIn(t, "", name, args...)
}

// RunIn is Run in the working directory dir ("" for the test's own).
func RunIn(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Loop attaches file to a free loop device, read-only unless rw, and
// detaches it at cleanup. Multi-device EROFS mounts need this: the kernel
// takes device= only as block devices, never plain files.
func Loop(t testing.TB, file string, rw bool) string {
	t.Helper()
	RequireRoot(t)
	args := []string{"--find", "--show"}
	if !rw {
		args = append(args, "--read-only")
	}
	dev := strings.TrimSpace(Run(t, "losetup", append(args, file)...))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// Mount mounts src (a block device, or anything the file system type
// takes) with the given options on a new directory under t.TempDir() and
// returns it. It is unmounted at cleanup, before the loop devices attached
// earlier in the test are detached (cleanups run last-in first-out). A
// failed mount fails t with the kernel's last messages, which say why.
func Mount(t testing.TB, fstype, src, opts string) string {
	t.Helper()
	RequireRoot(t)
	dir, err := os.MkdirTemp(t.TempDir(), strings.ReplaceAll(fstype, "/", "-")+"-")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-t", fstype}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	if out, err := exec.Command("mount", append(args, src, dir)...).CombinedOutput(); err != nil {
		dmesg, _ := exec.Command("sh", "-c", "dmesg | tail -n 8").Output()
		t.Fatalf("mount -t %s -o %s %s %s: %v: %s\ndmesg:\n%s", fstype, opts, src, dir, err, out, dmesg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Erofs mounts an EROFS image read-only, each extra device (oldest layer
// first, the order of the image's device table) on its own loop device, and
// returns the mount point.
func Erofs(t testing.TB, image string, devices ...string) string {
	t.Helper()
	opts := []string{"ro"}
	for _, d := range devices {
		opts = append(opts, "device="+Loop(t, d, false))
	}
	return Mount(t, "erofs", Loop(t, image, false), strings.Join(opts, ","))
}
