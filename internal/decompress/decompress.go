// Package decompress turns a layer blob into its uncompressed stream, the
// one path the differ's Apply and erofsctl convert share: gzip, zstd or
// plain tar detected from the magic bytes, with containerd's choice of
// decoders and plumbing that keeps an external inflater fed.
package decompress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/log"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Open returns the uncompressed stream, and the compression it found, of a layer blob, detecting
// gzip, zstd or plain tar from the magic bytes as containerd's
// compression.DecompressStream does, and choosing the same decoders: an
// external igzip or unpigz for gzip when on PATH (honouring
// CONTAINERD_DISABLE_IGZIP and CONTAINERD_DISABLE_PIGZ), else klauspost's
// gzip; klauspost's zstd.
//
// The difference is how an external inflater is plumbed. DecompressStream
// feeds it through 32 KiB copies and hands its output over an io.Pipe, one
// goroutine handoff per 32 KiB: for a 121 MB layer that doubled igzip's
// wall time on a 2-core host (0.42 s vs 0.23 s for inflate + SHA-256, see
// BENCHMARKS.md). Here the inflater reads and writes OS pipes enlarged to
// 1 MiB, fed in 1 MiB writes, and the caller reads its stdout directly.
//
// One departure from containerd's choice: a gzip blob smaller than
// smallGzipBlob is inflated in process. Starting igzip costs ~1.5 ms, in
// process a small layer takes ~35 µs (differ's BenchmarkApplyTinyLayer), and
// images that stack a hundred small layers pay that start once per layer.
//
// Close must be called; it stops the inflater if the stream was abandoned.
// size is the blob's length, -1 if unknown (a stream).
func Open(ctx context.Context, blob *bufio.Reader, size int64) (io.ReadCloser, compression.Compression, error) {
	magic, err := blob.Peek(10)
	if err != nil && err != io.EOF {
		return nil, compression.Uncompressed, err
	}
	inflater := inflaterPath()
	if size >= 0 && size < smallGzipBlob {
		inflater = ""
	}
	rc, err := decompressWith(ctx, blob, inflater)
	return rc, compression.DetectCompression(magic), err
}

// smallGzipBlob is the compressed size below which in-process gzip beats
// starting an external inflater: klauspost inflates ~110 MB/s here and
// igzip ~250 MB/s (docs/design.md §10), so igzip's start (~1.5 ms) pays for
// itself only from a few hundred KiB of blob on.
const smallGzipBlob = 256 << 10

// decompressWith is decompress with the external gzip inflater given: ""
// decodes gzip in process.
func decompressWith(ctx context.Context, blob *bufio.Reader, inflater string) (io.ReadCloser, error) {
	magic, err := blob.Peek(10)
	if err != nil && err != io.EOF {
		return nil, err
	}
	switch c := compression.DetectCompression(magic); c {
	case compression.Uncompressed:
		// An empty blob lands here too: it is an empty (invalid) tar,
		// which the converter reports.
		return io.NopCloser(blob), nil
	case compression.Gzip:
		if inflater != "" {
			return startInflater(ctx, inflater, blob)
		}
		return kgzip.NewReader(blob)
	case compression.Zstd:
		// One decoder goroutine: the pipeline already keeps both cores of
		// a small host busy (decode, SHA-256, conversion, page-cache
		// writes), and the decoder's own block-level concurrency only
		// added handoffs there: the rootfs layer's Apply took 0.30 s with
		// the default (min(4, GOMAXPROCS)) and 0.25 s with 1.
		zr, err := zstd.NewReader(blob, zstd.WithDecoderLowmem(false), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	default:
		return nil, fmt.Errorf("unsupported compression %s", c.Extension())
	}
}

// inflaterPath is the external gzip decompressor containerd itself would
// run, or "" for the in-process one. Looked up once, as containerd does.
var inflaterPath = sync.OnceValue(func() string {
	return chooseInflater(os.Getenv, exec.LookPath)
})

// chooseInflater applies containerd's rule: igzip, else unpigz, each unless
// its CONTAINERD_DISABLE_* variable parses as true.
func chooseInflater(getenv func(string) string, lookPath func(string) (string, error)) string {
	for _, c := range []struct{ name, disableEnv string }{
		{"igzip", "CONTAINERD_DISABLE_IGZIP"},
		{"unpigz", "CONTAINERD_DISABLE_PIGZ"},
	} {
		if v := getenv(c.disableEnv); v != "" {
			disabled, err := strconv.ParseBool(v)
			if err != nil {
				log.L.WithError(err).Warnf("erofs-vm: cannot parse %s=%q", c.disableEnv, v)
			}
			if disabled {
				continue
			}
		}
		if p, err := lookPath(c.name); err == nil {
			log.L.Debugf("erofs-vm: using %s for gzip layers", p)
			return p
		}
	}
	return ""
}

// pipeSize is what the inflater's pipes are grown to: the inflaters write
// 1 MiB at a time, and the default 64 KiB pipe makes every such write 16
// round trips between the two processes.
const pipeSize = 1 << 20

// bigPipe returns a pipe enlarged to pipeSize where the kernel allows it
// (fs.pipe-max-size caps unprivileged callers; the default pipe still works).
func bigPipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	_, _ = unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, pipeSize)
	return r, w, nil
}

