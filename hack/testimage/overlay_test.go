package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOverlayUpperMeansWhatTheKernelShows is the converter's ground truth:
// changes are made through a real overlayfs mount (the kernel decides what
// the upper dir holds), the upper dir is converted to an OCI layer, and
// containerd's own applier, given the lower tree and that layer, must
// produce exactly the tree the kernel showed in the merged dir.
func TestOverlayUpperMeansWhatTheKernelShows(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	p := func(n string) string { return filepath.Join(lower, n) }
	for _, f := range []string{"a/file1", "a/file2", "a/sub/deep", "b/keep", "b/gone",
		"c/inner", "d", "f", "h", "m", "x", "x2", "r", "opq/old1", "opq/old2/deeper"} {
		writeFile(t, p(f), "lower "+f+"\n")
	}
	must(t, "symlink", os.Symlink("a/file1", p("e")))
	must(t, "chtimes", os.Chtimes(p("a/file1"), time.Unix(1600000000, 42), time.Unix(1600000000, 42)))

	// The plain lower tree must round-trip through a layer unchanged.
	applied := filepath.Join(base, "applied")
	must(t, "mkdir", os.Mkdir(applied, 0o755))
	applyLayer(t, applied, layerBytes(t, lower, layerOptions{subsecond: true}))
	if d := diffTrees(snapshotTree(t, applied), snapshotTree(t, lower)); len(d) > 0 {
		t.Fatalf("plain tree does not round-trip:\n%s", strings.Join(d, "\n"))
	}

	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		must(t, "mkdir", os.Mkdir(d, 0o755))
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + ",redirect_dir=off,metacopy=off,index=off,xino=off"
	must(t, "mount overlay", unix.Mount("overlay", merged, "overlay", 0, opts))
	mounted := true
	unmount := func() {
		if mounted {
			must(t, "umount overlay", unix.Unmount(merged, 0))
			mounted = false
		}
	}
	t.Cleanup(unmount)

	m := func(n string) string { return filepath.Join(merged, n) }
	must(t, "rm file", os.Remove(m("b/gone")))
	must(t, "rm tree", os.RemoveAll(m("a/sub")))
	must(t, "rm opq", os.RemoveAll(m("opq")))
	writeFile(t, m("opq/fresh"), "only this\n")
	must(t, "rm dir c", os.RemoveAll(m("c")))
	writeFile(t, m("c"), "c is a file now\n")
	must(t, "rm d", os.Remove(m("d")))
	writeFile(t, m("d/inner"), "d is a dir now\n")
	must(t, "rm e", os.Remove(m("e")))
	writeFile(t, m("e"), "e is a file now\n")
	must(t, "rm f", os.Remove(m("f")))
	must(t, "symlink f", os.Symlink("b/keep", m("f")))
	writeFile(t, m("new/added"), "added\n")
	must(t, "hardlink to lower", os.Link(m("h"), m("new/h-link")))
	must(t, "hardlink new", os.Link(m("new/added"), m("new/added-link")))
	must(t, "chmod", unix.Chmod(m("m"), 0o4711))
	must(t, "chown", os.Lchown(m("m"), 1000, 1000))
	must(t, "user xattr", unix.Lsetxattr(m("x"), "user.changed", []byte("yes"), 0))
	must(t, "setcap", unix.Lsetxattr(m("x2"), "security.capability", []byte(capNetRaw()), 0))
	must(t, "rename", os.Rename(m("r"), m("new/r-moved")))
	must(t, "mkfifo", unix.Mkfifo(m("new/fifo"), 0o644))
	must(t, "mknod", unix.Mknod(m("new/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, "chtimes", os.Chtimes(m("new/added"), time.Unix(1700000000, 999999999), time.Unix(1700000000, 999999999)))

	want := snapshotTree(t, merged)
	unmount()

	layer := layerBytes(t, upper, layerOptions{subsecond: true})
	names := map[string]bool{}
	for _, h := range readTar(t, layer) {
		names[h.Name] = true
	}
	// The test only means something if the kernel produced both whiteout forms.
	for _, n := range []string{"b/.wh.gone", "a/.wh.sub", ".wh.r", "opq/.wh..wh..opq"} {
		if !names[n] {
			t.Errorf("layer lacks %s; entries: %v", n, names)
		}
	}

	applyLayer(t, applied, layer)
	if d := diffTrees(snapshotTree(t, applied), want); len(d) > 0 {
		t.Fatalf("lower + converted upper (containerd apply) differs from the overlay merged view:\n%s", strings.Join(d, "\n"))
	}
}
