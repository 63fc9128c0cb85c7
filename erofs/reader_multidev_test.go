package erofs

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// Multi-device images: mkfs.erofs --blobdev puts chunked file data on an
// extra device, addressed by 8-byte chunk indexes with device id 1. Read
// with the device file, and read as one flat file (image + blob
// concatenated, mapped_blkaddr set), as the kernel mounts a merged VMDK.

// setDeviceSlot patches device slot i (0-based) of an image in place and
// fixes the superblock checksum, as a writer that knew the flat layout
// would have written it.
func setDeviceSlot(t *testing.T, img []byte, i int, blocks, mapped uint32) {
	t.Helper()
	var sb Superblock
	if err := Unmarshal(img[SuperblockOffset:], &sb); err != nil {
		t.Fatal(err)
	}
	slot := int(sb.DevtSlotOff)*DeviceSlotSize + i*DeviceSlotSize
	binary.LittleEndian.PutUint32(img[slot+64:], blocks)
	binary.LittleEndian.PutUint32(img[slot+68:], mapped)
	fixChecksum(img)
}

// fixChecksum recomputes the superblock crc32c after a test edits block 0.
func fixChecksum(img []byte) {
	sb := img[SuperblockOffset:BlockSize]
	clear(sb[4:8])
	binary.LittleEndian.PutUint32(sb[4:], ^crc32.Checksum(sb, crc32.MakeTable(crc32.Castagnoli)))
}

func padBlock(b []byte) []byte {
	if r := len(b) % BlockSize; r != 0 {
		b = append(b, make([]byte, BlockSize-r)...)
	}
	return b
}

func TestReaderMultiDevice(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	buildTree(t, src, treeOpts{})
	dir := t.TempDir()
	blob := filepath.Join(dir, "blob")
	img := mkfsErofs(t, src, "--blobdev="+blob, "--chunksize=4096")
	runCmd(t, "fsck.erofs", "--device="+blob, img)

	t.Run("with-device", func(t *testing.T) {
		im, err := Open(img, blob)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if im.Flat() || len(im.Devices()) != 1 {
			t.Fatalf("flat %v, devices %+v", im.Flat(), im.Devices())
		}
		fi, err := im.Lstat("big")
		if err != nil {
			t.Fatal(err)
		}
		ext, err := im.Extents(fi.Sys().(*Inode))
		if err != nil {
			t.Fatal(err)
		}
		if len(ext) != 1 || ext[0].Device != 1 || ext[0].Length != uint64(fi.Size()) {
			t.Fatalf("extents of big: %+v, want one extent on device 1", ext)
		}
		compareTree(t, im, src, cmpOpts{skipRootMeta: true})
		compareTree(t, im, testmount.Erofs(t, img, blob), cmpOpts{inoIsNid: true})
	})

	t.Run("missing-mapped-blkaddr", func(t *testing.T) {
		// mkfs.erofs 1.5 leaves blocks and mapped_blkaddr 0: without the
		// device file the data cannot be found, and the error says why.
		im, err := Open(img)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if d := im.Devices(); len(d) != 1 || d[0].MappedBlkAddr != 0 {
			t.Fatalf("devices %+v: mkfs.erofs 1.5 changed, update this test", d)
		}
		_, err = fsFileSum(im, "big")
		if err == nil || !strings.Contains(err.Error(), "mapped_blkaddr") {
			t.Fatalf("reading big without its device: %v", err)
		}
		if _, err := Open(img, blob, blob); err == nil {
			t.Fatal("Open with 2 devices for a 1-device image succeeded")
		}
	})

	t.Run("flat", func(t *testing.T) {
		meta, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(blob)
		if err != nil {
			t.Fatal(err)
		}
		meta, data = padBlock(meta), padBlock(data)
		setDeviceSlot(t, meta, 0, uint32(len(data)/BlockSize), uint32(len(meta)/BlockSize))
		flat := filepath.Join(t.TempDir(), "flat.img")
		if err := os.WriteFile(flat, append(meta, data...), 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := Open(flat)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if !im.Flat() {
			t.Fatal("not in flat mode")
		}
		compareTree(t, im, src, cmpOpts{skipRootMeta: true})
		// The kernel mounts the concatenation as ONE loop device.
		compareTree(t, im, testmount.Erofs(t, flat), cmpOpts{inoIsNid: true})

		// The patched metadata still reads with the blob as a device.
		patched := filepath.Join(t.TempDir(), "patched.img")
		if err := os.WriteFile(patched, meta, 0o644); err != nil {
			t.Fatal(err)
		}
		im2, err := Open(patched, blob)
		if err != nil {
			t.Fatal(err)
		}
		defer im2.Close()
		compareTree(t, im2, src, cmpOpts{skipRootMeta: true})
	})

	t.Run("device-id-mask", func(t *testing.T) {
		// The kernel masks chunk device ids with roundup_pow_of_two(n+1)-1
		// (1 here), so id 3 reads as device 1: the data stays correct.
		meta, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		bf, err := os.Open(blob)
		if err != nil {
			t.Fatal(err)
		}
		defer bf.Close()
		im, err := NewImage(bytes.NewReader(meta), bf)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := im.Lstat("small")
		if err != nil {
			t.Fatal(err)
		}
		in, err := im.inode(fi.Sys().(*Inode).Nid)
		if err != nil {
			t.Fatal(err)
		}
		if in.chunkFmt&ChunkFormatIndexes == 0 {
			t.Fatalf("chunk format %#x: want 8-byte indexes with a blob device", in.chunkFmt)
		}
		idx := (in.tailStart() + 7) &^ 7
		binary.LittleEndian.PutUint16(meta[idx+2:], 3)
		im, err = NewImage(bytes.NewReader(meta), bf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fsFileSum(im, "small")
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := fileSum(filepath.Join(src, "small")); got != want {
			t.Fatalf("small with device id 3: sha %s, want %s", got, want)
		}
	})
}
