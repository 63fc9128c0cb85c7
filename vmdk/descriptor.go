package vmdk

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// Sizes and limits of the descriptor format.
const (
	// SectorSize is the unit of every size and offset in a descriptor.
	SectorSize = 512
	// MaxExtentSectors is the largest extent a twoGbMaxExtentFlat
	// descriptor may hold: 2 GiB.
	MaxExtentSectors = 2 << 30 / SectorSize
	// MaxPathLen is the longest extent path qemu can read (%511[...]).
	MaxPathLen = 511
	// MaxDescriptorSize is how much of a descriptor qemu reads.
	MaxDescriptorSize = 1<<20 - 1

	// CreateTypeTwoGbMaxExtentFlat is the only create type this package writes.
	CreateTypeTwoGbMaxExtentFlat = "twoGbMaxExtentFlat"
	// NoParentCID is the parentCID of a disk without a parent.
	NoParentCID = 0xffffffff

	// Geometry the writer records; qemu and Linux ignore it, VMware wants it.
	geometryHeads   = 16
	geometrySectors = 63
)

// Extent access modes and types, as they appear in extent lines.
const (
	AccessRW       = "RW"
	AccessRDONLY   = "RDONLY"
	AccessNOACCESS = "NOACCESS"
	TypeFlat       = "FLAT"
	TypeZero       = "ZERO"
)

// Extent is one extent line: Sectors sectors of the disk, read from Path
// starting at sector Offset (FLAT), or zeros (ZERO, no path).
type Extent struct {
	Access  string
	Sectors int64
	Type    string
	Path    string
	// Offset is in sectors; only FLAT (and VMFS) extents have one.
	Offset int64
	// HasOffset tells an explicit offset 0 from none (non-flat types).
	HasOffset bool
}

// Entry is a key and its value, kept in file order.
type Entry struct {
	Key, Value string
}

// Descriptor is a parsed or generated VMDK text descriptor.
type Descriptor struct {
	Version    int
	CID        uint32
	ParentCID  uint32
	CreateType string
	// Header holds header keys other than the four above (for example
	// parentFileNameHint or encoding), unquoted, in file order.
	Header  []Entry
	Extents []Extent
	// DDB holds the disk database (ddb.*) keys with unquoted values.
	DDB []Entry
}

// Sectors is the virtual disk size in sectors: the sum of the extents.
func (d *Descriptor) Sectors() int64 {
	var n int64
	for _, e := range d.Extents {
		n += e.Sectors
	}
	return n
}

// Size is the virtual disk size in bytes.
func (d *Descriptor) Size() int64 { return d.Sectors() * SectorSize }

// Lookup returns the value of DDB key (e.g. "ddb.adapterType").
func (d *Descriptor) Lookup(key string) (string, bool) {
	for _, e := range d.DDB {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// WriteTo renders d in the layout qemu-img itself writes. It fails, writing
// nothing, if d holds something the format cannot express or qemu would
// misread (see the package doc).
func (d *Descriptor) WriteTo(w io.Writer) (int64, error) {
	b, err := d.MarshalText()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// MarshalText renders d; see WriteTo.
func (d *Descriptor) MarshalText() ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	// qemu finds "CID=" with strstr and skips exactly 4 bytes, so CID must
	// come before parentCID and neither may have spaces around '='.
	fmt.Fprintf(&b, "# Disk DescriptorFile\nversion=%d\nCID=%08x\nparentCID=%08x\ncreateType=\"%s\"\n",
		d.Version, d.CID, d.ParentCID, d.CreateType)
	for _, h := range d.Header {
		fmt.Fprintf(&b, "%s=\"%s\"\n", h.Key, h.Value)
	}
	b.WriteString("\n# Extent description\n")
	for _, e := range d.Extents {
		writeExtent(&b, e)
	}
	b.WriteString("\n# The Disk Data Base\n#DDB\n\n")
	for _, e := range d.DDB {
		fmt.Fprintf(&b, "%s = \"%s\"\n", e.Key, e.Value)
	}
	if b.Len() > MaxDescriptorSize {
		return nil, fmt.Errorf("vmdk: descriptor would be %d bytes, qemu reads only %d (too many extents)", b.Len(), MaxDescriptorSize)
	}
	return b.Bytes(), nil
}

func writeExtent(b *bytes.Buffer, e Extent) {
	b.WriteString(e.Access)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatInt(e.Sectors, 10))
	b.WriteByte(' ')
	b.WriteString(e.Type)
	if e.Type != TypeZero {
		b.WriteString(` "`)
		b.WriteString(e.Path)
		b.WriteByte('"')
	}
	if e.HasOffset {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(e.Offset, 10))
	}
	b.WriteByte('\n')
}
