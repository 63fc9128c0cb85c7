package erofs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
	goerofs "github.com/erofs/go-erofs"
)

// An evaluation of github.com/erofs/go-erofs v0.3.1 (in go.mod) as a
// second reader, on the same mkfs.erofs images our reader is tested with.
// Findings it pins: go-erofs reads the images of mkfs.erofs 1.5 (which
// leaves FEATURE_INCOMPAT_ZERO_PADDING clear) and agrees with us entry by
// entry but for two bugs (setuid/setgid/sticky missing from fs.FileMode,
// ACL xattr names with a trailing '.'), where our reader matches the
// kernel mount (TestReaderMkfsVariants); it refuses any image with ZERO_PADDING (0x1, "LZ4_0PADDING"),
// which newer mkfs.erofs sets on uncompressed images too, taking the bit to
// mean "compressed"; the kernel and our reader read those.

func TestGoErofsReader(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	buildTree(t, src, treeOpts{})
	for _, args := range [][]string{nil, {"--chunksize=4096"}, {"-E", "noinline_data"}} {
		t.Run(strings.Join(append([]string{"mkfs"}, args...), " "), func(t *testing.T) {
			img, err := os.ReadFile(mkfsErofs(t, src, args...))
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := goerofs.Open(bytes.NewReader(img))
			if err != nil {
				t.Fatalf("go-erofs: %v", err)
			}
			ours, err := NewImage(bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			n, known, diffs := compareWithGoErofs(ours, theirs)
			for _, d := range diffs {
				t.Errorf("go-erofs differs: %s", d)
			}
			// The tree has 4 entries with special bits and 2 with ACLs.
			if known[goerofsDropsSpecialBits] != 4 || known[goerofsACLNameDot] != 2 {
				t.Errorf("known go-erofs bugs changed (fixed upstream?): %v", known)
			}
			t.Logf("%d entries compared; go-erofs differs only by its known bugs: %v", n, known)

			// mkfs.erofs ≥ 1.6 sets ZERO_PADDING on plain images as well;
			// go-erofs refuses those, the kernel and our reader do not.
			var sb Superblock
			Unmarshal(img[SuperblockOffset:], &sb)
			binary.LittleEndian.PutUint32(img[SuperblockOffset+80:], sb.FeatureIncompat|FeatureIncompatZeroPadding)
			fixChecksum(img)
			if _, err := goerofs.Open(bytes.NewReader(img)); err == nil || !strings.Contains(err.Error(), "compressed") {
				t.Errorf("go-erofs with ZERO_PADDING: %v, want its 'unsupported compressed' error", err)
			} else {
				t.Logf("go-erofs with ZERO_PADDING set: %v", err)
			}
			if ours, err = NewImage(bytes.NewReader(img)); err == nil {
				err = walkAll(ours)
			}
			if err != nil {
				t.Errorf("our reader with ZERO_PADDING set: %v", err)
			}
			if len(args) == 0 {
				zp := filepath.Join(t.TempDir(), "zp.erofs")
				if err := os.WriteFile(zp, img, 0o644); err != nil {
					t.Fatal(err)
				}
				compareTree(t, ours, testmount.Erofs(t, zp), cmpOpts{inoIsNid: true})
			}
		})
	}
}

// Differences between go-erofs v0.3.1 and the kernel (and us) that the
// comparison tolerates and counts.
const (
	goerofsDropsSpecialBits = "fs.FileMode lacks setuid/setgid/sticky"
	goerofsACLNameDot       = "ACL xattr names end in '.' (system.posix_acl_access.)"
)

func compareWithGoErofs(ours *Image, theirs fs.FS) (int, map[string]int, []string) {
	var diffs []string
	known := map[string]int{}
	n := 0
	err := ours.Walk(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		fi, err := d.Info()
		if err != nil {
			return err
		}
		in := fi.Sys().(*Inode)
		tfi, err := theirs.(interface {
			Lstat(string) (fs.FileInfo, error)
		}).Lstat(p)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: Lstat: %v", p, err))
			return nil
		}
		st, ok := tfi.Sys().(*goerofs.Stat)
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: Sys() is %T", p, tfi.Sys()))
			return nil
		}
		var bad []string
		// go-erofs also keeps the raw S_IFMT bits in fs.FileMode's low
		// bits; compare what fs.FileMode defines.
		const special = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
		if tfi.Mode()&(fs.ModeType|fs.ModePerm) != fi.Mode()&(fs.ModeType|fs.ModePerm) {
			bad = append(bad, fmt.Sprintf("mode %v vs ours %v", tfi.Mode(), fi.Mode()))
		} else if tfi.Mode()&special != fi.Mode()&special {
			known[goerofsDropsSpecialBits]++
		}
		if st.UID != in.UID || st.GID != in.GID || st.Rdev != in.Rdev || st.Nlink != int(in.Nlink) {
			bad = append(bad, fmt.Sprintf("uid/gid/rdev/nlink %d/%d/%d/%d vs ours %d/%d/%d/%d", st.UID, st.GID, st.Rdev, st.Nlink, in.UID, in.GID, in.Rdev, in.Nlink))
		}
		if !tfi.ModTime().Equal(fi.ModTime()) {
			bad = append(bad, fmt.Sprintf("mtime %v vs ours %v", tfi.ModTime(), fi.ModTime()))
		}
		if tfi.Size() != fi.Size() {
			bad = append(bad, fmt.Sprintf("size %d vs ours %d", tfi.Size(), fi.Size()))
		}
		ox := map[string]string{}
		for _, x := range in.Xattrs {
			ox[x.Name] = string(x.Value)
		}
		tx := map[string]string{}
		for k, v := range st.Xattrs {
			if n := strings.TrimSuffix(k, "."); n != k && strings.HasPrefix(n, "system.posix_acl_") {
				known[goerofsACLNameDot]++
				k = n
			}
			tx[k] = v
		}
		if !mapsEqual(ox, tx) {
			bad = append(bad, fmt.Sprintf("xattrs %.200q vs ours %.200q", fmt.Sprint(st.Xattrs), fmt.Sprint(ox)))
		}
		switch {
		case fi.Mode().IsRegular():
			a, errA := fsFileSum(ours, p)
			b, errB := fsFileSum(theirs, p)
			if errA != nil || errB != nil || a != b {
				bad = append(bad, fmt.Sprintf("content %.12s (%v) vs ours %.12s (%v)", b, errB, a, errA))
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			a, _ := ours.ReadLink(p)
			b, err := theirs.(fs.ReadLinkFS).ReadLink(p)
			if err != nil || a != b {
				bad = append(bad, fmt.Sprintf("link %q (%v) vs ours %q", b, err, a))
			}
		}
		if len(bad) > 0 {
			diffs = append(diffs, p+": "+strings.Join(bad, "; "))
		}
		return nil
	})
	if err != nil {
		diffs = append(diffs, err.Error())
	}
	return n, known, diffs
}
