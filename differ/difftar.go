package differ

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// Names of OCI whiteouts (image-spec layer.md) and of the overlayfs xattrs
// an upper dir carries. Only trusted.* is read: the guest mounts its
// overlay with trusted xattrs (docs/design.md §6).
const (
	whiteoutPrefix   = ".wh."
	trustedXattrs    = "trusted."
	whiteoutOpaque   = ".wh..wh..opq"
	xattrOpaque      = "trusted.overlay.opaque"
	xattrMetacopy    = "trusted.overlay.metacopy"
	xattrRedirect    = "trusted.overlay.redirect"
	paxSchilyXattr   = "SCHILY.xattr."
	copyBufferSize   = 1 << 20
	maxXattrListSize = 64 << 10
)

// lowerFS is the committed lower stack as Compare sees it: an *erofs.Image,
// or in tests any fs.FS with Lstat semantics (os.DirFS). nil is the empty
// stack.
type lowerFS interface {
	fs.FS
	Lstat(name string) (fs.FileInfo, error)
}

// diffWriter turns an overlayfs upper dir into an OCI layer tar relative to
// the lower it was mounted over. The meaning is that of containerd's walking
// differ for the same change (an applier given either tar ends with the same
// tree), with two deliberate differences: all xattrs travel (walking keeps
// only security.capability, so user.* and trusted.* set in a container would
// be lost), and whiteouts for names the lower never had are dropped instead
// of leaking into the layer as 0:0 char devices.
type diffWriter struct {
	ctx   context.Context
	tw    *tar.Writer
	upper string
	lower lowerFS
	epoch *time.Time

	written map[string]bool   // dirs whose header is in the tar
	links   map[fileID]string // first tar name of each multiply linked inode
	buf     []byte
}

type fileID struct{ dev, ino uint64 }

