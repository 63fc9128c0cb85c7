package difftest

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Paths ApplyChanges changes. They exist in the test image's final tree
// (hack/build-test-image.sh: Debian minbase plus its layers 2 and 3) and in
// MakeBase's: ReplacedDir is removed and recreated (an overlayfs opaque
// dir), DeletedTree removed with all below it, the others regular files.
const (
	ModifiedFile = "etc/debian_version"
	DeletedFile  = "etc/login.defs"
	ChmodFile    = "etc/motd"
	ReplacedDir  = "usr/share/doc/bash"
	DeletedTree  = "etc/skel"
)

// MakeBase fills root with a small tree that has every path ApplyChanges
// needs, shaped like a Debian rootfs, for tests without a real image.
func MakeBase(root string) error {
	files := map[string]string{
		ModifiedFile:              "12.0\n",
		DeletedFile:               "Debian GNU/Linux 12\n",
		ChmodFile:                 "Debian GNU/Linux 12 \\n \\l\n",
		ReplacedDir + "/old-1":    "old one\n",
		ReplacedDir + "/sub/old2": "old two\n",
		DeletedTree + "/.bashrc":  "# bashrc\n",
		DeletedTree + "/.profile": "# profile\n",
		"usr/bin/tool":            "#!/bin/sh\necho tool\n",
		"usr/lib/data.bin":        string(make([]byte, 70000)),
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "usr/bin/tool"), 0o755); err != nil {
		return err
	}
	return os.Symlink("../usr/lib/data.bin", filepath.Join(root, "etc/data-link"))
}

// ApplyChanges makes, under root (the merged view of a writable
// snapshot), one change of every kind a diff must carry: added files,
// dirs, symlinks, fifos and hardlinks, a modified lower file, a deleted
// lower file and dir tree, a dir replaced by a new one (opaque), a chmod,
// a chown, xattrs, and a hardlink to a lower file (copy-up).
func ApplyChanges(root string) error {
	p := func(n string) string { return filepath.Join(root, n) }
	steps := []struct {
		what string
		do   func() error
	}{
		{"add dir", func() error { return os.MkdirAll(p("opt/erofs-vm/sub"), 0o750) }},
		{"add file", func() error { return os.WriteFile(p("opt/erofs-vm/new.txt"), []byte("new file\n"), 0o640) }},
		{"add big file", func() error { return os.WriteFile(p("opt/erofs-vm/sub/big.bin"), pattern(3<<20+123), 0o644) }},
		{"add empty file", func() error { return os.WriteFile(p("opt/erofs-vm/empty"), nil, 0o600) }},
		{"add symlink", func() error { return os.Symlink("new.txt", p("opt/erofs-vm/link")) }},
		{"add fifo", func() error { return unix.Mkfifo(p("opt/erofs-vm/fifo"), 0o620) }},
		{"add hardlink", func() error { return os.Link(p("opt/erofs-vm/new.txt"), p("opt/erofs-vm/sub/new-hardlink")) }},
		{"chown new", func() error { return os.Lchown(p("opt/erofs-vm/new.txt"), 1000, 1001) }},
		{"xattr new", func() error { return unix.Lsetxattr(p("opt/erofs-vm/new.txt"), "user.erofs-vm", []byte("value"), 0) }},
		{"xattr dir", func() error { return unix.Lsetxattr(p("opt/erofs-vm/sub"), "user.erofs-vm-dir", []byte("d"), 0) }},
		{"modify lower file", func() error { return appendFile(p(ModifiedFile), "modified by erofs-vm test\n") }},
		{"delete lower file", func() error { return os.Remove(p(DeletedFile)) }},
		{"chmod lower file", func() error { return os.Chmod(p(ChmodFile), 0o600) }},
		{"xattr lower file", func() error { return unix.Lsetxattr(p(ChmodFile), "user.changed", []byte("yes"), 0) }},
		{"hardlink lower file", func() error { return os.Link(p(ModifiedFile), p("etc/debian_version.hardlink")) }},
		{"delete lower tree", func() error { return os.RemoveAll(p(DeletedTree)) }},
		{"replace lower dir", func() error {
			if err := os.RemoveAll(p(ReplacedDir)); err != nil {
				return err
			}
			if err := os.Mkdir(p(ReplacedDir), 0o700); err != nil {
				return err
			}
			return os.WriteFile(p(ReplacedDir+"/fresh"), []byte("fresh\n"), 0o644)
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

func appendFile(name, s string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pattern returns n bytes that are not all zeros (so no filesystem turns
// them into holes) and differ from block to block.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

// CheckBase reports whether root has what ApplyChanges needs, so a test on
// a real image fails with a clear message when the image changes.
func CheckBase(root string) error {
	for _, f := range []string{ModifiedFile, DeletedFile, ChmodFile} {
		fi, err := os.Lstat(filepath.Join(root, f))
		if err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: need a regular file (%v)", f, err)
		}
	}
	for _, d := range []string{ReplacedDir, DeletedTree} {
		fi, err := os.Lstat(filepath.Join(root, d))
		if err != nil || !fi.IsDir() {
			return fmt.Errorf("%s: need a directory (%v)", d, err)
		}
	}
	return nil
}
