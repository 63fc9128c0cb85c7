package differ

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/differ/difftest"
)

// overlayChange builds a lower tree, mounts a real overlayfs over it,
// makes every kind of change through the mount and returns the lower, the
// upper dir overlayfs left behind, the merged tree as seen through the
// mount, and the walking differ's tar of the same change.
func overlayChange(t *testing.T) (lower, upper string, merged map[string]difftest.Entry, walkingTar []byte) {
	t.Helper()
	requireRoot(t)
	base := t.TempDir()
	lower, upper = filepath.Join(base, "lower"), filepath.Join(base, "upper")
	work, mnt := filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := difftest.MakeBase(lower); err != nil {
		t.Fatal(err)
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(mnt, 0); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if err := difftest.ApplyChanges(mnt); err != nil {
		t.Fatal(err)
	}
	var err error
	if merged, err = difftest.Tree(mnt, difftest.Options{}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.WriteDiff(context.Background(), &buf, lower, mnt); err != nil {
		t.Fatalf("walking diff: %v", err)
	}
	unmount()
	return lower, upper, merged, buf.Bytes()
}

// applyTarOnCopy copies lower and applies an OCI layer tar on the copy with
// containerd's own applier, returning the resulting tree.
func applyTarOnCopy(t *testing.T, lower string, layer []byte, opts difftest.Options) map[string]difftest.Entry {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", lower, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	if _, err := archive.Apply(context.Background(), dst, bytes.NewReader(layer)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	tree, err := difftest.Tree(dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlayfs mounts, mknod, trusted xattrs)")
	}
}

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, b []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{h, data})
	}
}

// TestUpperDiffRoundTrip: the tar made from a real overlayfs upper, applied
// by containerd's applier on the lower, gives exactly the merged tree the
// container saw (incl. xattrs and hardlinks); walking's tar for the same
// change gives the same tree except for the xattrs walking drops.
func TestUpperDiffRoundTrip(t *testing.T) {
	lower, upper, merged, walkingTar := overlayChange(t)
	var ours bytes.Buffer
	if err := writeUpperDiff(context.Background(), &ours, upper, os.DirFS(lower).(lowerFS), nil); err != nil {
		t.Fatal(err)
	}
	got := applyTarOnCopy(t, lower, ours.Bytes(), difftest.Options{})
	if d := difftest.Diff(merged, got); len(d) > 0 {
		t.Errorf("our diff applied != merged tree:\n%s", strings.Join(d, "\n"))
	}

	noXattr := difftest.Options{KeepXattr: func(string) bool { return false }}
	mergedNoX := map[string]difftest.Entry{}
	for k, e := range merged {
		e.Xattrs = nil
		mergedNoX[k] = e
	}
	walk := applyTarOnCopy(t, lower, walkingTar, noXattr)
	if d := difftest.Diff(mergedNoX, walk); len(d) > 0 {
		t.Errorf("walking diff applied != merged tree (test premise broken):\n%s", strings.Join(d, "\n"))
	}
	oursNoX := applyTarOnCopy(t, lower, ours.Bytes(), noXattr)
	if d := difftest.Diff(walk, oursNoX); len(d) > 0 {
		t.Errorf("ours != walking:\n%s", strings.Join(d, "\n"))
	}
}

