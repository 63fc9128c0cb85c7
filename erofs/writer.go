package erofs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"golang.org/x/sys/unix"
)

// The data writer: the one pass over file data (docs/design.md §6). Each regular
// file's bytes go straight from the source reader into a large buffer that
// mirrors a contiguous range of the image, and from there to their final
// blocks with one pwrite per run of non-zero blocks. Files are laid out back
// to back from block 1 (block 0 holds the superblock), each starting on a
// block boundary, so every file is FLAT_PLAIN: one block address plus its
// size. That keeps every byte of every regular file block-addressable on
// the layer device, which is what fsmeta's chunk indexes need.
//
// Why no inline tails for regular files: a tail stored in the metadata area
// is not block-addressable, so fsmeta would have to copy it (and mkfs-style
// tail packing would also force the tail to be buffered until the metadata
// is written). The cost is at most one partly used block per file, the same
// as a tar's 512-byte padding rounded to 4 KiB.
//
// Whole zero blocks are not written: the image file keeps holes there (the
// final Truncate gives it its size), so sparse tar entries stay cheap.

// dataBufSize is each of the two write buffers: big enough that a 200 MB
// layer costs ~100 writes. They are anonymous mappings outside the Go heap:
// the garbage collector neither scans them nor counts them when it sizes
// the heap (8 MiB of live buffers would let the heap grow 8 MiB more), and
// pages a small layer never touches are never resident.
const dataBufSize = 2 << 20

type dataWriter struct {
	ctx       context.Context // checked once per buffer: a 10 GB file stops promptly
	w         io.WriterAt
	buf       []byte // pending bytes of the image from off; cap up to dataBufSize
	off       int64  // image offset of buf[0], block-aligned
	maxBlocks uint64 // 0: no limit
	written   int64  // bytes of file data accepted

	writeback *os.File // when set, writeback of each flushed buffer starts at once

	spare   []byte     // the other buffer: being written, or free
	pending chan error // result of the write in flight, nil if none
	maps    [][]byte   // the mappings, unmapped by close
}

func newDataWriter(ctx context.Context, w io.WriterAt, maxBytes int64) (*dataWriter, error) {
	d := &dataWriter{ctx: ctx, w: w, off: BlockSize}
	for range 2 {
		m, err := unix.Mmap(-1, 0, dataBufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("erofs: map write buffer: %w", err)
		}
		d.maps = append(d.maps, m)
	}
	d.buf, d.spare = d.maps[0][:0], d.maps[1][:0]
	if maxBytes > 0 {
		d.maxBlocks = uint64(maxBytes) / BlockSize
	}
	return d, nil
}

// close waits for the write in flight and unmaps the buffers; the writer
// is unusable afterwards. Every conversion defers it, so no write lands
// after the caller truncates dst on error.
func (d *dataWriter) close() {
	_ = d.wait()
	for _, m := range d.maps {
		_ = unix.Munmap(m)
	}
	d.maps, d.buf, d.spare = nil, nil, nil
}

// nextBlock is the first block not yet used by file data.
func (d *dataWriter) nextBlock() uint64 {
	return uint64(d.off+int64(len(d.buf))) / BlockSize
}

// errShortData is wrapped when a source ends before the size it announced.
var errShortData = errors.New("data ends early")

