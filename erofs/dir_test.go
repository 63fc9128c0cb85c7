package erofs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/erofs-vm/containerd-erofs/internal/treecmp"
	"golang.org/x/sys/unix"
)

// TestConvertDir builds an overlay upper dir by hand (whiteouts, an opaque
// dir, hardlinks, devices, xattrs in every namespace, setuid/sticky bits,
// nanosecond mtimes, a socket), converts it, and compares the kernel's
// view of the image with the source tree.
func TestConvertDir(t *testing.T) {
	requireRoot(t)
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
	mnt := mountImage(t, img)
	treecmp.Compare(t, src, mnt, treecmp.Options{IgnoreMtime: func(p string) bool { return p == "sock" }})
	var st unix.Stat_t
	must(unix.Lstat(filepath.Join(mnt, "etc/big"), &st))
	if st.Mtim.Nsec != 123456789 {
		t.Errorf("nanoseconds lost: %v", st.Mtim)
	}
}

// TestConvertDirErrors: an unrepresentable xattr fails naming the file.
func TestConvertDirErrors(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	p := filepath.Join(src, "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(p, "user."+strings.Repeat("n", 250), []byte("v"), 0); err != nil {
		t.Skipf("cannot set a long xattr name here: %v", err)
	}
	dst, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	// 250 bytes after "user." is fine; make one that is not.
	if _, err := ConvertDir(context.Background(), dst, src, ConvertOptions{}); err != nil {
		t.Fatalf("250-byte xattr name: %v", err)
	}
	if _, err := ConvertDir(context.Background(), dst, filepath.Join(src, "missing"), ConvertOptions{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing dir: %v", err)
	}
	if fi, _ := dst.Stat(); fi.Size() != 0 {
		t.Errorf("output left with %d bytes after an error", fi.Size())
	}
}
