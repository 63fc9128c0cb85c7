package erofs

import (
	"archive/tar"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	"golang.org/x/sys/unix"
)

// The writer and the reader against each other and two independent
// judges: ConvertTar's image, read back by our reader, must equal GNU tar's
// extraction of the same tar (with OCI whiteouts turned into overlay form,
// as the converter is specified to do) and the kernel's loop mount of the
// image, entry by entry.

// rdOverlayForm rewrites an extracted OCI layer in place into what the
// converter emits: ".wh.NAME" becomes a 0:0 char device NAME with the
// whiteout's owner and mtime, ".wh..wh..opq" becomes
// trusted.overlay.opaque=y on its directory; directory mtimes are kept.
func rdOverlayForm(t *testing.T, root string) {
	t.Helper()
	type wh struct{ dir, name string }
	var whs []wh
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".wh.") {
			whs = append(whs, wh{filepath.Dir(p), d.Name()})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range whs {
		var dirSt, st unix.Stat_t
		p := filepath.Join(w.dir, w.name)
		if err := unix.Lstat(w.dir, &dirSt); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if w.name == ".wh..wh..opq" {
			if err := unix.Lsetxattr(w.dir, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				t.Fatal(err)
			}
		} else {
			q := filepath.Join(w.dir, strings.TrimPrefix(w.name, ".wh."))
			if err := unix.Mknod(q, syscall.S_IFCHR, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(q, int(st.Uid), int(st.Gid)); err != nil {
				t.Fatal(err)
			}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, q, []unix.Timespec{st.Mtim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, w.dir, []unix.Timespec{dirSt.Mtim, dirSt.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

// rdConvertAndRead converts tarPath with ConvertTar and opens the result.
func rdConvertAndRead(t *testing.T, tarPath string) (*Image, string) {
	t.Helper()
	src, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	img := filepath.Join(t.TempDir(), "layer.erofs")
	dst, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ConvertTar(context.Background(), dst, src, ConvertOptions{}); err != nil {
		dst.Close()
		t.Fatalf("ConvertTar %s: %v", tarPath, err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	im, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	return im, img
}

func rdGNUExtract(t *testing.T, tarPath string) string {
	t.Helper()
	ref := t.TempDir()
	runCmd(t, "tar", "-xpf", tarPath, "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-C", ref)
	rdApplyBinaryACLs(t, tarPath, ref)
	rdOverlayForm(t, ref)
	return ref
}

// rdApplyBinaryACLs sets the ACLs a tar carries as binary xattrs
// (SCHILY.xattr.system.posix_acl_*, as containerd and Docker write them),
// which GNU tar only restores from its own SCHILY.acl.* text records.
func rdApplyBinaryACLs(t *testing.T, tarPath, root string) {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr.PAXRecords {
			name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
			if !ok || !strings.HasPrefix(name, "system.posix_acl_") {
				continue
			}
			p := filepath.Join(root, filepath.FromSlash(hdr.Name))
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
				t.Fatalf("%s: %s: %v", hdr.Name, name, err)
			}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Mtim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestReaderOnConvertTar(t *testing.T) {
	needRoot(t)
	// A tar of the reader's all-types tree, made by GNU tar (PAX xattrs,
	// ACLs, devices, hardlinks, long names and links, uid > 65535; GNU tar
	// skips the socket).
	src := t.TempDir()
	buildTree(t, src, treeOpts{})
	// The longest name EROFS allows (mkfs.erofs 1.5 cannot write it).
	if err := os.WriteFile(filepath.Join(src, "deep", strings.Repeat("N", NameLen)), []byte("255"), 0o644); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(t.TempDir(), "tree.tar")
	runCmd(t, "tar", "-cpf", own, "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "--format=pax", "-C", src, ".")
	tars := map[string]string{"all-types": own}
	if !testing.Short() {
		for _, l := range []string{"1-rootfs.tar", "2-packages.tar", "3-changes.tar"} {
			tars[l] = testAsset(t, filepath.Join("images", "layers", l), "test-image")
		}
	}
	for name, tarPath := range tars {
		t.Run(name, func(t *testing.T) {
			im, img := rdConvertAndRead(t, tarPath)
			n := compareTree(t, im, rdGNUExtract(t, tarPath), cmpOpts{skipRootMeta: true})
			compareTree(t, im, testmount.Erofs(t, img), cmpOpts{inoIsNid: true})
			t.Logf("%d entries: reader(ConvertTar) = GNU tar = kernel mount", n)
		})
	}
}
