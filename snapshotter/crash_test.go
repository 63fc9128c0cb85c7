package snapshotter

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// Crash recovery. Each case runs one operation in a child process (this
// test binary, TestCrashChild) that SIGKILLs itself at a named step: no
// deferred cleanup runs, an open bolt transaction is never committed, a
// conversion mount stays mounted. The parent then reopens the snapshotter
// at the same root (which runs recovery), checks the snapshot is in either
// its old or its new state, that a retried operation succeeds, and that
// nothing is left behind: no orphan directory, temp file, mount or loop.

const (
	envCrashRoot = "EROFS_VM_CRASH_ROOT"
	envCrashOp   = "EROFS_VM_CRASH_OP"
	envCrashStep = "EROFS_VM_CRASH_STEP"
)

// TestCrashChild is the child half; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	root := os.Getenv(envCrashRoot)
	if root == "" {
		t.Skip("child of TestCrash only")
	}
	step := os.Getenv(envCrashStep)
	testHook = func(s string) {
		if s == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	s, err := open(root, Config{SetImmutable: true, DefaultWritableSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	switch op := os.Getenv(envCrashOp); op {
	case "prepare":
		_, err = s.Prepare(ctx, "new", "l2")
	case "prepare-first-use":
		_, err = s.Prepare(ctx, "new", "l3")
	case "commit-writable":
		err = s.Commit(ctx, "c", "w")
	case "commit-extract":
		err = s.Commit(ctx, "c", "x")
	case "remove":
		err = s.Remove(ctx, "l3")
	default:
		t.Fatalf("unknown op %q", op)
	}
	t.Fatalf("step %s never reached (err %v)", step, err)
}

// check verifies the state after a crash; recorded says the crash came
// after the operation's transaction committed.
type check func(t *testing.T, s *Snapshotter, recorded bool)

func TestCrash(t *testing.T) {
	requireHost(t)
	cases := []struct {
		op     string
		steps  []string // in order; the last one is after the record
		verify check
	}{
		{"prepare", []string{"create:populated", "create:renamed", "create:recorded"}, verifyPrepare("l2")},
		// l3 was never used as a parent: this Prepare builds its merged disk.
		{"prepare-first-use", []string{"merge:fsmeta-written", "merge:manifest-written", "merge:vmdk-written", "merge:immutable-set", "create:populated", "create:renamed", "create:recorded"}, verifyPrepare("l3")},
		{"commit-writable", []string{"commit:upper-mounted", "commit:layer-ready", "commit:immutable-set", "commit:recorded"}, verifyCommit("w", "written in w")},
		{"commit-extract", []string{"commit:layer-ready", "commit:immutable-set", "commit:recorded"}, verifyCommit("x", "x")},
		{"remove", []string{"remove:recorded", "remove:unflagged", "remove:deleted"}, verifyRemove},
	}
	for _, tc := range cases {
		for i, step := range tc.steps {
			t.Run(tc.op+"/"+step, func(t *testing.T) {
				root := t.TempDir()
				t.Cleanup(func() { liftAll(root) })
				seedCrashRoot(t, root)
				cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), envCrashRoot+"="+root, envCrashOp+"="+tc.op, envCrashStep+"="+step)
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("child did not die at %s: %v\n%s", step, err, out)
				}
				s, err := open(root, Config{SetImmutable: true, DefaultWritableSize: 64 << 20})
				if err != nil {
					t.Fatalf("reopen after crash: %v", err)
				}
				defer s.Close()
				tc.verify(t, s, i == len(tc.steps)-1)
				if err := s.Cleanup(testContext(t)); err != nil {
					t.Fatal(err)
				}
				assertNoLeftovers(t, s, root)
			})
		}
	}
}

// seedCrashRoot makes l1 <- l2 <- l3 (extract layers), an active writable w
// over l2 holding one new file, and an extract snapshot x over l2 with its
// layer.
func seedCrashRoot(t *testing.T, root string) {
	s, err := open(root, Config{SetImmutable: true, DefaultWritableSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stack(t, s, 3)
	ctx := testContext(t)
	ms, err := s.Prepare(ctx, "w", "l2")
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if err := mountLoop(ms[len(ms)-1].Source, mnt, "ext4", false, ""); err != nil {
		t.Fatal(err)
	}
	werr := os.WriteFile(filepath.Join(mnt, "upper", "w"), []byte("written in w"), 0o644)
	if err := unmountDetach(mnt); err != nil || werr != nil {
		t.Fatal(err, werr)
	}
	ms, err = s.Prepare(ctx, "x", "l2", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: "c"}))
	if err != nil {
		t.Fatal(err)
	}
	mkfsErofs(t, filepath.Join(ms[0].Source, "layer.erofs"), writeTree(t, map[string]string{"x": "x"}))
}

