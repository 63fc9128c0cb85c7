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

// TestConvertDirFileSwapped: between the lstat that saw a regular file and
// the open that reads it, a container writing the tree (an overlay upper)
// can swap the name. ConvertDir must refuse, never read through a symlink
// to a host file and never block on a fifo.
func TestConvertDirFileSwapped(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(secret, []byte("host only"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		swap func(p string) error
		want string
	}{
		{"symlink to a host file", func(p string) error { return os.Symlink(secret, p) }, "too many levels of symbolic links"},
		{"fifo", func(p string) error { return unix.Mkfifo(p, 0o644) }, "replaced while converting"},
		{"another regular file", func(p string) error { return os.WriteFile(p, []byte("other"), 0o644) }, "replaced while converting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if err := os.WriteFile(p, []byte("container data"), 0o644); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			// Keep the old inode alive so the new file cannot reuse its number.
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
			w := &dirWalker{builder: c, ctx: context.Background()}
			n := &Node{Mode: syscall.S_IFREG | 0o644}
			err = w.copyData(p, n, &st)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("copyData after the swap: %v; want an error naming %s and saying %q", err, p, tc.want)
			}
			if c.data.written != 0 {
				t.Errorf("%d bytes taken into the image", c.data.written)
			}
		})
	}
}