// writeUpperDiff writes the OCI layer tar of the change held in upper (an
// overlayfs upper dir) over lower to w. epoch, when set, clamps mtimes
// (SOURCE_DATE_EPOCH).
func writeUpperDiff(ctx context.Context, w io.Writer, upper string, lower lowerFS, epoch *time.Time) error {
	dw := &diffWriter{
		ctx:     ctx,
		tw:      tar.NewWriter(w),
		upper:   upper,
		lower:   lower,
		epoch:   epoch,
		written: map[string]bool{".": true},
		links:   map[fileID]string{},
		buf:     make([]byte, copyBufferSize),
	}
	// WalkDir visits in lexical order: the same upper gives the same tar.
	err := filepath.WalkDir(upper, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(upper, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if err := dw.entry(filepath.ToSlash(rel)); err != nil {
			return fmt.Errorf("diff %s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return dw.tw.Close()
}

// entry handles one path of the upper.
func (dw *diffWriter) entry(rel string) error {
	hostPath := filepath.Join(dw.upper, rel)
	var st unix.Stat_t
	if err := unix.Lstat(hostPath, &st); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return nil // sockets do not travel in layers
	case unix.S_IFCHR:
		if st.Rdev == 0 {
			return dw.whiteout(rel)
		}
	case unix.S_IFDIR:
		return dw.dir(rel, hostPath, &st)
	}
	return dw.nonDir(rel, hostPath, &st)
}

// whiteout turns an overlay whiteout into an OCI one, when there is
// something in the lower to hide.
func (dw *diffWriter) whiteout(rel string) error {
	if !dw.lowerHas(rel) {
		return nil
	}
	dir, base := path.Split(rel)
	return dw.writeMarkerEntry(dir + whiteoutPrefix + base)
}

// dir writes a directory's header when it is new, changed or opaque;
// otherwise only when something below it is written (see parents).
func (dw *diffWriter) dir(rel, hostPath string, st *unix.Stat_t) error {
	xattrs, err := listXattrs(hostPath)
	if err != nil {
		return err
	}
	if _, ok := xattrs[xattrRedirect]; ok {
		return errors.New("directory renamed by overlayfs redirect_dir is not supported; mount the overlay without redirect_dir")
	}
	opaque := string(xattrs[xattrOpaque]) == "y"
	lfi := dw.lowerStat(rel)
	lowerDir := lfi != nil && lfi.IsDir()
	if lowerDir && !opaque && sameDir(st, xattrs, lfi) {
		return nil
	}
	if err := dw.writeHeader(rel, hostPath, st, xattrs, ""); err != nil {
		return err
	}
	if opaque && lowerDir {
		return dw.writeMarkerEntry(rel + "/" + whiteoutOpaque)
	}
	return nil
}

// nonDir writes files, symlinks, devices and fifos; a second name of a
// multiply linked inode becomes a tar hardlink to the first.
func (dw *diffWriter) nonDir(rel, hostPath string, st *unix.Stat_t) error {
	xattrs, err := listXattrs(hostPath)
	if err != nil {
		return err
	}
	if st.Nlink > 1 {
		id := fileID{uint64(st.Dev), st.Ino}
		if first, ok := dw.links[id]; ok {
			return dw.writeHeader(rel, hostPath, st, xattrs, first)
		}
		dw.links[id] = rel
	}
	return dw.writeHeader(rel, hostPath, st, xattrs, "")
}

// writeHeader writes rel's parents when needed, then rel's header and data.
// linkTo, when set, makes the entry a hardlink to that earlier name.
func (dw *diffWriter) writeHeader(rel, hostPath string, st *unix.Stat_t, xattrs map[string][]byte, linkTo string) error {
	if err := dw.parents(rel); err != nil {
		return err
	}
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:  tar.FormatPAX,
	}
	// Whole seconds, like the walking differ: the tar then does not depend
	// on the sub-second precision of the filesystem the upper lives on.
	if dw.epoch != nil && hdr.ModTime.After(*dw.epoch) {
		hdr.ModTime = *dw.epoch
	}
	hdr.ModTime = hdr.ModTime.Truncate(time.Second)
	for name, v := range xattrs {
		// trusted.* holds overlayfs' own bookkeeping and admin data that
		// containerd's applier refuses to set from an archive; like
		// walking, the layer does not carry it.
		if strings.HasPrefix(name, trustedXattrs) {
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxSchilyXattr+name] = string(v)
	}

	var data func() (io.ReadCloser, error)
	switch {
	case linkTo != "":
		hdr.Typeflag, hdr.Linkname = tar.TypeLink, linkTo
	default:
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
			dw.written[rel] = true
		case unix.S_IFREG:
			hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
			var err error
			if data, err = dw.fileData(rel, hostPath, xattrs); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(hostPath)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return fmt.Errorf("unsupported file type %#o", st.Mode&unix.S_IFMT)
		}
	}
	if err := dw.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if data == nil || hdr.Size == 0 {
		return nil
	}
	r, err := data()
	if err != nil {
		return err
	}
	defer r.Close()
	n, err := io.CopyBuffer(dw.tw, &ctxReader{ctx: dw.ctx, r: r}, dw.buf)
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("file changed while reading: %d of %d bytes", n, hdr.Size)
	}
	return nil
}

// fileData opens a regular file's content. A metacopy upper (overlayfs
// metacopy=on) holds metadata only; its data is the lower file it came
// from, named by the redirect xattr or else at the same path.
func (dw *diffWriter) fileData(rel, hostPath string, xattrs map[string][]byte) (func() (io.ReadCloser, error), error) {
	if _, ok := xattrs[xattrMetacopy]; !ok {
		return func() (io.ReadCloser, error) { return os.Open(hostPath) }, nil
	}
	origin := rel
	if r, ok := xattrs[xattrRedirect]; ok {
		origin = strings.TrimPrefix(string(r), "/")
		if !strings.HasPrefix(string(r), "/") {
			// A relative redirect names a file in the same dir.
			origin = path.Join(path.Dir(rel), string(r))
		}
	}
	if dw.lower == nil {
		return nil, fmt.Errorf("metacopy file without a lower (origin %q)", origin)
	}
	return func() (io.ReadCloser, error) {
		f, err := dw.lower.Open(origin)
		if err != nil {
			return nil, fmt.Errorf("metacopy data from lower %s: %w", origin, err)
		}
		return f, nil
	}, nil
}

