package differ

import (
	"hash"
	"io"
	"sync"
)

// prefetchReader reads src ahead in its own goroutine, hashing each chunk
// there, so that decompression plumbing and the diff ID digest run beside
// the converter instead of in its goroutine (on a 2-core host that is the
// difference between the converter waiting for SHA-256 and not).
//
// Read returns what src returned, in order, including its final error.
// Close must be called; it stops the goroutine if the reader is abandoned
// early and waits for it, so h is complete and unused once Read returned
// io.EOF or Close returned.
type prefetchReader struct {
	full   chan *chunk // filled chunks, in order
	free   chan *chunk // empty chunks for the producer
	done   chan struct{}
	exit   chan struct{}
	cur    *chunk
	off    int
	closed sync.Once
}

type chunk struct {
	buf []byte
	n   int
	err error
}

const (
	prefetchChunk  = 1 << 20
	prefetchChunks = 4
)

// chunkPool keeps the 1 MiB chunks between Applies. Allocating them anew
// zeroed 4 MiB per layer: for the small layers a deep image stacks by the
// hundred that was a third of an Apply's CPU time (BenchmarkApplyTinyLayer).
var chunkPool = sync.Pool{New: func() any { return &chunk{buf: make([]byte, prefetchChunk)} }}

func newPrefetchReader(src io.Reader, h hash.Hash) *prefetchReader {
	p := &prefetchReader{
		full: make(chan *chunk, prefetchChunks),
		free: make(chan *chunk, prefetchChunks),
		done: make(chan struct{}),
		exit: make(chan struct{}),
	}
	for range prefetchChunks {
		c := chunkPool.Get().(*chunk)
		c.n, c.err = 0, nil
		p.free <- c
	}
	go p.produce(src, h)
	return p
}

func (p *prefetchReader) produce(src io.Reader, h hash.Hash) {
	defer close(p.exit)
	for {
		var c *chunk
		select {
		case c = <-p.free:
		case <-p.done:
			return
		}
		c.n, c.err = io.ReadFull(src, c.buf)
		if c.err == io.ErrUnexpectedEOF {
			c.err = io.EOF // a short last chunk is the normal end
		}
		h.Write(c.buf[:c.n])
		select {
		case p.full <- c:
		case <-p.done:
			return
		}
		if c.err != nil {
			return
		}
	}
}

func (p *prefetchReader) Read(b []byte) (int, error) {
	for p.cur == nil || p.off == p.cur.n {
		if p.cur != nil {
			if p.cur.err != nil {
				return 0, p.cur.err
			}
			p.free <- p.cur
		}
		p.cur, p.off = <-p.full, 0
	}
	n := copy(b, p.cur.buf[p.off:p.cur.n])
	p.off += n
	return n, nil
}

// Close stops the producer, waits for it, and returns the chunks to the
// pool; Read must not be called after it. Closing twice is harmless.
func (p *prefetchReader) Close() error {
	p.closed.Do(func() {
		close(p.done)
		<-p.exit
		// The producer is gone: every chunk is in full, in free, or cur.
		if p.cur != nil {
			chunkPool.Put(p.cur)
			p.cur = nil
		}
		for _, ch := range []chan *chunk{p.full, p.free} {
			for len(ch) > 0 {
				chunkPool.Put(<-ch)
			}
		}
	})
	return nil
}
