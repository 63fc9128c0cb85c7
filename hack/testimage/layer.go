package main

import (
	"archive/tar"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteout names (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	// paxXattr is the PAX record prefix GNU tar, containerd and Go agree on.
	paxXattr = "SCHILY.xattr."
	// overlayXattr is the namespace overlayfs keeps its own state in; it
	// describes the upper dir, not the files, so it never goes into a layer.
	overlayXattr = "trusted.overlay."
)

// layerOptions says how a tree becomes a tar.
type layerOptions struct {
	// subsecond keeps nanosecond mtimes (PAX records) instead of truncating
	// to whole seconds. Off by default: a PAX header costs 1 KiB per entry
	// and dpkg-written trees have sub-second times on most files.
	subsecond bool
}

func layerCmd(args []string) error {
	fl := flag.NewFlagSet("layer", flag.ContinueOnError)
	out := fl.String("o", "", "output tar `path`")
	sub := fl.Bool("subsecond", false, "keep sub-second mtimes (PAX)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" || fl.NArg() != 1 {
		return errors.New("need -o OUT.tar and one DIR")
	}
	dir := fl.Arg(0)
	var n int
	err := writeFileAtomic(*out, func(w io.Writer) error {
		var err error
		n, err = writeLayer(w, dir, layerOptions{subsecond: *sub})
		return err
	})
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d entries from %s\n", *out, n, dir)
	return nil
}

// writeLayer writes the tree under root as an OCI layer tar and returns the
// number of entries. The tree is read as an overlayfs upper dir: a char
// device 0:0 becomes the whiteout .wh.NAME and trusted.overlay.opaque=y on a
// dir becomes .wh..wh..opq inside it; a plain tree (no such entries) is
// simply archived. Entries come in lexical order per directory, a dir before
// its children and the opaque marker first among them, owners numeric, no
// atime/ctime, so the same tree always gives the same bytes.
func writeLayer(w io.Writer, root string, opts layerOptions) (int, error) {
	lw := &layerWriter{
		tw:    tar.NewWriter(w),
		root:  root,
		opts:  opts,
		links: map[fileID]string{},
	}
	if fi, err := os.Lstat(root); err != nil {
		return 0, err
	} else if !fi.IsDir() {
		return 0, fmt.Errorf("%s: not a directory", root)
	}
	if err := lw.walkDir(""); err != nil {
		return lw.n, err
	}
	return lw.n, lw.tw.Close()
}

type fileID struct{ dev, ino uint64 }

type layerWriter struct {
	tw    *tar.Writer
	root  string
	opts  layerOptions
	links map[fileID]string // first tar name of each multiply-linked inode
	n     int
}

// walkDir writes the children of rel (slash-separated, "" = root).
func (lw *layerWriter) walkDir(rel string) error {
	ents, err := os.ReadDir(filepath.Join(lw.root, rel))
	if err != nil {
		return err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasPrefix(name, whiteoutPrefix) {
			// A literal .wh. file in a tree would be read back as a
			// whiteout by every applier: refuse rather than change meaning.
			return fmt.Errorf("%s: name uses the reserved whiteout prefix %q", path.Join(rel, name), whiteoutPrefix)
		}
		if err := lw.writeEntry(path.Join(rel, name)); err != nil {
			return err
		}
	}
	return nil
}

func (lw *layerWriter) writeEntry(rel string) error {
	full := filepath.Join(lw.root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	mtime := time.Unix(st.Mtim.Unix())
	if !lw.opts.subsecond {
		mtime = mtime.Truncate(time.Second)
	}
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: mtime,
	}
	if mtime.Nanosecond() != 0 {
		hdr.Format = tar.FormatPAX
	}

	fmtType := st.Mode & unix.S_IFMT
	if fmtType == unix.S_IFCHR && st.Rdev == 0 {
		// overlayfs whiteout: the file is deleted in this layer.
		return lw.write(&tar.Header{
			Name:     path.Join(path.Dir(rel), whiteoutPrefix+path.Base(rel)),
			Typeflag: tar.TypeReg,
			ModTime:  hdr.ModTime,
			Format:   hdr.Format,
		}, nil)
	}

	xattrs, opaque, err := readXattrs(full, rel)
	if err != nil {
		return err
	}
	for k, v := range xattrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxXattr+k] = v
	}

	if fmtType != unix.S_IFDIR && st.Nlink > 1 {
		id := fileID{uint64(st.Dev), st.Ino}
		if first, ok := lw.links[id]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			return lw.write(hdr, nil)
		}
		lw.links[id] = rel
	}

	switch fmtType {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name = rel + "/"
		if err := lw.write(hdr, nil); err != nil {
			return err
		}
		if opaque {
			if err := lw.write(&tar.Header{
				Name:     rel + "/" + whiteoutOpaque,
				Typeflag: tar.TypeReg,
				ModTime:  hdr.ModTime,
				Format:   hdr.Format,
			}, nil); err != nil {
				return err
			}
		}
		return lw.walkDir(rel)
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
		f, err := os.Open(full)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		defer f.Close()
		return lw.write(hdr, f)
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
		return lw.write(hdr, nil)
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if fmtType == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
		return lw.write(hdr, nil)
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
		return lw.write(hdr, nil)
	default:
		// Sockets cannot be carried by a layer (image-spec lists none).
		return fmt.Errorf("%s: unsupported file type %#o", rel, fmtType)
	}
}

func (lw *layerWriter) write(hdr *tar.Header, data io.Reader) error {
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	if data != nil {
		n, err := io.Copy(lw.tw, data)
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("%s: size changed while archiving (%d, stat said %d)", hdr.Name, n, hdr.Size)
		}
	}
	lw.n++
	return nil
}

// readXattrs returns the xattrs a layer must carry (everything but
// overlayfs' own) and whether overlayfs marked the dir opaque. Overlay state
// other than opaque and origin (redirect, metacopy) means the upper dir is
// not self-contained: such a tree cannot become a layer.
func readXattrs(full, rel string) (map[string]string, bool, error) {
	names, err := listXattrs(full)
	if err != nil {
		return nil, false, fmt.Errorf("%s: list xattrs: %w", rel, err)
	}
	var (
		out    map[string]string
		opaque bool
	)
	for _, name := range names {
		val, err := getXattr(full, name)
		if err != nil {
			return nil, false, fmt.Errorf("%s: xattr %s: %w", rel, name, err)
		}
		if rest, ok := strings.CutPrefix(name, overlayXattr); ok {
			switch rest {
			case "opaque":
				opaque = string(val) == "y"
			case "origin", "impure", "nlink", "uuid":
				// Bookkeeping of the overlay instance; meaningless in a layer.
			default:
				return nil, false, fmt.Errorf("%s: overlay xattr %s: mount the overlay with redirect_dir=off,metacopy=off", rel, name)
			}
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(val)
	}
	return out, opaque, nil
}

func listXattrs(p string) ([]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range strings.Split(string(buf[:size]), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

func getXattr(p, name string) ([]byte, error) {
	size, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	size, err = unix.Lgetxattr(p, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:size], nil
}
