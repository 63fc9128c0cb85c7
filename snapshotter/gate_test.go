package snapshotter

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/internal/commitgate"
)

// TestCommitGate: while something holds a byte-range OFD lock on the
// container's rwlayer.img, as QEMU does with file.locking=on, Commit fails
// with FailedPrecondition and changes nothing: no committed key, the active
// snapshot's record and rwlayer.img as they were. With the quiesced label
// Commit reads anyway, and the label is not stored. Once the lock is gone a
// plain Commit works.
func TestCommitGate(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	stack(t, s, 1)
	for _, key := range []string{"w1", "w2"} {
		if _, err := s.Prepare(ctx, key, "l1"); err != nil {
			t.Fatal(err)
		}
	}
	hold := func(key string) func() {
		f, err := os.OpenFile(filepath.Join(s.dir(idOf(t, s, key)), "rwlayer.img"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 100, Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
		return func() { f.Close() }
	}

	release := hold("w1")
	img := filepath.Join(s.dir(idOf(t, s, "w1")), "rwlayer.img")
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	infoBefore, err := s.Stat(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Commit(ctx, "c1", "w1")
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Commit while the VM holds rwlayer.img: %v, want FailedPrecondition", err)
	}
	if _, err := s.Stat(ctx, "c1"); !errdefs.IsNotFound(err) {
		t.Errorf("target key after a refused Commit: %v, want NotFound", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(after, before) {
		t.Error("rwlayer.img changed by a refused Commit")
	}
	if infoAfter, err := s.Stat(ctx, "w1"); err != nil || infoAfter.Kind != snapshots.KindActive || !reflect.DeepEqual(infoAfter.Labels, infoBefore.Labels) || !infoAfter.Updated.Equal(infoBefore.Updated) {
		t.Errorf("active snapshot after a refused Commit: %+v, %v; want as before %+v", infoAfter, err, infoBefore)
	}
	if _, err := os.Lstat(filepath.Join(s.dir(idOf(t, s, "w1")), "layer.erofs")); !os.IsNotExist(err) {
		t.Errorf("a refused Commit left a layer.erofs: %v", err)
	}
	release()
	if err := s.Commit(ctx, "c1", "w1"); err != nil {
		t.Fatalf("Commit once the VM is gone: %v", err)
	}

	// Quiesced: the runtime paused the VM with the ext4 frozen; its lock
	// stays, and Commit reads anyway.
	release = hold("w2")
	defer release()
	if err := s.Commit(ctx, "c2", "w2", snapshots.WithLabels(map[string]string{commitgate.QuiescedLabel: "true", "kept": "yes"})); err != nil {
		t.Fatalf("quiesced Commit while locked: %v", err)
	}
	info, err := s.Stat(ctx, "c2")
	if err != nil {
		t.Fatal(err)
	}
	if _, stored := info.Labels[commitgate.QuiescedLabel]; stored || info.Labels["kept"] != "yes" {
		t.Errorf("labels of the quiesced commit: %v; want the caller's other labels kept and %s dropped", info.Labels, commitgate.QuiescedLabel)
	}
}
