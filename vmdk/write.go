package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// maxExtents bounds the extent count: the shortest possible extent line,
// `RW 1 FLAT "/" 0` and a newline, is 16 bytes.
const maxExtents = MaxDescriptorSize / 16

// File is one file of the virtual disk: its absolute path and its size in
// bytes, a positive multiple of SectorSize.
type File struct {
	Path string
	Size int64
}

// NewDescriptor returns the twoGbMaxExtentFlat descriptor presenting files,
// in the given order, as one disk: each file becomes one extent line per
// MaxExtentSectors piece. The error names the offending file.
func NewDescriptor(files []File) (*Descriptor, error) {
	if len(files) == 0 {
		return nil, errors.New("vmdk: no files")
	}
	d := &Descriptor{
		Version:    1,
		ParentCID:  NoParentCID,
		CreateType: CreateTypeTwoGbMaxExtentFlat,
	}
	// Check everything before expanding extents: a hostile size must not
	// make us build millions of extent lines only to reject them.
	var total, count int64
	for i, f := range files {
		if err := checkFile(f); err != nil {
			return nil, fmt.Errorf("vmdk: file %d %q: %w", i, f.Path, err)
		}
		if f.Size > math.MaxInt64-total {
			return nil, fmt.Errorf("vmdk: file %d %q: disk size overflows", i, f.Path)
		}
		total += f.Size
		count += (f.Size/SectorSize + MaxExtentSectors - 1) / MaxExtentSectors
	}
	if count > maxExtents {
		return nil, fmt.Errorf("vmdk: %d extents would make a descriptor over the %d bytes qemu reads", count, MaxDescriptorSize)
	}
	for _, f := range files {
		sectors := f.Size / SectorSize
		for off := int64(0); off < sectors; off += MaxExtentSectors {
			d.Extents = append(d.Extents, Extent{
				Access:    AccessRW,
				Sectors:   min(MaxExtentSectors, sectors-off),
				Type:      TypeFlat,
				Path:      f.Path,
				Offset:    off,
				HasOffset: true,
			})
		}
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	d.CID = extentsCID(d.Extents)
	sectors := d.Sectors()
	cylinders := (sectors + geometryHeads*geometrySectors - 1) / (geometryHeads * geometrySectors)
	d.DDB = []Entry{
		{"ddb.virtualHWVersion", "4"},
		{"ddb.geometry.cylinders", strconv.FormatInt(cylinders, 10)},
		{"ddb.geometry.heads", strconv.Itoa(geometryHeads)},
		{"ddb.geometry.sectors", strconv.Itoa(geometrySectors)},
		{"ddb.adapterType", "ide"},
	}
	return d, nil
}

func checkFile(f File) error {
	if !filepath.IsAbs(f.Path) {
		return errors.New("path is not absolute")
	}
	if filepath.Clean(f.Path) != f.Path {
		return fmt.Errorf("path is not clean (want %q)", filepath.Clean(f.Path))
	}
	if err := CheckPath(f.Path); err != nil {
		return err
	}
	switch {
	case f.Size <= 0:
		return fmt.Errorf("size %d: must be positive (qemu skips empty extents)", f.Size)
	case f.Size%SectorSize != 0:
		return fmt.Errorf("size %d is not a multiple of %d: pad the file (qemu would read zeros past its end)", f.Size, SectorSize)
	}
	return nil
}

// extentsCID derives the content ID from the extent lines, so a descriptor
// is reproducible and changes CID exactly when its extents change.
func extentsCID(extents []Extent) uint32 {
	var b bytes.Buffer
	for _, e := range extents {
		writeExtent(&b, e)
	}
	return crc32.ChecksumIEEE(b.Bytes())
}

// WriteDescriptor writes the descriptor of files (see NewDescriptor) to w.
func WriteDescriptor(w io.Writer, files []File) error {
	d, err := NewDescriptor(files)
	if err != nil {
		return err
	}
	_, err = d.WriteTo(w)
	return err
}

// WriteFile atomically writes the descriptor of files to path (temp file in
// the same directory, fsync, rename): a crash leaves the old descriptor or
// the new one, never a partial one.
func WriteFile(path string, files []File) error {
	d, err := NewDescriptor(files)
	if err != nil {
		return err
	}
	b, err := d.MarshalText()
	if err != nil {
		return err
	}
	return layout.WriteFileAtomic(path, b, 0o644)
}

// FilesFromPaths stats each path (which must be an absolute path to a
// regular file, symlinks followed) and returns the Files to describe.
func FilesFromPaths(paths ...string) ([]File, error) {
	files := make([]File, 0, len(paths))
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("vmdk: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("vmdk: %s: not a regular file (%s)", p, fi.Mode().Type())
		}
		files = append(files, File{Path: p, Size: fi.Size()})
	}
	return files, nil
}
