package snapshotter

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

func TestWritableSize(t *testing.T) {
	s := &Snapshotter{cfg: Config{DefaultWritableSize: 64 << 20}}
	for _, tc := range []struct {
		label string // "" = no label
		want  int64
		bad   bool
	}{
		{label: "", want: 64 << 20},
		{label: "134217728", want: 128 << 20},
		{label: "1048577", want: 1<<20 + 4096}, // rounded up to whole blocks
		{label: strconv.Itoa(MinWritableSize), want: MinWritableSize},
		{label: strconv.FormatInt(MaxWritableSize, 10), want: MaxWritableSize},
		{label: "1048575", bad: true}, // below 1 MiB
		{label: strconv.FormatInt(MaxWritableSize+1, 10), bad: true},
		{label: "99999999999999999999", bad: true}, // overflows int64
		{label: "1GiB", bad: true},                 // bytes only, as containerd defines it
		{label: "-1", bad: true},
		{label: "0", bad: true},
		{label: "0x100000", bad: true},
	} {
		labels := map[string]string{}
		if tc.label != "" {
			labels[snapshots.LabelSnapshotMaxSize] = tc.label
		}
		got, err := s.writableSize("k", labels)
		if tc.bad {
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"k"`) || !strings.Contains(err.Error(), snapshots.LabelSnapshotMaxSize) {
				t.Errorf("size %q: err = %v, want ErrInvalidArgument naming the key and label", tc.label, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("size %q = %d, %v; want %d", tc.label, got, err, tc.want)
		}
	}
}

// TestWritableLayer checks the ext4 image a writable Prepare creates: the
// asked size, sparse, a clean filesystem with upper/ and work/ (0755) at
// its root; and that a bad size leaves neither a record nor a directory.
func TestWritableLayer(t *testing.T) {
	requireHost(t)
	s, root := newTestSnapshotter(t, Config{DefaultWritableSize: 64 << 20})
	ctx := testContext(t)
	for _, tc := range []struct {
		key    string
		labels map[string]string
		size   int64
	}{
		{"default", nil, 64 << 20},
		{"labelled", map[string]string{snapshots.LabelSnapshotMaxSize: "268435456"}, 256 << 20},
	} {
		t.Run(tc.key, func(t *testing.T) {
			if _, err := s.Prepare(ctx, tc.key, "", snapshots.WithLabels(tc.labels)); err != nil {
				t.Fatal(err)
			}
			img := s.rwLayerPath(idOf(t, s, tc.key))
			fi, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != tc.size {
				t.Errorf("%s is %d bytes, want %d", img, fi.Size(), tc.size)
			}
			if got := s.mustLabel(t, tc.key, LabelWritableSize); got != strconv.FormatInt(tc.size, 10) {
				t.Errorf("label %s = %s", LabelWritableSize, got)
			}
			u, err := s.Usage(ctx, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if u.Size <= 0 || u.Size > 4<<20 {
				t.Errorf("usage %d bytes: want the sparse allocation (0 < n <= 4 MiB) of a %d byte image", u.Size, tc.size)
			}
			if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck: %v\n%s", err, out)
			}
			mnt := t.TempDir()
			if err := mountLoop(img, mnt, "ext4", true, ""); err != nil {
				t.Fatal(err)
			}
			defer unmountDetach(mnt)
			for _, d := range []string{"upper", "work"} {
				fi, err := os.Stat(filepath.Join(mnt, d))
				if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
					t.Errorf("%s in the ext4 root: %v, %v; want a 0755 directory", d, fi, err)
				}
			}
		})
	}

	t.Run("own UUID", func(t *testing.T) {
		// Both layers come from one cached template: each must have its
		// own filesystem UUID, in every superblock copy (e2fsck above
		// checks the backups and checksums agree).
		a, b := ext4UUID(t, s.rwLayerPath(idOf(t, s, "default"))), ext4UUID(t, s.rwLayerPath(idOf(t, s, "labelled")))
		if _, err := s.Prepare(ctx, "default2", ""); err != nil {
			t.Fatal(err)
		}
		c := ext4UUID(t, s.rwLayerPath(idOf(t, s, "default2")))
		tpl := ext4UUID(t, filepath.Join(root, rwCacheDirName, strconv.Itoa(64<<20)+".img"))
		if a == c || a == tpl || c == tpl || a == b {
			t.Errorf("UUIDs not unique: %s %s %s (template %s)", a, b, c, tpl)
		}
		if err := s.Remove(ctx, "default2"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bad size", func(t *testing.T) {
		_, err := s.Prepare(ctx, "bad", "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotMaxSize: "12abc"}))
		if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("err = %v, want ErrInvalidArgument", err)
		}
		if _, err := s.Stat(ctx, "bad"); !errdefs.IsNotFound(err) {
			t.Errorf("a snapshot was recorded: %v", err)
		}
		entries, _ := os.ReadDir(filepath.Join(root, "snapshots"))
		if len(entries) != 2 {
			t.Errorf("snapshots/ holds %d entries, want the 2 good snapshots", len(entries))
		}
	})
}

// ext4UUID reads the filesystem UUID with dumpe2fs (e2fsprogs), not with
// our own parser.
func ext4UUID(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", img).Output()
	if err != nil {
		t.Fatalf("dumpe2fs %s: %v", img, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Filesystem UUID:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no UUID in dumpe2fs output of %s", img)
	return ""
}

// TestRWCacheBound: templates are cached for at most rwCacheMax sizes, and
// a layer made after evictions is still a clean filesystem.
func TestRWCacheBound(t *testing.T) {
	requireHost(t)
	s, root := newTestSnapshotter(t, Config{DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	for i := range rwCacheMax + 2 {
		key := "s" + strconv.Itoa(i)
		size := strconv.Itoa((16 + i) << 20)
		if _, err := s.Prepare(ctx, key, "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotMaxSize: size})); err != nil {
			t.Fatal(err)
		}
	}
	cached, _ := os.ReadDir(filepath.Join(root, rwCacheDirName))
	if len(cached) != rwCacheMax {
		t.Errorf("%d templates cached, want %d", len(cached), rwCacheMax)
	}
	img := s.rwLayerPath(idOf(t, s, "s"+strconv.Itoa(rwCacheMax+1)))
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
}
