package erofs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"github.com/erofs-vm/containerd-erofs/internal/treecmp"
	"golang.org/x/sys/unix"
)

// TestConvertDir builds an overlay upper dir by hand (whiteouts, an opaque
// dir, hardlinks, devices, xattrs in every namespace, setuid/sticky bits,
// nanosecond mtimes, a socket), converts it, and compares the kernel's
// view of the image with the source tree.
func TestConvertDir(t *testing.T) {
	testmount.RequireRoot(t)
	src := filepath.Join(t.TempDir(), "upper")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(p string, mode os.FileMode) {
		must(os.Mkdir(filepath.Join(src, p), mode))
		must(os.Chmod(filepath.Join(src, p), mode))
	}
	write := func(p, data string, mode os.FileMode) {
		must(os.WriteFile(filepath.Join(src, p), []byte(data), mode))
		must(os.Chmod(filepath.Join(src, p), mode))
	}
	must(os.Mkdir(src, 0o755))
	mkdir("etc", 0o755)
	write("etc/passwd", "root:x:0:0\n", 0o644)
	write("etc/big", strings.Repeat("big file ", 100000), 0o600)
	write("suid", "s", 0o4755)
	mkdir("tmp", 0o1777)
	must(os.Link(filepath.Join(src, "etc/passwd"), filepath.Join(src, "etc/passwd-hardlink")))
	must(os.Link(filepath.Join(src, "etc/passwd"), filepath.Join(src, "tmp/third-name")))
	must(os.Symlink("../etc/passwd", filepath.Join(src, "tmp/link")))
	must(unix.Mknod(filepath.Join(src, "etc/whiteout"), unix.S_IFCHR, 0))
	must(unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(src, "disk"), unix.S_IFBLK|0o660, int(unix.Mkdev(259, 70000))))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o644))
	mkdir("opaque", 0o755)
	write("opaque/new", "n", 0o644)
	must(unix.Lsetxattr(filepath.Join(src, "opaque"), OpaqueXattr, []byte("y"), 0))
	must(unix.Lsetxattr(filepath.Join(src, "etc/passwd"), "user.k", []byte("v"), 0))
	must(unix.Lsetxattr(filepath.Join(src, "etc/passwd"), "security.s", []byte("sec"), 0))
	must(unix.Lsetxattr(filepath.Join(src, "tmp/link"), "trusted.on-link", []byte("l"), 0))
	must(unix.Lsetxattr(src, "user.on-root", []byte("r"), 0)) // read through the root's fd
	must(os.Lchown(filepath.Join(src, "etc/big"), 1000, 70000))
	must(os.Lchown(filepath.Join(src, "tmp/link"), 5, 6))
	mkdir("sock", 0o755)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must(err)
	must(unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(src, "sock/s")}))
	unix.Close(fd)
	ts := []unix.Timespec{unix.NsecToTimespec(1600000000123456789), unix.NsecToTimespec(1600000000123456789)}
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, "etc/big"), ts, unix.AT_SYMLINK_NOFOLLOW))
	must(os.Chtimes(filepath.Join(src, "etc"), time.Unix(1500000000, 0), time.Unix(1500000000, 0)))

	img := filepath.Join(t.TempDir(), "upper.erofs")
	dst, err := os.Create(img)
	must(err)
	defer dst.Close()
	stats, err := ConvertDir(context.Background(), dst, src, ConvertOptions{})
	must(err)
	if len(stats.Skipped) != 1 || !strings.Contains(stats.Skipped[0], "sock/s") {
		t.Errorf("skipped %q, want the socket", stats.Skipped)
	}
	// The image has no socket: drop it from the source before comparing.
	must(os.Remove(filepath.Join(src, "sock/s")))
	fsck(t, img)
	mnt := testmount.Erofs(t, img)
	treecmp.Compare(t, src, mnt, treecmp.Options{IgnoreMtime: func(p string) bool { return p == "sock" }})
	var st unix.Stat_t
	must(unix.Lstat(filepath.Join(mnt, "etc/big"), &st))
	if st.Mtim.Nsec != 123456789 {
		t.Errorf("nanoseconds lost: %v", st.Mtim)
	}
}

// TestConvertDirErrors: what EROFS cannot represent fails naming the file
// and the attribute, and leaves the output empty. The xattrs are set on a
// tmpfs, which (unlike ext4 without ea_inode) takes values up to Linux's
// own limit of 65536 bytes and any number of them.
func TestConvertDirErrors(t *testing.T) {
	testmount.RequireRoot(t)
	big := func(n int) []byte { return bytes.Repeat([]byte{'v'}, n) }
	cases := []struct {
		name   string
		xattrs map[string][]byte // set on the file "f"
		want   []string          // substrings of the error
	}{
		{"value-of-65536-bytes", map[string][]byte{"trusted.big": big(65536)},
			[]string{"/f: ", `"trusted.big"`, "65536 bytes exceeds 65535"}},
		{"inline-area-over-256KiB", map[string][]byte{"trusted.a": big(60000), "trusted.b": big(60000), "trusted.c": big(60000), "trusted.d": big(60000), "trusted.e": big(60000)},
			[]string{"/f: ", "exceed the inline xattr area"}},
		{"largest-representable-value", map[string][]byte{"trusted.ok": big(65535)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, err := os.MkdirTemp("/dev/shm", "convertdir-")
			if err != nil {
				t.Fatalf("a tmpfs for the source tree: %v", err)
			}
			t.Cleanup(func() { os.RemoveAll(src) })
			p := filepath.Join(src, "f")
			if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.xattrs {
				if err := unix.Lsetxattr(p, k, v, 0); err != nil {
					t.Fatalf("set %s (%d bytes) on tmpfs: %v", k, len(v), err)
				}
			}
			dst, err := os.Create(filepath.Join(t.TempDir(), "img"))
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			_, err = ConvertDir(context.Background(), dst, src, ConvertOptions{})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("representable xattr refused: %v", err)
				}
				checkWithReader(t, dst)
				return
			}
			if err == nil {
				t.Fatal("converted; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if fi, _ := dst.Stat(); fi.Size() != 0 {
				t.Errorf("output left with %d bytes after an error", fi.Size())
			}
		})
	}
	t.Run("missing-dir", func(t *testing.T) {
		dst, err := os.Create(filepath.Join(t.TempDir(), "img"))
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		missing := filepath.Join(t.TempDir(), "missing")
		if _, err := ConvertDir(context.Background(), dst, missing, ConvertOptions{}); err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("missing dir: %v, want an error naming it", err)
		}
	})
}
