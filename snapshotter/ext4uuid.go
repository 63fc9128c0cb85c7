package snapshotter

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
)

// ext4 superblock fields this file touches (offsets in the 1024-byte
// superblock, from the kernel's struct ext4_super_block).
const (
	ext4SuperOffset     = 1024
	ext4SuperSize       = 1024
	ext4OffBlocksLo     = 0x04
	ext4OffFirstData    = 0x14
	ext4OffLogBlockSize = 0x18
	ext4OffBlocksPerGrp = 0x20
	ext4OffMagic        = 0x38
	ext4OffBlockGroupNr = 0x5A
	ext4OffFeatCompat   = 0x5C
	ext4OffFeatIncompat = 0x60
	ext4OffFeatROCompat = 0x64
	ext4OffUUID         = 0x68
	ext4OffBlocksHi     = 0x150
	ext4OffChecksum     = 0x3FC
	ext4Magic           = 0xEF53

	ext4CompatSparseSuper2  = 0x0200
	ext4IncompatCsumSeed    = 0x2000
	ext4Incompat64Bit       = 0x0080
	ext4ROCompatSparseSuper = 0x0001
	ext4ROCompatMetaCsum    = 0x0400
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// setExt4UUID gives the ext4 filesystem in f a new random UUID, in the
// primary superblock and every backup, as `tune2fs -U random` would. It
// needs the metadata_csum_seed feature: then no checksum depends on the
// UUID except each superblock's own, which it recomputes. This is what
// makes copying one pre-formatted template give the same result as a
// fresh mkfs.ext4: a filesystem with its own identity.
func setExt4UUID(f *os.File) error {
	var uuid [16]byte
	if _, err := rand.Read(uuid[:]); err != nil {
		return err
	}
	uuid[6] = uuid[6]&0x0f | 0x40 // version 4
	uuid[8] = uuid[8]&0x3f | 0x80 // RFC 4122 variant

	sb := make([]byte, ext4SuperSize)
	if _, err := f.ReadAt(sb, ext4SuperOffset); err != nil {
		return fmt.Errorf("read ext4 superblock of %s: %w", f.Name(), err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[ext4OffMagic:]) != ext4Magic {
		return fmt.Errorf("%s: not an ext4 filesystem", f.Name())
	}
	incompat := le.Uint32(sb[ext4OffFeatIncompat:])
	rocompat := le.Uint32(sb[ext4OffFeatROCompat:])
	if incompat&ext4IncompatCsumSeed == 0 {
		return fmt.Errorf("%s: no metadata_csum_seed, the UUID seeds every checksum", f.Name())
	}
	if le.Uint32(sb[ext4OffFeatCompat:])&ext4CompatSparseSuper2 != 0 {
		return fmt.Errorf("%s: sparse_super2 backups are not supported", f.Name())
	}
	blockSize := int64(1024) << le.Uint32(sb[ext4OffLogBlockSize:])
	blocks := int64(le.Uint32(sb[ext4OffBlocksLo:]))
	if incompat&ext4Incompat64Bit != 0 {
		blocks |= int64(le.Uint32(sb[ext4OffBlocksHi:])) << 32
	}
	firstData := int64(le.Uint32(sb[ext4OffFirstData:]))
	perGroup := int64(le.Uint32(sb[ext4OffBlocksPerGrp:]))
	if perGroup == 0 {
		return fmt.Errorf("%s: zero blocks per group", f.Name())
	}
	groups := (blocks - firstData + perGroup - 1) / perGroup

	type copyAt struct {
		off   int64
		group int64
	}
	copies := []copyAt{{ext4SuperOffset, 0}}
	for g := int64(1); g < groups; g++ {
		if rocompat&ext4ROCompatSparseSuper == 0 || hasSuperBackup(g) {
			copies = append(copies, copyAt{(firstData + g*perGroup) * blockSize, g})
		}
	}
	for _, c := range copies {
		if _, err := f.ReadAt(sb, c.off); err != nil {
			return fmt.Errorf("read ext4 superblock of group %d in %s: %w", c.group, f.Name(), err)
		}
		if le.Uint16(sb[ext4OffMagic:]) != ext4Magic || int64(le.Uint16(sb[ext4OffBlockGroupNr:])) != c.group {
			return fmt.Errorf("%s: no superblock backup for group %d at %d", f.Name(), c.group, c.off)
		}
		copy(sb[ext4OffUUID:], uuid[:])
		if rocompat&ext4ROCompatMetaCsum != 0 {
			// The kernel's crc32c(~0, sb, offsetof(s_checksum)), which has
			// no final inversion: the complement of the standard CRC.
			le.PutUint32(sb[ext4OffChecksum:], ^crc32.Checksum(sb[:ext4OffChecksum], castagnoli))
		}
		if _, err := f.WriteAt(sb, c.off); err != nil {
			return err
		}
	}
	return nil
}

// hasSuperBackup: with sparse_super, groups 1 and powers of 3, 5 and 7
// hold a superblock backup.
func hasSuperBackup(g int64) bool {
	if g <= 1 {
		return g == 1
	}
	for _, b := range []int64{3, 5, 7} {
		n := b
		for n < g {
			n *= b
		}
		if n == g {
			return true
		}
	}
	return false
}