// verifyPrepare: before the record no snapshot exists and a retry works;
// either way the mounts name files that exist, the parent's merged disk is
// complete (with its flags), and the kernel reads the parent's stack
// through it.
func verifyPrepare(parent string) check {
	return func(t *testing.T, s *Snapshotter, recorded bool) {
		ctx := testContext(t)
		_, err := s.Stat(ctx, "new")
		if !recorded {
			if !errdefs.IsNotFound(err) {
				t.Fatalf("snapshot recorded though the crash came first: %v", err)
			}
			if _, err := s.Prepare(ctx, "new", parent); err != nil {
				t.Fatalf("retry: %v", err)
			}
		} else if err != nil {
			t.Fatalf("recorded snapshot lost: %v", err)
		}
		ms, err := s.Mounts(ctx, "new")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if _, err := os.Stat(m.Source); err != nil {
				t.Errorf("mount source missing: %v", err)
			}
		}
		if got := s.mustLabel(t, parent, LabelFSMetaReady); got != "true" {
			t.Fatalf("%s: fsmeta-ready = %q", parent, got)
		}
		dir := filepath.Dir(s.mustLabel(t, parent, LabelLayerBlobPath))
		for _, f := range mergedFiles {
			if on, err := isImmutable(filepath.Join(dir, f)); err != nil || !on {
				t.Errorf("%s/%s immutable %v, %v", parent, f, on, err)
			}
		}
		w, err := newHostMounter(s, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		vm, err := w.View(ctx, "check", parent)
		if err != nil {
			t.Fatal(err)
		}
		for p, c := range map[string]string{"only-l1/f": "l1", "only-" + parent + "/f": parent, "common": "from " + parent} {
			b, err := os.ReadFile(filepath.Join(vm[0].Source, p))
			if err != nil || string(b) != c {
				t.Errorf("%s = %q, %v; want %q", p, b, err, c)
			}
		}
		if err := w.Remove(ctx, "check"); err != nil {
			t.Fatal(err)
		}
	}
}

// verifyCommit: before the record the snapshot is still active and a
// retried Commit works; after it, the committed snapshot is complete. The
// kernel then reads the committed stack.
func verifyCommit(key, content string) check {
	return func(t *testing.T, s *Snapshotter, recorded bool) {
		ctx := testContext(t)
		info, err := s.Stat(ctx, key)
		if !recorded {
			if err != nil || info.Kind != snapshots.KindActive {
				t.Fatalf("active snapshot after crash: %v %v", info.Kind, err)
			}
			if err := s.Commit(ctx, "c", key); err != nil {
				t.Fatalf("retried commit: %v", err)
			}
		} else if !errdefs.IsNotFound(err) {
			t.Fatalf("active key still there after a recorded commit: %v", err)
		}
		id := idOfCommitted(t, s, "c")
		for _, f := range []string{"rwlayer.img", "rw"} {
			if _, err := os.Lstat(filepath.Join(s.dir(id), f)); !os.IsNotExist(err) {
				t.Errorf("committed snapshot still has %s: %v", f, err)
			}
		}
		w, err := newHostMounter(s, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		ms, err := w.View(ctx, "check", "c")
		if err != nil {
			t.Fatal(err)
		}
		for p, c := range map[string]string{key: content, "only-l1/f": "l1", "common": "from l2"} {
			b, err := os.ReadFile(filepath.Join(ms[0].Source, p))
			if err != nil || string(b) != c {
				t.Errorf("%s = %q, %v; want %q", p, b, err, c)
			}
		}
		if err := w.Remove(ctx, "check"); err != nil {
			t.Fatal(err)
		}
		// The View above was c's first use: it built the merged disk.
		if got := s.mustLabel(t, "c", LabelFSMetaReady); got != "true" {
			t.Fatalf("fsmeta-ready after the first View = %q", got)
		}
	}
}

func verifyRemove(t *testing.T, s *Snapshotter, _ bool) {
	// Every remove step is after the record: l3 is gone, and recovery
	// deleted its directory (checked by assertNoLeftovers).
	if _, err := s.Stat(testContext(t), "l3"); !errdefs.IsNotFound(err) {
		t.Fatalf("l3 after a recorded remove: %v", err)
	}
}

func idOfCommitted(t *testing.T, s *Snapshotter, name string) string {
	t.Helper()
	return filepath.Base(filepath.Dir(s.mustLabel(t, name, LabelLayerBlobPath)))
}

// assertNoLeftovers: snapshots/ holds exactly the recorded ids, no temp
// file in any, nothing mounted or loop-attached under root.
func assertNoLeftovers(t *testing.T, s *Snapshotter, root string) {
	t.Helper()
	ctx := testContext(t)
	var ids []string
	if err := s.Walk(ctx, func(ctx contextT, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted {
			ids = append(ids, idOfCommitted(t, s, info.Name))
		} else {
			ids = append(ids, idOf(t, s, info.Name))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(s.snapshotsRoot())
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		dirs = append(dirs, e.Name())
		inner, _ := os.ReadDir(filepath.Join(s.snapshotsRoot(), e.Name()))
		for _, f := range inner {
			if isTemp(f.Name()) {
				t.Errorf("leftover %s in snapshot %s", f.Name(), e.Name())
			}
		}
	}
	sort.Strings(ids)
	sort.Strings(dirs)
	if strings.Join(ids, ",") != strings.Join(dirs, ",") {
		t.Errorf("snapshot dirs %v, recorded ids %v", dirs, ids)
	}
	if m := mountsUnder(t, root); len(m) > 0 {
		t.Errorf("mounts left under %s: %v", root, m)
	}
	if l := loopsBackedBy(t, root); len(l) > 0 {
		t.Errorf("loop devices left on %s: %v", root, l)
	}
}
