package erofs

import "encoding/binary"

// CHUNK_BASED files (the fsmeta builder's): the file is cut into chunks of
// 2^chunkbits bytes, each mapped by an 8-byte erofs_inode_chunk_index
// (device id + block address, NullAddr for a hole). The index array starts
// at the first 8-byte boundary after the inode and its xattrs; i_u holds
// EROFS_CHUNK_FORMAT_INDEXES | (chunkbits - blkszbits).

// chunkCount is the number of chunk indexes a file of size bytes needs.
func chunkCount(size uint64, chunkBits uint8) uint64 {
	return (size + 1<<chunkBits - 1) >> chunkBits
}

// appendChunkIndexes appends the index array of cs to b.
func appendChunkIndexes(b []byte, cs []ChunkIndex) []byte {
	for _, c := range cs {
		b = binary.LittleEndian.AppendUint16(b, c.Advise)
		b = binary.LittleEndian.AppendUint16(b, c.DeviceID)
		b = binary.LittleEndian.AppendUint32(b, c.BlkAddr)
	}
	return b
}
