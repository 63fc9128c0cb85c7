package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestManifestScriptMatchesHost runs the guest manifest snippet with the
// host's busybox on a tree holding every file type, and checks it agrees
// with HostManifest: then a difference seen after a boot is the image's,
// not the tooling's.
func TestManifestScriptMatchesHost(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed (apt-get install busybox-static)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for device nodes and chown")
	}
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "a dir/sub"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "a dir/sub/file with space"), []byte("x\n"), 0o4755))
	must(unix.Chmod(filepath.Join(dir, "a dir/sub/file with space"), 0o4755)) // os.Chmod wants os.ModeSetuid
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	must(os.Chown(filepath.Join(dir, "empty"), 1234, 5678))
	must(os.Symlink("a dir/sub/file with space", filepath.Join(dir, "link")))
	must(unix.Mknod(filepath.Join(dir, "whiteout"), unix.S_IFCHR, 0))
	must(unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 3))))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	old := time.Unix(1_000_000_000, 0)
	must(os.Chtimes(filepath.Join(dir, "empty"), old, old))

	cmd := exec.Command(bb, "sh", "-c", ManifestScript(dir))
	// The applets the snippet uses must be busybox's, as in the guest.
	bin := t.TempDir()
	for _, a := range []string{"find", "stat", "md5sum", "sed"} {
		must(os.Symlink(bb, filepath.Join(bin, a)))
	}
	cmd.Env = append(os.Environ(), "PATH="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got, err := ParseManifest(string(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want, err := HostManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(want, got, false); d != nil {
		t.Errorf("guest snippet and host disagree:\n%s\noutput:\n%s", strings.Join(d, "\n"), out)
	}
	if len(want) != 9 || want["./blk"].Major != 7 || want["./blk"].Minor != 3 || want["./link"].LinkTarget == "" ||
		want["./empty"].UID != 1234 || want["./empty"].Mtime != old.Unix() || want["./a dir/sub/file with space"].Mode&unix.S_ISUID == 0 {
		t.Errorf("host manifest incomplete: %+v", want)
	}
	// A change must show.
	e := got["./empty"]
	e.GID = 1
	got["./empty"] = e
	delete(got, "./fifo")
	if d := Diff(want, got, false); len(d) != 2 {
		t.Errorf("Diff = %q, want 2 differences", d)
	}
}