// parents writes the headers of rel's ancestors not yet in the tar, top
// down, so that an applier recreates them with the upper's metadata.
func (dw *diffWriter) parents(rel string) error {
	var missing []string
	for d := path.Dir(rel); !dw.written[d]; d = path.Dir(d) {
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		hostPath := filepath.Join(dw.upper, d)
		var st unix.Stat_t
		if err := unix.Lstat(hostPath, &st); err != nil {
			return err
		}
		xattrs, err := listXattrs(hostPath)
		if err != nil {
			return err
		}
		if err := dw.writeHeader(d, hostPath, &st, xattrs, ""); err != nil {
			return err
		}
	}
	return nil
}

// writeMarkerEntry writes an OCI whiteout or opaque marker: an empty
// regular file dated 1970, as containerd writes them since v2.0.
func (dw *diffWriter) writeMarkerEntry(name string) error {
	if err := dw.parents(name); err != nil {
		return err
	}
	zero := time.Unix(0, 0).UTC()
	return dw.tw.WriteHeader(&tar.Header{
		Typeflag:   tar.TypeReg,
		Name:       name,
		Mode:       0o644,
		ModTime:    zero,
		AccessTime: zero,
		ChangeTime: zero,
	})
}

// lowerStat returns the lower's entry at rel, or nil when there is none
// (including when a parent is not a dir).
func (dw *diffWriter) lowerStat(rel string) fs.FileInfo {
	if dw.lower == nil {
		return nil
	}
	fi, err := dw.lower.Lstat(rel)
	if err != nil {
		return nil
	}
	return fi
}

func (dw *diffWriter) lowerHas(rel string) bool { return dw.lowerStat(rel) != nil }

// sameDir reports whether an upper dir carries the lower dir's metadata,
// i.e. overlayfs copied it up only to hold changed children.
func sameDir(st *unix.Stat_t, xattrs map[string][]byte, lfi fs.FileInfo) bool {
	uid, gid, mode, mtime, lx, ok := lowerMeta(lfi)
	if !ok {
		return false
	}
	if st.Uid != uid || st.Gid != gid || st.Mode&0o7777 != mode&0o7777 {
		return false
	}
	if !sameTime(time.Unix(st.Mtim.Sec, st.Mtim.Nsec), mtime) {
		return false
	}
	if lx == nil {
		return true // the lower cannot tell its xattrs (tests on os.DirFS)
	}
	n := 0
	for name, v := range xattrs {
		if strings.HasPrefix(name, trustedXattrs) {
			continue
		}
		n++
		if lv, ok := lx[name]; !ok || string(lv) != string(v) {
			return false
		}
	}
	return n == len(lx)
}

// sameTime compares like continuity's sameFsTime: equal seconds and equal
// nanoseconds, unless either side lost its nanoseconds (compact inodes,
// truncating tars).
func sameTime(a, b time.Time) bool {
	if a.Unix() != b.Unix() {
		return false
	}
	return a.Nanosecond() == b.Nanosecond() || a.Nanosecond() == 0 || b.Nanosecond() == 0
}

// lowerMeta extracts owner, mode, mtime and xattrs of a lower entry from
// what its FileInfo carries: *erofs.Inode from our reader, *syscall.Stat_t
// from os.DirFS (then xattrs are unknown, nil).
func lowerMeta(fi fs.FileInfo) (uid, gid, mode uint32, mtime time.Time, xattrs map[string][]byte, ok bool) {
	switch s := fi.Sys().(type) {
	case *erofs.Inode:
		xattrs = map[string][]byte{}
		for _, x := range s.Xattrs {
			if !strings.HasPrefix(x.Name, trustedXattrs) {
				xattrs[x.Name] = x.Value
			}
		}
		return s.UID, s.GID, s.Mode, time.Unix(s.Mtime, int64(s.MtimeNsec)), xattrs, true
	case *syscall.Stat_t:
		return s.Uid, s.Gid, s.Mode, time.Unix(s.Mtim.Sec, s.Mtim.Nsec), nil, true
	}
	return 0, 0, 0, time.Time{}, nil, false
}

// listXattrs returns every xattr of path (not following symlinks).
func listXattrs(p string) (map[string][]byte, error) {
	buf := make([]byte, 1024)
	var n int
	for {
		var err error
		n, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < maxXattrListSize {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		break
	}
	if n == 0 {
		return nil, nil
	}
	out := map[string][]byte{}
	for name := range strings.SplitSeq(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v, err := getXattr(p, name)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}

func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Lgetxattr(p, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+1)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
