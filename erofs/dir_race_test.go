package erofs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestConvertDirFileSwapped: between the lstat that saw a file or a
// directory and the open that reads it, a container writing the tree (an
// overlay upper) can swap the name. ConvertDir must refuse: never read or
// walk through a symlink to a host path, never block on a fifo.
func TestConvertDirFileSwapped(t *testing.T) {
	host := t.TempDir()
	secret := filepath.Join(host, "host-secret")
	if err := os.WriteFile(secret, []byte("host only"), 0o600); err != nil {
		t.Fatal(err)
	}
	makeFile := func(p string) error { return os.WriteFile(p, []byte("container data"), 0o644) }
	makeDir := func(p string) error { return os.Mkdir(p, 0o755) }
	for _, tc := range []struct {
		name string
		make func(p string) error // what lstat sees
		swap func(p string) error // what is there at the open
		want string
	}{
		{"file to symlink to a host file", makeFile, func(p string) error { return os.Symlink(secret, p) }, "too many levels of symbolic links"},
		{"file to fifo", makeFile, func(p string) error { return unix.Mkfifo(p, 0o644) }, "replaced while converting"},
		{"file to another file", makeFile, func(p string) error { return os.WriteFile(p, []byte("other"), 0o644) }, "replaced while converting"},
		{"dir to symlink to a host dir", makeDir, func(p string) error { return os.Symlink(host, p) }, "not a directory"},
		{"dir to another dir", makeDir, makeDir, "replaced while converting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			// Keep the old inode alive so the new one cannot reuse its number.
			keep, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer keep.Close()
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := tc.swap(p); err != nil {
				t.Fatal(err)
			}
			dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(dirfd)

			dst, err := os.Create(filepath.Join(t.TempDir(), "img"))
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			c, err := newBuilder(context.Background(), dst, ConvertOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.data.close()
			w := &dirWalker{builder: c, ctx: context.Background(), links: map[devIno]*Node{}}
			n := &Node{Mode: st.Mode}
			if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				err = w.walkSub(dirfd, "f", p, n, &st)
			} else {
				err = w.copyData(dirfd, "f", p, n, &st)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("after the swap: %v; want an error naming %s and saying %q", err, p, tc.want)
			}
			if c.data.written != 0 || c.tree.Len() != 0 {
				t.Errorf("%d bytes and %d names taken in", c.data.written, c.tree.Len())
			}
		})
	}
}
