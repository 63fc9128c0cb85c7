package snapshotter

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// TestCommitTwice: two Commits of the same writable snapshot, the second
// one past its first read when the first one finishes. The loser must fail
// NotFound without touching the committed snapshot: before it checked under
// the per-id lock, it lifted FS_IMMUTABLE_FL from the committed layer and
// then failed converting the writable layer the winner had dropped, leaving
// the layer unflagged under an immutable=true label.
func TestCommitTwice(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{SetImmutable: true, DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	stack(t, s, 1)
	if _, err := s.Prepare(ctx, "w", "l1"); err != nil {
		t.Fatal(err)
	}

	reads := 0
	secondRead := make(chan struct{})
	loser := make(chan error, 1)
	old := testHook
	t.Cleanup(func() { testHook = old })
	// Hooks run on the committing goroutines; reads and the spawn happen
	// in a fixed order: winner read, winner layer-ready (spawns the loser
	// and waits for its read), loser read.
	testHook = func(step string) {
		switch step {
		case "commit:read":
			reads++
			if reads == 2 {
				close(secondRead)
			}
		case "commit:layer-ready":
			if reads == 1 {
				go func() { loser <- s.Commit(ctx, "c2", "w") }()
				<-secondRead
			}
		}
	}
	if err := s.Commit(ctx, "c1", "w"); err != nil {
		t.Fatalf("first commit: %v", err)
	}
	if err := <-loser; !errdefs.IsNotFound(err) {
		t.Fatalf("second commit: %v, want NotFound", err)
	}
	testHook = old

	layer := filepath.Join(filepath.Dir(s.mustLabel(t, "c1", LabelLayerBlobPath)), "layer.erofs")
	if on, err := isImmutable(layer); err != nil || !on {
		t.Errorf("%s immutable = %v, %v after the losing commit; want true", layer, on, err)
	}
	if _, err := os.Stat(layer); err != nil {
		t.Error(err)
	}
	if _, err := s.Stat(ctx, "c2"); !errdefs.IsNotFound(err) {
		t.Errorf("c2 exists: %v", err)
	}
}

// TestCleanupDuringPrepare: a Cleanup that runs right after Prepare made
// its new-* directory must not take it for an orphan. With os.MkdirTemp
// the directory existed before it was marked pending, and a Cleanup in
// that window removed it: the Prepare failed.
func TestCleanupDuringPrepare(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	old := testHook
	t.Cleanup(func() { testHook = old })
	var cleanupErr error
	testHook = func(step string) {
		if step == "create:mkdir" {
			cleanupErr = s.Cleanup(ctx)
		}
	}
	ms, err := s.Prepare(ctx, "w", "")
	if err != nil {
		t.Fatalf("Prepare with a Cleanup in the middle: %v", err)
	}
	testHook = old
	if cleanupErr != nil {
		t.Fatal(cleanupErr)
	}
	if len(ms) != 1 {
		t.Fatalf("mounts %+v, want the ext4 rwlayer alone", ms)
	}
	if _, err := os.Stat(ms[0].Source); err != nil {
		t.Errorf("writable layer of the prepared snapshot: %v", err)
	}
}

// TestRWFormatDoesNotBlockCachedSizes: while mkfs.ext4 formats the
// template of a new size, a Prepare whose size is already cached proceeds.
// rwMu used to be held across the mkfs run, so every writable Prepare
// waited for it.
func TestRWFormatDoesNotBlockCachedSizes(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	if _, err := s.Prepare(ctx, "cached-0", ""); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	old := testHook
	t.Cleanup(func() { testHook = old })
	testHook = func(step string) {
		if step == "rwlayer:format" {
			close(entered)
			<-release
		}
	}
	newSize := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, "new-size", "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotMaxSize: strconv.Itoa(32 << 20)}))
		newSize <- err
	}()
	<-entered
	cached := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, "cached-1", "")
		cached <- err
	}()
	select {
	case err := <-cached:
		if err != nil {
			t.Errorf("Prepare of a cached size: %v", err)
		}
	case <-time.After(2 * time.Minute):
		// Not a timing assert: a deadlock detector. Release the formatter
		// so the test ends.
		close(release)
		t.Fatal("Prepare of a cached size waits for mkfs.ext4 of another size")
	}
	close(release)
	if err := <-newSize; err != nil {
		t.Fatalf("Prepare of a new size: %v", err)
	}
	testHook = old
}
