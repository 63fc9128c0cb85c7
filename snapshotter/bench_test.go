package snapshotter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// BenchmarkPrepare measures Prepare of a writable snapshot over a committed
// chain of 3 and 64 layers, for erofs-vm (block mode: an ext4 rwlayer.img
// per Prepare) and containerd's overlayfs snapshotter side by side. The two
// alternate call by call, so both see the same machine load (this machine
// is shared), and each reports the median and p99 latency of the Prepare
// call alone (Remove runs with the timer stopped). hack/bench/prepare.sh
// renders the table.
func BenchmarkPrepare(b *testing.B) {
	requireHost(b)
	for _, layers := range []int{3, 64} {
		b.Run(fmt.Sprintf("layers=%d", layers), func(b *testing.B) {
			s, _ := newTestSnapshotter(b, Config{DefaultWritableSize: 1 << 30})
			etop := benchErofsChain(b, s, layers)
			root := b.TempDir()
			o, err := overlay.NewSnapshotter(root)
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close()
			otop := benchOverlayChain(b, o, root, layers)
			ctx := testContext(b)
			var elat, olat []time.Duration
			once := func(sn snapshots.Snapshotter, parent, key string, lat *[]time.Duration) {
				t0 := time.Now()
				if _, err := sn.Prepare(ctx, key, parent); err != nil {
					b.Fatal(err)
				}
				*lat = append(*lat, time.Since(t0))
				b.StopTimer()
				if err := sn.Remove(ctx, key); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				key := "bench-" + strconv.Itoa(i)
				once(s, etop, key, &elat)
				once(o, otop, key, &olat)
			}
			reportPercentiles(b, "erofs-vm-", elat)
			reportPercentiles(b, "overlayfs-", olat)
		})
	}
}

func reportPercentiles(b *testing.B, prefix string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(p(0.5), prefix+"p50-ms")
	b.ReportMetric(p(0.99), prefix+"p99-ms")
}

// BenchmarkCommit measures Commit of an extract snapshot (layer already
// written by the differ) over 3 and 64 layers: validation, fsmeta.erofs,
// merged.vmdk, immutable flags and the record, with the timer stopped for
// everything else.
func BenchmarkCommit(b *testing.B) {
	requireHost(b)
	for _, layers := range []int{3, 64} {
		b.Run(fmt.Sprintf("layers=%d/snapshotter=erofs-vm", layers), func(b *testing.B) {
			s, _ := newTestSnapshotter(b, Config{SetImmutable: true})
			top := benchErofsChain(b, s, layers)
			layer := filepath.Join(b.TempDir(), "layer.erofs")
			mkfsErofs(b, layer, writeTree(b, map[string]string{"new": "file"}))
			ctx := testContext(b)
			var lat []time.Duration
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				key, name := "x-"+strconv.Itoa(i), "c-"+strconv.Itoa(i)
				ms, err := s.Prepare(ctx, key, top, snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: name}))
				if err != nil {
					b.Fatal(err)
				}
				if out, err := exec.Command("cp", layer, filepath.Join(ms[0].Source, "layer.erofs")).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				b.StartTimer()
				t0 := time.Now()
				if err := s.Commit(ctx, name, key); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				b.StopTimer()
				if err := s.Remove(ctx, name); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			reportPercentiles(b, "", lat)
		})
	}
}

// benchErofsChain commits n extract layers (one small file each).
func benchErofsChain(b testing.TB, s *Snapshotter, n int) string {
	ctx := testContext(b)
	parent := ""
	for i := range n {
		name := "layer-" + strconv.Itoa(i)
		extractLayer(b, ctx, s, name, parent, map[string]string{"f" + strconv.Itoa(i): name})
		parent = name
	}
	return parent
}

// benchOverlayChain commits n overlayfs layers, writing one file straight
// into each upper directory (overlayfs needs no mount for that).
func benchOverlayChain(b *testing.B, o snapshots.Snapshotter, root string, n int) string {
	ctx := testContext(b)
	parent := ""
	for i := range n {
		key, name := "a-"+strconv.Itoa(i), "layer-"+strconv.Itoa(i)
		ms, err := o.Prepare(ctx, key, parent)
		if err != nil {
			b.Fatal(err)
		}
		upper := ms[0].Source // bind for the base layer
		for _, opt := range ms[0].Options {
			if v, ok := cutPrefix(opt, "upperdir="); ok {
				upper = v
			}
		}
		if err := os.WriteFile(filepath.Join(upper, "f"+strconv.Itoa(i)), []byte(name), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := o.Commit(ctx, name, key); err != nil {
			b.Fatal(err)
		}
		parent = name
	}
	return parent
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// BenchmarkRWLayer compares ways to make a 1 GiB ext4 writable layer with
// upper/ and work/ at its root; every method ends with the file fsynced
// and renamed into place, as Prepare needs it.
//
//	template-copy+uuid  what the snapshotter does: copy a cached formatted
//	                    template's extents (no reflink on ext4), new UUID
//	mkfs-d-prezeroed    mkfs.ext4 -d per layer with lazy itable/journal
//	                    init and assume_storage_prezeroed (how the
//	                    template is made)
//	mkfs-d-default      mkfs.ext4 -d with default options (zeroes a journal)
func BenchmarkRWLayer(b *testing.B) {
	requireHost(b)
	const size = 1 << 30
	s, root := newTestSnapshotter(b, Config{})
	tpl, err := s.rwTemplate()
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(root, "bench")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, make func(dst string) error) {
		var lat []time.Duration
		var alloc int64
		for i := 0; b.Loop(); i++ {
			dst := filepath.Join(dir, "rw-"+strconv.Itoa(i))
			t0 := time.Now()
			if err := make(dst); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			b.StopTimer()
			var st unix.Stat_t
			if err := unix.Stat(dst, &st); err != nil {
				b.Fatal(err)
			}
			alloc = st.Blocks * 512
			os.Remove(dst)
			b.StartTimer()
		}
		reportPercentiles(b, "", lat)
		b.ReportMetric(float64(alloc)/(1<<20), "alloc-MiB")
	}
	ctx := context.Background()
	b.Run("method=template-copy+uuid", func(b *testing.B) {
		run(b, func(dst string) error {
			if err := s.createRWLayer(ctx, dir, size); err != nil {
				return err
			}
			return os.Rename(filepath.Join(dir, "rwlayer.img"), dst)
		})
	})
	b.Run("method=mkfs-d-prezeroed", func(b *testing.B) {
		run(b, func(dst string) error { return s.formatRWLayer(ctx, dst, size) })
	})
	b.Run("method=mkfs-d-default", func(b *testing.B) {
		run(b, func(dst string) error {
			return layout.WriteFileAtomicFunc(dst, 0o600, func(f *os.File) error {
				if err := f.Truncate(size); err != nil {
					return err
				}
				out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tpl, f.Name()).CombinedOutput()
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
		})
	})

}
