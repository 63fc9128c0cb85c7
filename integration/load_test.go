package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// loadImages is how many unpacks run at once: the Debian image and
// loadImages-1 small generated ones.
const loadImages = 8

// TestLoad runs rounds of 8 concurrent image unpacks (the 3-layer Debian
// image and 7 distinct generated 2-layer images) while two loops prepare,
// view and remove snapshots on top of a committed stack, for ~45 s (5
// minutes with EROFS_STRESS=1). Each round's images are deleted under a
// lease that is then dropped, so containerd's GC removes their snapshots.
// Nothing may fail, and afterwards the daemon must be back where it was
// after a warm-up round: goroutines (from its pprof debug socket), open
// fds (/proc/<pid>/fd), and the disk blocks of the snapshotter root.
func TestLoad(t *testing.T) {
	differRequireRoot(t)
	debian := differAsset(t, "debian-3layer.oci.tar")
	duration := 45 * time.Second
	if os.Getenv("EROFS_STRESS") == "1" {
		duration = 5 * time.Minute
	}

	cfg, err := os.ReadFile(filepath.Join(RepoRoot(t), "hack", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	debugSock := filepath.Join(t.TempDir(), "debug.sock")
	conf := string(cfg) + fmt.Sprintf("\n[debug]\n  address = %q\n", debugSock)
	d := StartDaemon(t, DaemonOptions{Config: conf, LogLevel: "warn"})
	c := d.Client(t)
	ctx := d.Context(t)

	type image struct{ path, name string }
	gen := func(name string, i int) image {
		base := differTar(t, "etc/", fmt.Sprintf("etc/base-%d", i), "usr/", "usr/lib-"+strconv.Itoa(i))
		top := differTar(t, "etc/", fmt.Sprintf("etc/top-%d", i), "var/", fmt.Sprintf("var/data-%d", i))
		return image{ociArchive(t, name, []ociLayer{
			{differGzip(base), ocispec.MediaTypeImageLayerGzip, digest.FromBytes(base)},
			{differGzip(top), ocispec.MediaTypeImageLayerGzip, digest.FromBytes(top)},
		}), name}
	}
	imgs := []image{{debian, E2EImage}}
	for i := 1; i < loadImages; i++ {
		imgs = append(imgs, gen(fmt.Sprintf("docker.io/library/load-%d:latest", i), i))
	}

	// A stack that stays for the prepare/remove loops, under its own lease.
	keep := gen("docker.io/library/load-keep:latest", 1000)
	keepCtx := withTestLease(t, ctx, c)
	stack, err := ImportAndUnpack(keepCtx, c, keep.path, keep.name, "erofs-vm")
	if err != nil {
		t.Fatal(err)
	}
	parent := stack.ChainIDs[len(stack.ChainIDs)-1].String()
	settle := func() usage {
		// GC removes a dropped round's snapshots; wait until only the
		// kept stack is left, then for goroutines to finish.
		deadline := time.Now().Add(time.Minute)
		for {
			u := measure(t, d, debugSock)
			if u.Snapshots <= len(stack.ChainIDs) || time.Now().After(deadline) {
				return u
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	round := func(n int) error {
		// Every round starts from the kept stack alone, so each image is
		// really unpacked again (the unpacker skips layers whose
		// snapshots exist).
		if u := settle(); u.Snapshots > len(stack.ChainIDs) {
			return fmt.Errorf("round %d: %d snapshot dirs left from the last round", n, u.Snapshots)
		}
		ls := c.LeasesService()
		lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
		if err != nil {
			return err
		}
		lctx := leases.WithLease(ctx, lease.ID)
		var unpacks, loops sync.WaitGroup
		errs := make(chan error, loadImages+2)
		for _, im := range imgs {
			unpacks.Go(func() {
				if _, err := ImportAndUnpack(lctx, c, im.path, im.name, "erofs-vm"); err != nil {
					errs <- fmt.Errorf("round %d: %s: %w", n, im.name, err)
				}
			})
		}
		// The snapshot loops run for as long as the unpacks do.
		var ops atomic.Int64
		stop := make(chan struct{})
		for w := range 2 {
			loops.Go(func() {
				if err := prepareRemoveLoop(lctx, c, parent, fmt.Sprintf("load-%d-%d", n, w), w == 1, stop, &ops); err != nil {
					errs <- fmt.Errorf("round %d: prepare/remove loop %d: %w", n, w, err)
				}
			})
		}
		unpacks.Wait()
		close(stop)
		loops.Wait()
		close(errs)
		var all []error
		for e := range errs {
			all = append(all, e)
		}
		for _, im := range imgs {
			if err := c.ImageService().Delete(ctx, im.name, images.SynchronousDelete()); err != nil {
				all = append(all, fmt.Errorf("delete %s: %w", im.name, err))
			}
		}
		// Synchronous: containerd's GC runs before Delete returns.
		if err := ls.Delete(ctx, lease, leases.SynchronousDelete); err != nil {
			all = append(all, fmt.Errorf("drop lease: %w", err))
		}
		t.Logf("round %d: %d unpacks, %d snapshot prepare/remove ops", n, len(imgs), ops.Load())
		return errors.Join(all...)
	}

	// Warm-up: the first round creates what a daemon keeps for good (the
	// writable-layer template, gRPC streams, worker goroutines).
	if err := round(0); err != nil {
		t.Fatal(err)
	}
	base := settle()
	t.Logf("baseline: %+v", base)

	start := time.Now()
	rounds := 0
	for time.Since(start) < duration {
		rounds++
		if err := round(rounds); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds of %d concurrent unpacks in %v", rounds, len(imgs), time.Since(start).Round(time.Second))

	// Settle: GC has removed the rounds' snapshots; goroutines finish.
	after := settle()
	for deadline := time.Now().Add(30 * time.Second); !after.within(base) && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		after = measure(t, d, debugSock)
	}
	t.Logf("after: %+v", after)
	if !after.within(base) {
		t.Fatalf("the daemon did not return to its baseline after the load:\nbaseline %+v\nafter    %+v\nsnapshotter root now:\n%s",
			base, after, strings.Join(treeListing(t, d.SnapshotterRoot()), "\n"))
	}
	if !d.Running() {
		t.Fatal("the daemon died under load")
	}
}

// prepareRemoveLoop prepares (or views) a snapshot on parent, reads its
// mounts and removes it, until stop closes; every call must succeed.
func prepareRemoveLoop(ctx context.Context, c *client.Client, parent, prefix string, view bool, stop <-chan struct{}, ops *atomic.Int64) error {
	sn := c.SnapshotService("erofs-vm")
	for i := 0; ; i++ {
		if i > 0 { // at least one: the warm-up round creates the writable-layer template
			select {
			case <-stop:
				return nil
			default:
			}
		}
		key := fmt.Sprintf("%s-%d", prefix, i)
		var err error
		if view {
			_, err = sn.View(ctx, key, parent)
		} else {
			_, err = sn.Prepare(ctx, key, parent)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if _, err := sn.Mounts(ctx, key); err != nil {
			return fmt.Errorf("mounts of %s: %w", key, err)
		}
		if err := sn.Remove(ctx, key); err != nil {
			return fmt.Errorf("remove %s: %w", key, err)
		}
		ops.Add(1)
	}
}

// usage is what a leak would grow.
type usage struct {
	Goroutines int
	FDs        int
	DiskKiB    int64 // allocated blocks under the snapshotter root, metadata.db aside
	Snapshots  int   // entries under snapshots/
}

// within reports whether u is back at base: goroutines and fds within a
// small slack (the gRPC server keeps a few per connection and stream),
// disk and snapshot dirs not above base.
func (u usage) within(base usage) bool {
	return u.Goroutines <= base.Goroutines+10 && u.FDs <= base.FDs+4 &&
		u.DiskKiB <= base.DiskKiB && u.Snapshots <= base.Snapshots
}

func measure(t *testing.T, d *Daemon, debugSock string) usage {
	t.Helper()
	d.mu.Lock()
	pid := d.cmd.Process.Pid
	d.mu.Unlock()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	u := usage{FDs: len(fds), Goroutines: goroutines(t, debugSock)}
	root := d.SnapshotterRoot()
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Name() == "metadata.db" {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		u.DiskKiB += fi.Sys().(*syscall.Stat_t).Blocks / 2
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := os.ReadDir(filepath.Join(root, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	u.Snapshots = len(snaps)
	return u
}

// goroutines reads the daemon's goroutine count from its pprof endpoint on
// the debug socket ([debug] address in the config).
func goroutines(t *testing.T, sock string) int {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://debug/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("pprof on the debug socket: %v", err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	// "goroutine profile: total 123"
	n, err := strconv.Atoi(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]))
	if err != nil {
		t.Fatalf("goroutine profile header %q: %v", line, err)
	}
	return n
}
