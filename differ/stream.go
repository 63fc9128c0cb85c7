package differ

import (
	"context"
	"fmt"
	"io"
)

// blobBufferSize is the read size on the content store: 1 MiB keeps its
// ReadAt calls few.
const blobBufferSize = 1 << 20

// ctxReader fails reads once ctx is done, so a cancelled Apply stops within
// one buffer of data even when the converter is busy in a long file.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// countingReader counts the bytes read through it and, when limit > 0,
// fails once more than limit bytes come through.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.limit > 0 && c.n > c.limit {
		return n, fmt.Errorf("uncompressed layer exceeds the %d byte limit (max_layer_size)", c.limit)
	}
	return n, err
}

// progressReader reports the bytes read so far to fn before each read, as
// containerd's own applier does.
type progressReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.fn(p.n)
	n, err := p.r.Read(b)
	p.n += int64(n)
	return n, err
}
