package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"github.com/erofs-vm/containerd-erofs/internal/treecmp"
	"golang.org/x/sys/unix"
)

// The kernel oracle: a tar is converted, the image is loop-mounted by the
// Linux EROFS driver and checked by fsck.erofs (whose --extract must agree
// too), and the mounted tree is compared with GNU tar's extraction of the
// same tar, post-processed into overlay form (whiteouts become 0:0 char
// devices, opaque markers an xattr), exactly what containerd's overlay
// applier would have left on disk.

// convertFile converts the tar at tarPath into dir/layer.erofs.
func convertFile(t testing.TB, tarPath, dir string) (string, *ConvertStats) {
	t.Helper()
	img := filepath.Join(dir, "layer.erofs")
	src, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	stats, err := ConvertTar(context.Background(), dst, src, ConvertOptions{})
	if err != nil {
		t.Fatalf("ConvertTar: %v", err)
	}
	if fi, _ := dst.Stat(); fi.Size() != stats.ImageBytes || fi.Size()%BlockSize != 0 {
		t.Fatalf("image is %d bytes, stats say %d", fi.Size(), stats.ImageBytes)
	}
	return img, stats
}

// gnuExtract extracts tarPath with GNU tar as root, preserving everything,
// then turns whiteouts into overlay form.
func gnuExtract(t testing.TB, tarPath string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gnu")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `umask 022; exec tar --xattrs --xattrs-include='*' --xattrs-include='trusted.*' --xattrs-include='security.*' --xattrs-include='user.*' --numeric-owner -xpf "$1" -C "$2"`, "sh", tarPath, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar -x: %v: %s", err, out)
	}
	if err := overlayWhiteouts(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// overlayWhiteouts rewrites an extracted tree's OCI whiteout files the way
// containerd's overlay applier writes them, keeping parent mtimes, with one
// difference the OCI layer spec asks for: a whiteout next to an entry of
// its own layer (the tree holds nothing else) leaves that entry alone, and
// a directory so whited out becomes opaque (containerd's mknod fails with
// EEXIST there, or removes the entry, depending on the order).
func overlayWhiteouts(root string) error {
	var whs []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), whiteoutPrefix) {
			whs = append(whs, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, p := range whs {
		dir, base := filepath.Split(p)
		var dst unix.Stat_t
		if err := unix.Lstat(dir, &dst); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		if base == whiteoutOpaque {
			if err := unix.Lsetxattr(dir, OpaqueXattr, []byte("y"), 0); err != nil {
				return err
			}
		} else if orig := filepath.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)); isOwnEntry(orig) {
			if fi, err := os.Lstat(orig); err == nil && fi.IsDir() {
				if err := unix.Lsetxattr(orig, OpaqueXattr, []byte("y"), 0); err != nil {
					return err
				}
			}
		} else {
			if err := unix.Mknod(orig, unix.S_IFCHR, 0); err != nil {
				return err
			}
			if err := os.Lchown(orig, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
			ts := []unix.Timespec{st.Mtim, st.Mtim}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, orig, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{dst.Atim, dst.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dir, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return nil
}

// isOwnEntry reports whether the extraction holds p as something other
// than a whiteout already made by overlayWhiteouts.
func isOwnEntry(p string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0
}

// explicitDirs returns the cleaned names of the tar's directory entries:
// the others are made up by the extractor, with its own mtime.
func explicitDirs(t testing.TB, tarPath string) map[string]bool {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		if hdr.Typeflag == tar.TypeDir {
			p := path.Clean("/" + hdr.Name)
			out[strings.TrimPrefix(p, "/")] = true
		}
	}
	if out[""] {
		out["."] = true
	}
	return out
}

// oracle converts tarPath and judges the image by the kernel, fsck.erofs
// and GNU tar. fixup, if set, adjusts GNU tar's tree for what GNU tar
// cannot extract (e.g. LIBARCHIVE.xattr records).
func oracle(t *testing.T, tarPath string, fixup func(gnu string)) string {
	t.Helper()
	img, _ := convertFile(t, tarPath, t.TempDir())
	want := gnuExtract(t, tarPath)
	if fixup != nil {
		fixup(want)
	}
	explicit := explicitDirs(t, tarPath)
	opts := treecmp.Options{IgnoreMtime: func(p string) bool {
		fi, err := os.Lstat(filepath.Join(want, p))
		return err == nil && fi.IsDir() && !explicit[p]
	}}
	mnt := testmount.Erofs(t, img)
	treecmp.Compare(t, want, mnt, opts)
	extracted := fsck(t, img)
	// fsck.erofs 1.5 --extract restores neither xattrs, hardlinks nor
	// setuid/setgid bits: compare the rest.
	opts.IgnoreXattr = func(string) bool { return true }
	opts.IgnoreHardlinks = true
	opts.ModeMask = ^uint32(0o6000)
	treecmp.Compare(t, mnt, extracted, opts)
	return mnt
}

// writeTar writes entries as a tar in the given format.
func writeTar(t testing.TB, p string, format tar.Format, entries []tarEntry) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Format == tar.FormatUnknown {
			h.Format = format
		}
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.data))
		}
		if h.ModTime.IsZero() {
			h.ModTime = testMtime
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
