package erofs

import (
	"bytes"
	"io"
	"testing"
)

// The inode-addressed API agrees with the path-addressed one.
func TestReaderNidAPI(t *testing.T) {
	needRoot(t)
	im, err := NewImage(bytes.NewReader(smallImage(t)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := im.Root()
	if err != nil {
		t.Fatal(err)
	}
	byInode, err := im.ReadDirInode(root, ".")
	if err != nil {
		t.Fatal(err)
	}
	byPath, err := im.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(byInode) != len(byPath) || len(byPath) != 5 {
		t.Fatalf("%d entries by inode, %d by path, want 5", len(byInode), len(byPath))
	}
	for i, d := range byInode {
		fi, err := im.Lstat(byPath[i].Name())
		if err != nil {
			t.Fatal(err)
		}
		want := fi.Sys().(*Inode)
		nid, ok := EntryNid(d)
		if d.Name() != byPath[i].Name() || !ok || nid != want.Nid {
			t.Fatalf("entry %d: %s nid %d, want %s nid %d", i, d.Name(), nid, byPath[i].Name(), want.Nid)
		}
		got, err := im.InodeByNid(nid)
		if err != nil || got.Mode != want.Mode || len(got.Xattrs) != len(want.Xattrs) {
			t.Fatalf("%s: InodeByNid %+v, %v; Lstat %+v", d.Name(), got, err, want)
		}
		switch d.Name() {
		case "link":
			if tgt, err := im.ReadLinkInode(got); err != nil || tgt != "small" {
				t.Fatalf("ReadLinkInode: %q %v", tgt, err)
			}
		case "small":
			r, err := im.OpenInode(got)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(r); err != nil || string(b) != "hello" {
				t.Fatalf("OpenInode: %q %v", b, err)
			}
		}
	}
	if _, err := im.ReadDirInode(&Inode{Nid: 1 << 40}, "bogus"); err == nil {
		t.Fatal("ReadDirInode of a bogus nid succeeded")
	}
}

// TestReaderConcurrent: one Image serves parallel walks (the cache is
// shared); run under -race.
func TestReaderConcurrent(t *testing.T) {
	needRoot(t)
	im, err := NewImage(bytes.NewReader(smallImage(t)))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- walkAll(im) }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
