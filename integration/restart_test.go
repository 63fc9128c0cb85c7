package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// TestRestartCleanStop: an unpacked image and a writable snapshot with
// data in its rwlayer survive a SIGTERM stop and a start on the same root:
// the same snapshots with the same labels, every committed snapshot equal
// to the oracle through our reader, the top and the base layer equal to it
// through a kernel mount, and the writable snapshot commits after the
// restart into a layer that holds what was written before it.
func TestRestartCleanStop(t *testing.T) {
	differRequireRoot(t)
	archive := differAsset(t, "debian-3layer.oci.tar")
	oracle := rcOracle(t, rcLayerTars(t))

	d := StartDaemon(t, DaemonOptions{})
	c, ctx := d.Client(t), d.Context(t)
	rcImport(t, ctx, c, archive)
	if err := rcUnpack(ctx, c, rcImage); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	chain := rcChain(t, ctx, c, rcImage)
	lctx, _ := rcLease(t, ctx, c)
	sn := c.SnapshotService("erofs-vm")
	ms, err := sn.Prepare(lctx, "rw", chain[len(chain)-1])
	if err != nil {
		t.Fatal(err)
	}
	rcWriteRWLayer(t, rcRWLayer(t, ms), map[string]string{"written/before-restart": "hello\n"})
	before, err := rcSnapshots(ctx, c)
	if err != nil {
		t.Fatal(err)
	}

	d.Stop(t)
	store, bad := rcCheckStore(d.SnapshotterRoot())
	if len(bad) > 0 {
		t.Errorf("after SIGTERM, store and files disagree:\n%s", strings.Join(bad, "\n"))
	}
	d.Restart(t)
	c, ctx = d.Client(t), d.Context(t)
	lctx = leases.WithLease(ctx, leaseOf(t, lctx))
	sn = c.SnapshotService("erofs-vm")

	after, err := rcSnapshots(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("%d snapshots after restart, %d before", len(after), len(before))
	}
	for name, b := range before {
		a, ok := after[name]
		if !ok {
			t.Errorf("snapshot %s lost", name)
			continue
		}
		if a.Kind != b.Kind || a.Parent != b.Parent || !reflect.DeepEqual(a.Labels, b.Labels) {
			t.Errorf("snapshot %s changed:\nbefore %+v\nafter  %+v", name, b, a)
		}
	}
	rcCheckCommittedChain(t, d.SnapshotterRoot(), store, chain, oracle)
	rcKernelCheck(t, lctx, c, chain[len(chain)-1], oracle[len(chain)-1])
	rcKernelCheck(t, lctx, c, chain[0], oracle[0])

	ms2, err := sn.Mounts(lctx, "rw")
	if err != nil || !reflect.DeepEqual(ms, ms2) {
		t.Errorf("writable snapshot mounts after restart: %s, %v; before: %s", FormatMounts(ms2), err, FormatMounts(ms))
	}
	if err := sn.Commit(lctx, "rw-committed", "rw"); err != nil {
		t.Fatalf("commit after restart: %v", err)
	}
	info, err := sn.Stat(lctx, "rw-committed")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadLayerFile(info.Labels[snapshotter.LabelLayerBlobPath], "written/before-restart")
	if err != nil || got != "hello\n" {
		t.Errorf("committed layer: written/before-restart = %q, %v", got, err)
	}
}

// leaseOf returns the lease ID of ctx.
func leaseOf(t *testing.T, ctx context.Context) string {
	t.Helper()
	id, ok := leases.FromContext(ctx)
	if !ok {
		t.Fatal("no lease in context")
	}
	return id
}

// rcCheckCommittedChain checks that the committed snapshots of an image's
// chain (in namespace "default") are in the store and read back through
// our reader equal to the oracle.
func rcCheckCommittedChain(t *testing.T, snRoot string, store map[string]rcSnap, chain []string, oracle []rcTree) {
	t.Helper()
	for i, id := range chain {
		var s *rcSnap
		for _, x := range store {
			if ns, key := rcBackingKey(x.Name); ns == "default" && key == id && x.Kind == snapshots.KindCommitted {
				s = &x
				break
			}
		}
		if s == nil {
			t.Errorf("layer %d: no committed snapshot %s in the store", i+1, id)
			continue
		}
		tree, err := rcSnapshotReaderTree(snRoot, store, *s, nil)
		if err != nil {
			t.Errorf("layer %d: read %s: %v", i+1, id, err)
			continue
		}
		if diff := rcDiff(oracle[i], tree); len(diff) > 0 {
			t.Errorf("layer %d: snapshot %s != oracle:\n%s", i+1, id, strings.Join(diff, "\n"))
		}
	}
}

