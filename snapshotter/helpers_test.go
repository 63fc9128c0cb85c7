package snapshotter

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"
)

// requireHost skips only when the machine truly cannot run the test: not
// root, or no erofs/overlay/loop support in the kernel.
func requireHost(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mounts, FS_IMMUTABLE_FL)")
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Skipf("cannot read /proc/filesystems: %v", err)
	}
	for _, fs := range []string{"erofs", "overlay", "ext4"} {
		if !strings.Contains(string(b), "\t"+fs+"\n") {
			t.Skipf("kernel has no %s filesystem", fs)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
}

func testContext(t testing.TB) context.Context {
	return namespaces.WithNamespace(context.Background(), "test")
}

// newTestSnapshotter opens a snapshotter under a fresh temp dir.
func newTestSnapshotter(t testing.TB, cfg Config) (*Snapshotter, string) {
	t.Helper()
	root := t.TempDir()
	s, err := open(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		liftAll(root)
	})
	return s, root
}

// liftAll clears immutable flags below root so t.TempDir can be removed.
func liftAll(root string) {
	entries, _ := os.ReadDir(filepath.Join(root, snapshotsDir))
	for _, e := range entries {
		clearImmutableTree(filepath.Join(root, snapshotsDir, e.Name()))
	}
}

// mkfsErofs builds an EROFS image of dir with erofs-utils: an independent
// writer for layers the differ would produce.
func mkfsErofs(t testing.TB, dst, dir string) {
	t.Helper()
	out, err := exec.Command("mkfs.erofs", "--quiet", "-T0", dst, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.erofs %s: %v\n%s", dir, err, out)
	}
}

// writeTree creates files (path -> content) under a new temp dir.
func writeTree(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// extractLayer plays the unpacker and the differ: an extract Prepare, a
// layer.erofs of files written atomically into the bind-mounted directory,
// the marker filled in, Commit. It returns the committed name.
func extractLayer(t testing.TB, ctx context.Context, s snapshots.Snapshotter, name, parent string, files map[string]string) {
	t.Helper()
	key := "extract-" + name
	ms, err := s.Prepare(ctx, key, parent, snapshots.WithLabels(map[string]string{
		snapshots.LabelSnapshotRef: name,
	}))
	if err != nil {
		t.Fatalf("prepare %s: %v", key, err)
	}
	if len(ms) != 1 || ms[0].Type != "bind" {
		t.Fatalf("extract mounts = %+v, want one bind", ms)
	}
	dir := ms[0].Source
	tmp := filepath.Join(dir, ".layer.erofs.tmp-test")
	mkfsErofs(t, tmp, writeTree(t, files))
	if err := os.Rename(tmp, filepath.Join(dir, "layer.erofs")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".erofslayer"), []byte(`{"diff_id":"`+fakeDigest(name)+`","blob_digest":"`+fakeDigest("blob-"+name)+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, name, key); err != nil {
		t.Fatalf("commit %s: %v", key, err)
	}
}

// fakeDigest is a valid sha256 digest derived from s.
func fakeDigest(s string) string {
	const hex = "0123456789abcdef"
	b := []byte(strings.Repeat("0", 64))
	for i := range len(s) {
		b[i%64] = hex[(int(b[i%64])+int(s[i]))%16]
	}
	return "sha256:" + string(b)
}

// mountsUnder lists mount points below dir (leak checks).
func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			out = append(out, fields[4])
		}
	}
	return out
}

// loopsBackedBy lists loop devices whose backing file is below dir.
func loopsBackedBy(t testing.TB, dir string) []string {
	t.Helper()
	paths, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
			out = append(out, p)
		}
	}
	return out
}

type contextT = context.Context

var storageGetInfo = storage.GetInfo

type statT = unix.Stat_t

var lstat = unix.Lstat