// writeFile copies exactly size bytes from r to the next free blocks and
// returns the first block.
func (d *dataWriter) writeFile(r io.Reader, size int64) (uint32, error) {
	start := d.nextBlock()
	end := start + blocksFor(uint64(size))
	if end > math.MaxUint32 {
		return 0, fmt.Errorf("data of %d bytes would end beyond block 2^32", size)
	}
	if d.maxBlocks > 0 && end > d.maxBlocks {
		return 0, fmt.Errorf("image would exceed the limit of %d bytes: %w", d.maxBlocks*BlockSize, ErrTooLarge)
	}
	var done int64
	for done < size {
		if len(d.buf) == cap(d.buf) {
			if err := d.flush(); err != nil {
				return 0, err
			}
		}
		n := int(min(int64(cap(d.buf)-len(d.buf)), size-done))
		got, err := io.ReadFull(r, d.buf[len(d.buf):len(d.buf)+n])
		d.buf = d.buf[:len(d.buf)+got]
		done += int64(got)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errShortData
			}
			return 0, fmt.Errorf("reading data: %d of %d bytes: %w", done, size, err)
		}
	}
	// Zero the tail of the last block: the buffer is reused.
	if pad := len(d.buf) % BlockSize; pad != 0 {
		d.buf = append(d.buf, zeroBlock[:BlockSize-pad]...)
	}
	d.written += size
	return uint32(start), nil
}

// flush hands the buffer to a background write and continues filling the
// other one: parsing the tar and copying data (one core) overlaps with
// the kernel copying the previous buffer into the page cache (the other),
// and at most one write is in flight, so memory stays at two buffers.
func (d *dataWriter) flush() error {
	if err := d.wait(); err != nil {
		return err
	}
	if err := d.ctx.Err(); err != nil {
		return err
	}
	if len(d.buf) == 0 {
		return nil
	}
	b, off := d.buf, d.off
	done := make(chan error, 1)
	d.pending = done
	go func() {
		err := writeRuns(d.w, b, off)
		if err == nil && d.writeback != nil {
			// Best effort: EINVAL/ESPIPE on file systems or files that
			// do not support it changes nothing but the fsync's cost.
			_ = unix.SyncFileRange(int(d.writeback.Fd()), off, int64(len(b)), unix.SYNC_FILE_RANGE_WRITE)
		}
		done <- err
	}()
	d.off += int64(len(b))
	d.buf, d.spare = d.spare[:0], b
	return nil
}

// wait waits for the write in flight, if any.
func (d *dataWriter) wait() error {
	if d.pending == nil {
		return nil
	}
	err := <-d.pending
	d.pending = nil
	return err
}

// writeRuns writes b's non-zero blocks at off, one write per run.
func writeRuns(w io.WriterAt, b []byte, off int64) error {
	for i := 0; i < len(b); {
		for i < len(b) && isZeroBlock(b[i:min(i+BlockSize, len(b))]) {
			i += BlockSize
		}
		j := i
		for j < len(b) && !isZeroBlock(b[j:min(j+BlockSize, len(b))]) {
			j += BlockSize
		}
		j = min(j, len(b))
		if j > i {
			if _, err := w.WriteAt(b[i:j], off+int64(i)); err != nil {
				return fmt.Errorf("writing image: %w", err)
			}
		}
		i = j
	}
	return nil
}

// isZeroBlock reports whether b is all zeros. Most data blocks differ from
// zero in their first bytes, so the full compare is rare.
func isZeroBlock(b []byte) bool {
	if len(b) >= 8 && (b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7]) != 0 {
		return false
	}
	return bytes.Equal(b, zeroBlock[:len(b)])
}

// finishImage writes t's metadata after the data and sizes dst.
func finishImage(dst *os.File, d *dataWriter, t *Tree, opts ConvertOptions) (*ImageInfo, error) {
	if err := d.flush(); err != nil {
		return nil, fmt.Errorf("erofs: %w", err)
	}
	if err := d.wait(); err != nil {
		return nil, fmt.Errorf("erofs: %w", err)
	}
	io := ImageOptions{MetaBlkAddr: uint32(d.nextBlock())}
	if opts.MaxImageSize > 0 {
		io.MaxBlocks = uint64(opts.MaxImageSize) / BlockSize
	}
	info, err := t.WriteImage(dst, io)
	if err != nil {
		return nil, err
	}
	if err := dst.Truncate(int64(info.Blocks) * BlockSize); err != nil {
		return nil, fmt.Errorf("erofs: size image: %w", err)
	}
	return info, nil
}