// TestRestartMidUnpack: the daemon stopped (SIGTERM) or killed (SIGKILL)
// while the erofs-vm differ is writing a layer leaves no partial
// snapshot: after the restart every dir under snapshots/ has a metastore
// entry, no temp file is left, a committed snapshot is complete, whatever
// is left is an active extract snapshot that its unpack lease still holds
// and that GC removes once the lease goes; a new unpack then succeeds and
// equals the oracle.
func TestRestartMidUnpack(t *testing.T) {
	differRequireRoot(t)
	archive := differAsset(t, "debian-3layer.oci.tar")
	oracle := rcOracle(t, rcLayerTars(t))
	for _, sig := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(sig, func(t *testing.T) {
			d := StartDaemon(t, DaemonOptions{})
			c, ctx := d.Client(t), d.Context(t)
			rcImport(t, ctx, c, archive)

			unpacked := make(chan error, 1)
			go func() { unpacked <- rcUnpack(ctx, c, rcImage) }()
			tmp, err := rcWaitLayerTemp(d.SnapshotterRoot(), unpacked)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s while %s is being written", sig, strings.TrimPrefix(tmp, d.SnapshotterRoot()+"/"))
			if sig == "SIGKILL" {
				d.Kill(t)
			} else {
				d.Stop(t)
			}
			if err := <-unpacked; err == nil {
				t.Fatal("unpack succeeded although the daemon went away in its middle")
			}
			if _, err := os.Lstat(tmp); err == nil && sig == "SIGTERM" {
				t.Errorf("%s left behind by a clean stop", tmp)
			}
			d.Restart(t)
			c, ctx = d.Client(t), d.Context(t)
			if err := rcGC(ctx, c); err != nil {
				t.Fatal(err)
			}
			store, bad := rcCheckStore(d.SnapshotterRoot())
			if len(bad) > 0 {
				t.Errorf("after restart, store and files disagree:\n%s", strings.Join(bad, "\n"))
			}
			for _, s := range store {
				if s.Kind != snapshots.KindCommitted {
					if s.Kind != snapshots.KindActive || s.Labels[snapshotter.LabelExtract] != "true" {
						t.Errorf("leftover %v snapshot %s is not an extract snapshot", s.Kind, s.Name)
					}
					t.Logf("left by the interrupted unpack: active %s (files: %v)", s.Name, dirNames(filepath.Join(d.SnapshotterRoot(), "snapshots", s.ID)))
				}
			}

			if err := rcUnpack(ctx, c, rcImage); err != nil {
				t.Fatalf("unpack after restart: %v", err)
			}
			// The interrupted unpack's lease holds its extract snapshot;
			// dropping every lease lets GC take it, and nothing else.
			ls, err := c.LeasesService().List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range ls {
				if err := c.LeasesService().Delete(ctx, l, leases.SynchronousDelete); err != nil {
					t.Fatal(err)
				}
			}
			store, bad = rcCheckStore(d.SnapshotterRoot())
			if len(bad) > 0 {
				t.Errorf("after the new unpack and GC, store and files disagree:\n%s", strings.Join(bad, "\n"))
			}
			chain := rcChain(t, ctx, c, rcImage)
			if len(store) != len(chain) {
				var names []string
				for n, s := range store {
					names = append(names, n+" ("+s.Kind.String()+")")
				}
				t.Errorf("store holds %d snapshots after GC, want the %d of the image: %v", len(store), len(chain), names)
			}
			rcCheckCommittedChain(t, d.SnapshotterRoot(), store, chain, oracle)
			lctx, _ := rcLease(t, ctx, c)
			rcKernelCheck(t, lctx, c, chain[len(chain)-1], oracle[len(chain)-1])
		})
	}
}

// rcWaitLayerTemp waits until a layer is being written into an extract
// snapshot (a ".layer.erofs.tmp-*" file exists under snapshots/) and
// returns its path; it fails if the unpack ends first or after 2 minutes.
func rcWaitLayerTemp(snRoot string, done <-chan error) (string, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		matches, _ := filepath.Glob(filepath.Join(snRoot, "snapshots", "*", ".layer.erofs.tmp-*"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.Size() > 1<<20 {
				return m, nil
			}
		}
		select {
		case err := <-done:
			return "", fmt.Errorf("unpack ended (%v) before a layer was seen being written", err)
		default:
		}
		time.Sleep(2 * time.Millisecond)
	}
	return "", fmt.Errorf("no layer being written after 2 minutes")
}

func dirNames(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
