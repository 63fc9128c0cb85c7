package snapshotter

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// TestConcurrent runs 16 goroutines that each, three times over, extract a
// layer onto a shared base, prepare a writable snapshot on it, write into
// its ext4 layer, commit it (conversion + fsmeta + VMDK), view it, and
// remove everything again. No call may fail, and afterwards only the base
// is left: no directory, temp file, mount or loop device leaks.
func TestConcurrent(t *testing.T) {
	requireHost(t)
	s, root := newTestSnapshotter(t, Config{SetImmutable: true, DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	stack(t, s, 1)
	const workers, rounds = 16, 3
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if err := cycle(t, s, fmt.Sprintf("g%d-r%d", g, r)); err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", g, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, s, root)
	entries, _ := os.ReadDir(s.snapshotsRoot())
	if len(entries) != 1 {
		t.Errorf("%d snapshot dirs left, want only the base's", len(entries))
	}
}

func cycle(t *testing.T, s *Snapshotter, n string) error {
	ctx := testContext(t)
	ms, err := s.Prepare(ctx, n+"-x", "l1", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: n}))
	if err != nil {
		return err
	}
	mkfsErofs(t, filepath.Join(ms[0].Source, "layer.erofs"), writeTree(t, map[string]string{n: n}))
	if err := s.Commit(ctx, n, n+"-x"); err != nil {
		return err
	}
	ms, err = s.Prepare(ctx, n+"-w", n)
	if err != nil {
		return err
	}
	mnt := t.TempDir()
	if err := mountLoop(ms[len(ms)-1].Source, mnt, "ext4", false, ""); err != nil {
		return err
	}
	werr := os.WriteFile(filepath.Join(mnt, "upper", "w"), []byte(n), 0o644)
	if err := unmountDetach(mnt); err != nil || werr != nil {
		return fmt.Errorf("write upper: %v %v", werr, err)
	}
	if err := s.Commit(ctx, n+"-c", n+"-w"); err != nil {
		return err
	}
	if _, err := s.View(ctx, n+"-v", n+"-c"); err != nil {
		return err
	}
	for _, k := range []string{n + "-v", n + "-c", n} {
		if err := s.Remove(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// TestConcurrentFirstUse: eight Prepares and Views race to be the first
// use of the same never-used layer. The merged disk is built exactly once,
// every caller gets mounts naming the complete disk, and the disk's bytes
// do not change under the later callers.
func TestConcurrentFirstUse(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{SetImmutable: true, DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	dirs := stack(t, s, 3)
	var (
		mu     sync.Mutex
		builds int
	)
	old := testHook
	testHook = func(step string) {
		if step == "merge:vmdk-written" {
			mu.Lock()
			builds++
			mu.Unlock()
		}
	}
	t.Cleanup(func() { testHook = old })
	const callers = 8
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			create := s.Prepare
			if i%2 == 1 {
				create = s.View
			}
			ms, err := create(ctx, fmt.Sprintf("use-%d", i), "l3")
			if err != nil {
				errs <- err
				return
			}
			fsmeta := ms[0].Source
			vmdk := filepath.Join(filepath.Dir(fsmeta), "merged.vmdk")
			for _, f := range []string{fsmeta, vmdk} {
				if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
					errs <- fmt.Errorf("caller %d: %s missing or empty when its mounts were returned: %v", i, f, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if builds != 1 {
		t.Errorf("merged disk of l3 built %d times, want once", builds)
	}
	if _, err := os.Stat(filepath.Join(dirs[1], "merged.vmdk")); !os.IsNotExist(err) {
		t.Errorf("l2, never used as a parent, has a merged disk: %v", err)
	}
}
