package erofs

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestRecordSizes pins every on-disk record to the size the kernel expects.
func TestRecordSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want int
	}{
		{"erofs_super_block", Superblock{}, SuperblockSize},
		{"erofs_inode_compact", InodeCompact{}, InodeCompactSize},
		{"erofs_inode_extended", InodeExtended{}, InodeExtendedSize},
		{"erofs_dirent", Dirent{}, DirentSize},
		{"erofs_deviceslot", DeviceSlot{}, DeviceSlotSize},
		{"erofs_xattr_ibody_header", XattrIbodyHeader{}, XattrIbodyHeaderSize},
		{"erofs_xattr_entry", XattrEntry{}, XattrEntrySize},
		{"erofs_inode_chunk_index", ChunkIndex{}, ChunkIndexSize},
	} {
		if got := binary.Size(tc.v); got != tc.want {
			t.Errorf("%s: %d bytes, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSuperblockOffsets pins field offsets taken from erofs_fs.h.
func TestSuperblockOffsets(t *testing.T) {
	sb := Superblock{
		Magic: Magic, BlkSzBits: 12, RootNid: 0x1234, Inos: 7, Blocks: 0x55,
		MetaBlkAddr: 0x66, FeatureIncompat: 0x8, ExtraDevices: 3, DevtSlotOff: 9,
		DirBlkBits: 0, PackedNid: 0x77,
	}
	b := sb.Marshal()
	le := binary.LittleEndian
	for _, tc := range []struct {
		field string
		off   int
		got   uint64
		want  uint64
	}{
		{"magic", 0, uint64(le.Uint32(b[0:])), Magic},
		{"blkszbits", 12, uint64(b[12]), 12},
		{"root_nid", 14, uint64(le.Uint16(b[14:])), 0x1234},
		{"inos", 16, le.Uint64(b[16:]), 7},
		{"blocks", 36, uint64(le.Uint32(b[36:])), 0x55},
		{"meta_blkaddr", 40, uint64(le.Uint32(b[40:])), 0x66},
		{"feature_incompat", 80, uint64(le.Uint32(b[80:])), 0x8},
		{"extra_devices", 86, uint64(le.Uint16(b[86:])), 3},
		{"devt_slotoff", 88, uint64(le.Uint16(b[88:])), 9},
		{"packed_nid", 96, le.Uint64(b[96:]), 0x77},
	} {
		if tc.got != tc.want {
			t.Errorf("%s at %d: %#x, want %#x", tc.field, tc.off, tc.got, tc.want)
		}
	}
}

func TestInodeOffsets(t *testing.T) {
	le := binary.LittleEndian
	ext := InodeExtended{Format: InodeFormat(true, LayoutChunkBased), Size: 1 << 33, U: 0xAABB, UID: 100000, Mtime: 0x1122, Nlink: 70000}
	b := ext.Marshal()
	if InodeFormatLayout(le.Uint16(b[0:])) != LayoutChunkBased || !InodeFormatExtended(le.Uint16(b[0:])) {
		t.Errorf("i_format %#x", le.Uint16(b[0:]))
	}
	if le.Uint64(b[8:]) != 1<<33 || le.Uint32(b[16:]) != 0xAABB || le.Uint32(b[24:]) != 100000 ||
		le.Uint64(b[32:]) != 0x1122 || le.Uint32(b[44:]) != 70000 {
		t.Errorf("extended inode fields misplaced: % x", b)
	}
	c := InodeCompact{Size: 5, U: 9, UID: 3, GID: 4}
	b = c.Marshal()
	if le.Uint32(b[8:]) != 5 || le.Uint32(b[16:]) != 9 || le.Uint16(b[24:]) != 3 || le.Uint16(b[26:]) != 4 {
		t.Errorf("compact inode fields misplaced: % x", b)
	}
	if XattrIbodySize(XattrIcount(12+4*5)) != 12+4*5 {
		t.Error("xattr icount round trip")
	}
}

// TestHandCodecsMatchReflection: the hand-written inode and chunk index
// codecs give exactly what encoding/binary gives for the same struct, for
// random bytes (every field, reserved ones included).
func TestHandCodecsMatchReflection(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	for range 1000 {
		b := random(InodeExtendedSize)

		var c, cr InodeCompact
		c.decode(b)
		if _, err := binary.Decode(b[:InodeCompactSize], binary.LittleEndian, &cr); err != nil {
			t.Fatal(err)
		}
		if c != cr {
			t.Fatalf("compact decode %+v, reflection %+v", c, cr)
		}
		if got, want := c.AppendTo(nil), marshal(&cr, InodeCompactSize); !bytes.Equal(got, want) || !bytes.Equal(got, b[:InodeCompactSize]) {
			t.Fatalf("compact encode %x, reflection %x, input %x", got, want, b[:InodeCompactSize])
		}

		var e, er InodeExtended
		e.decode(b)
		if _, err := binary.Decode(b, binary.LittleEndian, &er); err != nil {
			t.Fatal(err)
		}
		if e != er {
			t.Fatalf("extended decode %+v, reflection %+v", e, er)
		}
		if got, want := e.AppendTo(nil), marshal(&er, InodeExtendedSize); !bytes.Equal(got, want) || !bytes.Equal(got, b) {
			t.Fatalf("extended encode %x, reflection %x, input %x", got, want, b)
		}

		var ci, cir ChunkIndex
		ci.decode(b)
		if _, err := binary.Decode(b[:ChunkIndexSize], binary.LittleEndian, &cir); err != nil {
			t.Fatal(err)
		}
		if ci != cir {
			t.Fatalf("chunk index decode %+v, reflection %+v", ci, cir)
		}
	}
}
