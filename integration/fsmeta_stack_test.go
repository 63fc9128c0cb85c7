package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A crafted stack is a list of layers, each a list of operations. Every
// operation is applied twice: to the layer's directory, in overlayfs upper
// form (whiteouts as char 0:0, opaque dirs by xattr), and to one "expected"
// directory that holds the result a container should see. The expected tree
// checks the harness and the overlay oracle; the oracle then judges fsmeta.

type stackOp struct {
	kind   string // file dir opaque whiteout symlink link xattr fifo chr chown
	path   string
	data   string // file content; symlink/link target; xattr name=value
	mode   uint32
	uid    int
	repeat int // file: repeat data this many times (big files)
}

func opFile(p, data string, mode uint32) stackOp {
	return stackOp{kind: "file", path: p, data: data, mode: mode}
}
func opBig(p, data string, n int) stackOp {
	return stackOp{kind: "file", path: p, data: data, mode: 0o644, repeat: n}
}
func opDir(p string, mode uint32) stackOp { return stackOp{kind: "dir", path: p, mode: mode} }
func opOpaque(p string) stackOp           { return stackOp{kind: "opaque", path: p, mode: 0o750} }
func opWhiteout(p string) stackOp         { return stackOp{kind: "whiteout", path: p} }
func opSymlink(p, target string) stackOp  { return stackOp{kind: "symlink", path: p, data: target} }
func opLink(p, target string) stackOp     { return stackOp{kind: "link", path: p, data: target} }
func opXattr(p, name, value string) stackOp {
	return stackOp{kind: "xattr", path: p, data: name + "=" + value}
}
func opFifo(p string) stackOp           { return stackOp{kind: "fifo", path: p, mode: 0o600} }
func opChr(p string) stackOp            { return stackOp{kind: "chr", path: p, mode: 0o666} }
func opChown(p string, uid int) stackOp { return stackOp{kind: "chown", path: p, uid: uid} }

// buildStackDirs writes the layer dirs and the expected dir under base.
// Layer i's entries get mtime base+i so "metadata from the topmost layer"
// is visible in every view.
func buildStackDirs(t *testing.T, base string, layers [][]stackOp) (layerDirs []string, expected string) {
	t.Helper()
	expected = filepath.Join(base, "expected")
	fsmetaMust(t, os.MkdirAll(expected, 0o755))
	for i, ops := range layers {
		dir := filepath.Join(base, fmt.Sprintf("l%d", i))
		fsmetaMust(t, os.MkdirAll(dir, 0o755))
		for _, op := range ops {
			fsmetaApplyOp(t, dir, op, true)
			fsmetaApplyOp(t, expected, op, false)
		}
		mtime := time.Unix(1700000000+int64(i)*1000, 0)
		fsmetaMust(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}))
		layerDirs = append(layerDirs, dir)
	}
	return layerDirs, expected
}

// fsmetaApplyOp applies op to root; layer selects the upper form of deletions.
func fsmetaApplyOp(t *testing.T, root string, op stackOp, layer bool) {
	t.Helper()
	p := filepath.Join(root, op.path)
	fsmetaMust(t, os.MkdirAll(filepath.Dir(p), 0o755))
	replace := func() {
		if fi, err := os.Lstat(p); err == nil && !(fi.IsDir() && op.kind == "dir") {
			fsmetaMust(t, os.RemoveAll(p))
		}
	}
	switch op.kind {
	case "file":
		replace()
		data := []byte(op.data)
		if op.repeat > 0 {
			data = bytes.Repeat(data, op.repeat)
		}
		fsmetaMust(t, os.WriteFile(p, data, 0o600))
		fsmetaMust(t, os.Chmod(p, os.FileMode(op.mode)))
		fsmetaMust(t, unix.Chmod(p, op.mode)) // keeps setuid/setgid/sticky bits
	case "dir":
		replace()
		fsmetaMust(t, os.MkdirAll(p, 0o755))
		fsmetaMust(t, unix.Chmod(p, op.mode))
	case "opaque":
		fsmetaMust(t, os.RemoveAll(p))
		fsmetaMust(t, os.Mkdir(p, 0o755))
		fsmetaMust(t, unix.Chmod(p, op.mode))
		if layer {
			fsmetaMust(t, unix.Lsetxattr(p, "trusted.overlay.opaque", []byte("y"), 0))
		}
	case "whiteout":
		fsmetaMust(t, os.RemoveAll(p))
		if layer {
			fsmetaMust(t, unix.Mknod(p, unix.S_IFCHR, 0))
		}
	case "symlink":
		replace()
		fsmetaMust(t, os.Symlink(op.data, p))
	case "link":
		replace()
		fsmetaMust(t, os.Link(filepath.Join(root, op.data), p))
	case "xattr":
		name, value, _ := bytes.Cut([]byte(op.data), []byte("="))
		fsmetaMust(t, unix.Lsetxattr(p, string(name), value, 0))
	case "fifo":
		replace()
		fsmetaMust(t, unix.Mkfifo(p, op.mode))
	case "chr":
		replace()
		fsmetaMust(t, unix.Mknod(p, unix.S_IFCHR|op.mode, int(unix.Mkdev(1, 3))))
	case "chown":
		fsmetaMust(t, os.Lchown(p, op.uid, op.uid))
	default:
		t.Fatalf("unknown op %q", op.kind)
	}
}

func fsmetaMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// craftedStacks are the edge cases every view must agree on.
func craftedStacks() map[string][][]stackOp {
	tail := "0123456789abcdef"
	stacks := map[string][][]stackOp{
		"whiteout-dir": {
			{opDir("a", 0o755), opFile("a/x", "x", 0o644), opDir("a/sub", 0o711), opFile("a/sub/y", "y", 0o600), opFile("b", "b", 0o644)},
			{opWhiteout("a"), opFile("keep", "k", 0o644)},
			{opFile("c", "c", 0o644)},
		},
		"recreate-after-delete": {
			{opDir("d", 0o755), opFile("d/old", "old", 0o644), opFile("f", "first", 0o644)},
			{opWhiteout("d"), opWhiteout("f")},
			{opDir("d", 0o700), opFile("d/new", "new", 0o644), opFile("f", "second", 0o640)},
		},
		"opaque-top": {
			{opDir("d", 0o755), opFile("d/a", "a", 0o644), opDir("d/deep", 0o755), opFile("d/deep/z", "z", 0o644)},
			{opFile("d/b", "b", 0o644), opDir("e", 0o755), opFile("e/x", "x", 0o644)},
			{opOpaque("d"), opFile("d/c", "c", 0o644), opFile("e/y", "y", 0o644)},
		},
		"file-dir-symlink": {
			{opFile("p", "file", 0o644), opDir("q", 0o755), opFile("q/inner", "i", 0o644), opSymlink("r", "p")},
			{opDir("p", 0o755), opFile("p/x", "x", 0o644), opFile("q", "now a file", 0o600), opDir("r", 0o755)},
			{opSymlink("p", "/etc/hostname"), opDir("q", 0o755), opFile("q/again", "a", 0o644), opFile("r/in", "in", 0o644)},
		},
		"hardlinks": {
			{opBig("a", tail, 1000), opLink("b", "a"), opLink("c", "a"), opDir("d", 0o755), opLink("d/e", "a"),
				opFile("s1", "small", 0o644), opLink("s2", "s1")},
			{opWhiteout("c"), opFile("n1", "new layer link", 0o644), opLink("n2", "n1")},
		},
		"xattrs-and-specials": {
			{opFile("x", "x", 0o644), opXattr("x", "user.one", "1"), opXattr("x", "trusted.two", "2"),
				opDir("d", 0o755), opXattr("d", "user.dir", "lower"), opFifo("fifo"), opChr("null"),
				opFile("suid", "s", 0o4755), opDir("sticky", 0o1777), opFile("owned", "o", 0o644), opChown("owned", 1000)},
			{opDir("d", 0o775), opXattr("d", "user.dir", "upper"), opFile("d/f", "f", 0o644), opXattr("d/f", "user.big", string(bytes.Repeat([]byte("v"), 300)))},
		},
		"data-shapes": {
			{opFile("empty", "", 0o644), opBig("block", "abcd", 1024), opBig("blocks-tail", tail, 3*256+10),
				opBig("mib", "0123456789", 104858), opFile("tiny", "t", 0o644)},
			{opBig("upper-big", "zyxw", 5000)},
		},
	}
	many := manyLayers(64)
	stacks["64-layers"] = many
	stacks["500-layers"] = manyLayers(500)
	stacks["single-layer"] = [][]stackOp{{opFile("only", "one layer", 0o644), opDir("d", 0o700), opSymlink("d/l", "../only")}}
	return stacks
}

// manyLayers: each layer adds a file, rewrites a shared one, deletes the
// file added two layers down and grows a directory every layer touches.
func manyLayers(n int) [][]stackOp {
	var many [][]stackOp
	for i := range n {
		ops := []stackOp{
			opFile(fmt.Sprintf("f%02d", i), fmt.Sprintf("layer %d", i), 0o644),
			opFile("shared", fmt.Sprintf("shared from %d", i), 0o644),
			opFile(fmt.Sprintf("common/c%02d", i), "c", 0o644),
		}
		if i >= 2 {
			ops = append(ops, opWhiteout(fmt.Sprintf("f%02d", i-2)))
		}
		many = append(many, ops)
	}
	return many
}
