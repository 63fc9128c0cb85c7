package erofs

import "encoding/binary"

// Hand-written codecs for the records read and written once per inode.
// Marshal and Unmarshal go through encoding/binary's reflection, which
// was a quarter of fsmeta's CPU time (a Commit decodes every inode of
// every layer); these do the same byte for byte, as format_test.go checks
// against the reflective path for random records.

var le = binary.LittleEndian

// AppendTo appends the 32 on-disk bytes of the inode to b.
func (in *InodeCompact) AppendTo(b []byte) []byte {
	b = le.AppendUint16(b, in.Format)
	b = le.AppendUint16(b, in.XattrCount)
	b = le.AppendUint16(b, in.Mode)
	b = le.AppendUint16(b, in.Nlink)
	b = le.AppendUint32(b, in.Size)
	b = le.AppendUint32(b, in.Reserved)
	b = le.AppendUint32(b, in.U)
	b = le.AppendUint32(b, in.Ino)
	b = le.AppendUint16(b, in.UID)
	b = le.AppendUint16(b, in.GID)
	return le.AppendUint32(b, in.Reserved2)
}

// decode fills in from b, which holds at least InodeCompactSize bytes.
func (in *InodeCompact) decode(b []byte) {
	_ = b[InodeCompactSize-1]
	*in = InodeCompact{
		Format: le.Uint16(b[0:]), XattrCount: le.Uint16(b[2:]), Mode: le.Uint16(b[4:]), Nlink: le.Uint16(b[6:]),
		Size: le.Uint32(b[8:]), Reserved: le.Uint32(b[12:]), U: le.Uint32(b[16:]), Ino: le.Uint32(b[20:]),
		UID: le.Uint16(b[24:]), GID: le.Uint16(b[26:]), Reserved2: le.Uint32(b[28:]),
	}
}

// AppendTo appends the 64 on-disk bytes of the inode to b.
func (in *InodeExtended) AppendTo(b []byte) []byte {
	b = le.AppendUint16(b, in.Format)
	b = le.AppendUint16(b, in.XattrCount)
	b = le.AppendUint16(b, in.Mode)
	b = le.AppendUint16(b, in.Reserved)
	b = le.AppendUint64(b, in.Size)
	b = le.AppendUint32(b, in.U)
	b = le.AppendUint32(b, in.Ino)
	b = le.AppendUint32(b, in.UID)
	b = le.AppendUint32(b, in.GID)
	b = le.AppendUint64(b, in.Mtime)
	b = le.AppendUint32(b, in.MtimeNsec)
	b = le.AppendUint32(b, in.Nlink)
	return append(b, in.Reserved2[:]...)
}

// decode fills in from b, which holds at least InodeExtendedSize bytes.
func (in *InodeExtended) decode(b []byte) {
	_ = b[InodeExtendedSize-1]
	*in = InodeExtended{
		Format: le.Uint16(b[0:]), XattrCount: le.Uint16(b[2:]), Mode: le.Uint16(b[4:]), Reserved: le.Uint16(b[6:]),
		Size: le.Uint64(b[8:]), U: le.Uint32(b[16:]), Ino: le.Uint32(b[20:]),
		UID: le.Uint32(b[24:]), GID: le.Uint32(b[28:]), Mtime: le.Uint64(b[32:]),
		MtimeNsec: le.Uint32(b[40:]), Nlink: le.Uint32(b[44:]),
	}
	copy(in.Reserved2[:], b[48:64])
}

// decode fills c from b, which holds at least ChunkIndexSize bytes.
func (c *ChunkIndex) decode(b []byte) {
	_ = b[ChunkIndexSize-1]
	*c = ChunkIndex{Advise: le.Uint16(b[0:]), DeviceID: le.Uint16(b[2:]), BlkAddr: le.Uint32(b[4:])}
}
