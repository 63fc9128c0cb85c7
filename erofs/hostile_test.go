package erofs

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofs-vm/containerd-erofs/erofs/testdata/hostile"
	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// TestHostileLayers runs the hostile-layer corpus (testdata/hostile) through
// ConvertTar. A rejected layer must fail with the corpus's error substring
// and leave dst empty; an accepted one must pass fsck.erofs and, mounted by
// the kernel, show what the corpus says, and so must an fsmeta built over
// it (what Commit makes of a layer with parents). Either way nothing may appear
// beside dst or in TMPDIR: the converter writes the image and nothing else.
func TestHostileLayers(t *testing.T) {
	for _, c := range hostile.Cases {
		t.Run(c.Name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			dir := t.TempDir()
			dst, err := os.Create(filepath.Join(dir, "layer.erofs"))
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			stats, err := convertHostile(dst, c)
			checkOnly(t, dir, "layer.erofs")
			checkOnly(t, tmp)
			switch c.Expect {
			case hostile.Reject:
				if err == nil {
					t.Fatalf("accepted (%d inodes), want an error containing %q", stats.Inodes, c.Err)
				}
				if !strings.Contains(err.Error(), c.Err) || !strings.HasPrefix(err.Error(), "erofs: ") {
					t.Fatalf("error %q, want one containing %q", err, c.Err)
				}
				if fi, err := dst.Stat(); err != nil || fi.Size() != 0 {
					t.Errorf("dst after a rejection: %v, %v; want it empty", fi.Size(), err)
				}
			case hostile.OK:
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				// fsck.erofs 1.5 segfaults on any directory chain deeper
				// than ~1000 levels (passes at 600, crashes at 1000, our
				// images and the kernel agree at every depth; mkfs.erofs
				// cannot build such a tree at all): the kernel judges it.
				if c.Name != "deep-dir-chain" {
					fsckNoExtract(t, dst.Name())
				}
				mnt := testmount.Erofs(t, dst.Name())
				if err := c.Verify(mnt); err != nil {
					t.Fatalf("mounted image: %v", err)
				}
				// Committed with a parent, the layer goes through
				// BuildFSMeta: the merged view must show the same.
				fsmeta := filepath.Join(t.TempDir(), "fsmeta.erofs")
				out, err := os.Create(fsmeta)
				if err != nil {
					t.Fatal(err)
				}
				defer out.Close()
				if _, err := BuildFSMeta(context.Background(), out, []string{dst.Name()}); err != nil {
					t.Fatalf("fsmeta over the layer: %v", err)
				}
				if err := c.Verify(testmount.Erofs(t, fsmeta, dst.Name())); err != nil {
					t.Fatalf("mounted fsmeta: %v", err)
				}
			}
		})
	}
}

// convertHostile streams c's tar into ConvertTar through a pipe, so a
// layer that expands to gigabytes never exists as a file.
func convertHostile(dst *os.File, c hostile.Case) (*ConvertStats, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(c.Write(pw)) }()
	defer pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer after a rejection
	return ConvertTar(context.Background(), dst, pr, ConvertOptions{MaxImageSize: c.MaxSize})
}

// fsckNoExtract runs fsck.erofs on image: every inode and all data are
// checked, but nothing is extracted (100k files on a busy disk take
// half a minute, and the kernel mount already shows the tree).
func fsckNoExtract(t *testing.T, image string) {
	t.Helper()
	if _, err := exec.LookPath("fsck.erofs"); err != nil {
		t.Skip("fsck.erofs not installed (apt-get install erofs-utils)")
	}
	if out, err := exec.Command("fsck.erofs", image).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs %s: %v:\n%s", image, err, out)
	}
}

// checkOnly fails unless dir holds exactly names.
func checkOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, "\x00") != strings.Join(names, "\x00") {
		t.Errorf("%s holds %q, want exactly %q", dir, got, names)
	}
}