// inflater is the stdout of an external gzip decompressor. Read returns
// io.EOF only when the process exited 0 and its whole input was fed;
// otherwise the first failure, with the tool's stderr.
type inflater struct {
	cmd    *exec.Cmd
	out    *os.File
	stderr *tailBuffer
	fed    chan error // the feeder's outcome, buffered

	once sync.Once
	err  error // the outcome of wait
}

func startInflater(ctx context.Context, path string, src io.Reader) (_ *inflater, retErr error) {
	inR, inW, err := bigPipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := bigPipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	defer func() {
		// The child holds its own copies of its ends from Start on.
		inR.Close()
		outW.Close()
		if retErr != nil {
			inW.Close()
			outR.Close()
		}
	}()
	z := &inflater{
		cmd:    exec.CommandContext(ctx, path, "-d", "-c"),
		out:    outR,
		stderr: &tailBuffer{max: 4096},
		fed:    make(chan error, 1),
	}
	// *os.File ends: the child gets the fds themselves, no copy goroutines.
	z.cmd.Stdin, z.cmd.Stdout, z.cmd.Stderr = inR, outW, z.stderr
	if err := z.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go func() {
		// Plain wrappers keep io.CopyBuffer from taking bufio.Reader's
		// WriteTo or os.File's ReadFrom, both of which copy 32 KiB at a time.
		_, err := io.CopyBuffer(struct{ io.Writer }{inW}, struct{ io.Reader }{src}, make([]byte, pipeSize))
		inW.Close()
		if errors.Is(err, unix.EPIPE) {
			err = nil // the inflater quit early; its exit status says why
		}
		z.fed <- err
	}()
	return z, nil
}

func (z *inflater) Read(p []byte) (int, error) {
	n, err := z.out.Read(p)
	if err == io.EOF {
		if werr := z.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// wait reaps the inflater and the feeder and returns what went wrong, if
// anything, reading failures first: a short read of the blob may still be
// a valid (shorter) gzip stream, so it must not pass for the end.
func (z *inflater) wait() error {
	z.once.Do(func() {
		werr := z.cmd.Wait()
		ferr := <-z.fed
		switch {
		case ferr != nil:
			z.err = fmt.Errorf("read blob: %w", ferr)
		case werr != nil:
			msg := strings.TrimSpace(z.stderr.String())
			z.err = fmt.Errorf("%s: %w: %s", z.cmd.Path, werr, msg)
		}
	})
	return z.err
}

// Close stops the inflater, if the stream was abandoned, and reaps it.
func (z *inflater) Close() error {
	z.out.Close()
	// After a reap Kill is a no-op (ErrProcessDone); before, the inflater
	// would otherwise go on until it next writes to the closed pipe.
	_ = z.cmd.Process.Kill()
	_ = z.wait()
	return nil
}

// tailBuffer keeps the last max bytes written to it: a misbehaving tool
// cannot grow the daemon's memory through its stderr.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