// TestUpperDiffEntries pins the OCI encoding of each overlay construct.
func TestUpperDiffEntries(t *testing.T) {
	lower, upper, _, _ := overlayChange(t)
	var buf bytes.Buffer
	if err := writeUpperDiff(context.Background(), &buf, upper, os.DirFS(lower).(lowerFS), nil); err != nil {
		t.Fatal(err)
	}
	entries := readTar(t, buf.Bytes())
	byName := map[string]*tar.Header{}
	var order []string
	for _, e := range entries {
		byName[e.hdr.Name] = e.hdr
		order = append(order, e.hdr.Name)
		if e.hdr.Typeflag == tar.TypeChar && e.hdr.Devmajor == 0 && e.hdr.Devminor == 0 {
			t.Errorf("%s: overlay whiteout leaked into the tar", e.hdr.Name)
		}
		for k := range e.hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.trusted.") {
				t.Errorf("%s: trusted xattr %s leaked", e.hdr.Name, k)
			}
		}
	}
	tests := []struct {
		name  string
		check func(h *tar.Header) bool
	}{
		{"etc/.wh.login.defs", func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg && h.Size == 0 }},
		{"etc/.wh.skel", func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg }},
		{difftest.ReplacedDir + "/", func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir && h.Mode == 0o700 }},
		{difftest.ReplacedDir + "/.wh..wh..opq", func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg }},
		{"opt/erofs-vm/sub/new-hardlink", func(h *tar.Header) bool {
			return h.Typeflag == tar.TypeLink && h.Linkname == "opt/erofs-vm/new.txt"
		}},
		{"opt/erofs-vm/new.txt", func(h *tar.Header) bool {
			return h.Uid == 1000 && h.Gid == 1001 && h.PAXRecords["SCHILY.xattr.user.erofs-vm"] == "value"
		}},
		{"opt/erofs-vm/sub/", func(h *tar.Header) bool { return h.PAXRecords["SCHILY.xattr.user.erofs-vm-dir"] == "d" }},
		{"opt/erofs-vm/fifo", func(h *tar.Header) bool { return h.Typeflag == tar.TypeFifo }},
		{"opt/erofs-vm/link", func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink && h.Linkname == "new.txt" }},
		{difftest.ChmodFile, func(h *tar.Header) bool { return h.Mode == 0o600 }},
		{"etc/debian_version.hardlink", func(h *tar.Header) bool { return h.Typeflag == tar.TypeLink && h.Linkname == difftest.ModifiedFile }},
	}
	for _, tc := range tests {
		h, ok := byName[tc.name]
		if !ok {
			t.Errorf("%s: missing from the tar (have %v)", tc.name, order)
			continue
		}
		if !tc.check(h) {
			t.Errorf("%s: unexpected header %+v", tc.name, h)
		}
	}
	// Untouched lower content never appears.
	for _, n := range []string{"usr/bin/tool", "usr/lib/data.bin", "etc/data-link", "usr/bin/"} {
		if _, ok := byName[n]; ok {
			t.Errorf("%s: unchanged lower entry written", n)
		}
	}
	// Parents precede children.
	seen := map[string]bool{}
	for _, n := range order {
		parent := filepath.Dir(strings.TrimSuffix(n, "/"))
		if parent != "." && !seen[parent+"/"] {
			t.Errorf("%s written before its parent dir", n)
		}
		seen[n] = true
	}
	// Same input, same bytes.
	var again bytes.Buffer
	if err := writeUpperDiff(context.Background(), &again, upper, os.DirFS(lower).(lowerFS), nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two diffs of the same upper differ")
	}
}

// TestUpperDiffWhiteoutWithoutLower: a whiteout over nothing (the lower
// never had the name) is dropped, not written as a char device.
func TestUpperDiffWhiteoutWithoutLower(t *testing.T) {
	requireRoot(t)
	upper, lower := t.TempDir(), t.TempDir()
	if err := unix.Mknod(filepath.Join(upper, "ghost"), unix.S_IFCHR|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "real"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(upper, "real"), unix.S_IFCHR|0o600, 0); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeUpperDiff(context.Background(), &buf, upper, os.DirFS(lower).(lowerFS), nil); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range readTar(t, buf.Bytes()) {
		names = append(names, e.hdr.Name)
	}
	if strings.Join(names, ",") != ".wh.real" {
		t.Errorf("entries %v, want only .wh.real", names)
	}
}

// TestUpperDiffRejectsRedirectDir: a dir renamed by overlayfs redirect_dir
// would need the lower's subtree merged in; refuse it by name.
func TestUpperDiffRejectsRedirectDir(t *testing.T) {
	requireRoot(t)
	upper := t.TempDir()
	d := filepath.Join(upper, "moved")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(d, xattrRedirect, []byte("/orig"), 0); err != nil {
		t.Fatal(err)
	}
	err := writeUpperDiff(context.Background(), io.Discard, upper, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "moved") || !strings.Contains(err.Error(), "redirect_dir") {
		t.Fatalf("err = %v, want a redirect_dir error naming moved", err)
	}
}

// TestUpperDiffMetacopy: a metadata-only copy-up takes its data from the
// lower file named by the redirect xattr.
func TestUpperDiffMetacopy(t *testing.T) {
	requireRoot(t)
	upper, lower := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(lower, "orig"), []byte("lower data"), 0o644); err != nil {
		t.Fatal(err)
	}
	// What overlayfs (metacopy=on) leaves after `chmod 600 orig; mv orig new`:
	// a sparse file of the right size with the metacopy and redirect xattrs.
	p := filepath.Join(upper, "new")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(len("lower data"))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(p, xattrMetacopy, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(p, xattrRedirect, []byte("/orig"), 0); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeUpperDiff(context.Background(), &buf, upper, os.DirFS(lower).(lowerFS), nil); err != nil {
		t.Fatal(err)
	}
	e := readTar(t, buf.Bytes())
	if len(e) != 1 || e[0].hdr.Name != "new" || string(e[0].data) != "lower data" || e[0].hdr.Mode != 0o600 {
		t.Fatalf("got %+v", e)
	}
}

// TestUpperDiffCancel: a cancelled context stops the walk.
func TestUpperDiffCancel(t *testing.T) {
	_, upper, _, _ := overlayChange(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := writeUpperDiff(ctx, io.Discard, upper, nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
