package differ

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/errdefs"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// Config is the differ's configuration.
type Config struct {
	// MaxLayerSize, when > 0, caps the uncompressed bytes of one layer and
	// the size of the EROFS image made from it (a decompression bomb stops
	// there instead of filling the disk).
	MaxLayerSize int64
}

// convertFunc is the shape of erofs.ConvertTar; tests swap it.
type convertFunc func(ctx context.Context, dst *os.File, src io.Reader, opts erofs.ConvertOptions) (*erofs.ConvertStats, error)

// Differ implements diff.Applier and diff.Comparer for erofs-vm snapshots.
// Calls share no state but the set of calls in flight, so any number of
// Apply and Compare calls may run at once (containerd's parallel unpack
// does that).
type Differ struct {
	store   content.Store
	cfg     Config
	convert convertFunc

	// stopping is cancelled by Close; every call's context follows it.
	// mu orders begin's calls.Add against Close's cancel-then-Wait.
	stopping context.Context
	stop     context.CancelFunc
	mu       sync.Mutex
	calls    sync.WaitGroup
}

var (
	_ diff.Applier  = (*Differ)(nil)
	_ diff.Comparer = (*Differ)(nil)
	_ io.Closer     = (*Differ)(nil)
)

// New returns a differ that reads and writes blobs in store.
func New(store content.Store, cfg Config) *Differ {
	stopping, stop := context.WithCancel(context.Background())
	return &Differ{store: store, cfg: cfg, convert: erofs.ConvertTar, stopping: stopping, stop: stop}
}

// closeTimeout bounds how long Close waits for calls to clean up.
const closeTimeout = 10 * time.Second

// Close cancels the Apply and Compare calls in flight and waits for them
// to clean up (up to closeTimeout); later calls fail with
// errdefs.ErrUnavailable. containerd closes plugins when it stops on
// SIGTERM but neither cancels nor waits for the RPCs in flight: without
// this, a clean stop in the middle of an Apply exits the process before
// the Apply removes its temp file.
func (d *Differ) Close() error {
	d.mu.Lock()
	d.stop()
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		d.calls.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(closeTimeout):
		return fmt.Errorf("erofs-vm differ: calls still running %v after close", closeTimeout)
	}
}

// begin registers a call: the returned context is also cancelled by
// Close, and end must be called when the call has cleaned up.
func (d *Differ) begin(ctx context.Context) (_ context.Context, end func(), _ error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping.Err() != nil {
		return nil, nil, fmt.Errorf("erofs-vm differ is closed: %w", errdefs.ErrUnavailable)
	}
	d.calls.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(d.stopping, cancel)
	return ctx, func() {
		unhook()
		cancel()
		d.calls.Done()
	}, nil
}
