package snapshotter

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/erofs-vm/containerd-erofs/vmdk"
)

// stack commits n extract layers l1..ln, each on the previous, and returns
// their snapshot directories oldest first.
func stack(t *testing.T, s *Snapshotter, n int) []string {
	t.Helper()
	ctx := testContext(t)
	var dirs []string
	parent := ""
	for i := 1; i <= n; i++ {
		name := "l" + strconv.Itoa(i)
		extractLayer(t, ctx, s, name, parent, map[string]string{
			"common":              "from " + name,
			"only-" + name + "/f": name,
		})
		parent = name
		dirs = append(dirs, filepath.Dir(s.mustLabel(t, name, LabelLayerBlobPath)))
	}
	return dirs
}

func (s *Snapshotter) mustLabel(t *testing.T, key, label string) string {
	t.Helper()
	info, err := s.Stat(testContext(t), key)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := info.Labels[label]
	if !ok {
		t.Fatalf("snapshot %s has no label %s: %v", key, label, info.Labels)
	}
	return v
}

// TestMountShapes pins every row of docs/design.md §4 for both commit modes, and
// that Mounts returns what Prepare/View returned.
func TestMountShapes(t *testing.T) {
	requireHost(t)
	for _, mode := range []CommitMode{CommitModeBlock, CommitModeOverlay} {
		t.Run(string(mode), func(t *testing.T) {
			s, _ := newTestSnapshotter(t, Config{CommitMode: mode, DefaultWritableSize: 64 << 20})
			ctx := testContext(t)
			dirs := stack(t, s, 3)
			l := func(i int) string { return filepath.Join(dirs[i], "layer.erofs") }
			erofs1 := mount.Mount{Type: "erofs", Source: l(0), Options: []string{"ro"}}
			erofs3 := mount.Mount{Type: "format/erofs", Source: filepath.Join(dirs[2], "fsmeta.erofs"),
				Options: []string{"ro", "device=" + l(0), "device=" + l(1), "device=" + l(2)}}
			upper := func(id string) mount.Mount {
				if mode == CommitModeOverlay {
					return mount.Mount{Type: "bind", Source: filepath.Join(s.dir(id), "rw"), Options: []string{"rbind", "rw"}}
				}
				return mount.Mount{Type: "ext4", Source: filepath.Join(s.dir(id), "rwlayer.img"), Options: []string{"rw"}}
			}
			for _, tc := range []struct {
				name, parent string
				view         bool
				labels       map[string]string
				want         func(id string) []mount.Mount
				mountType    string
			}{
				{name: "extract", parent: "l3", labels: map[string]string{snapshots.LabelSnapshotRef: "x"},
					want: func(id string) []mount.Mount {
						return []mount.Mount{{Type: "bind", Source: s.dir(id), Options: []string{"rbind", "rw"}}}
					}, mountType: "bind"},
				{name: "writable-no-parent", want: func(id string) []mount.Mount {
					if mode == CommitModeOverlay {
						return []mount.Mount{{Type: "bind", Source: filepath.Join(s.dir(id), "rw", "upper"), Options: []string{"rbind", "rw"}}}
					}
					return []mount.Mount{upper(id)}
				},
					mountType: upper("").Type},
				{name: "writable-1", parent: "l1", want: func(id string) []mount.Mount { return []mount.Mount{erofs1, upper(id)} },
					mountType: "erofs," + upper("").Type},
				{name: "writable-3", parent: "l3", want: func(id string) []mount.Mount { return []mount.Mount{erofs3, upper(id)} },
					mountType: "format/erofs," + upper("").Type},
				{name: "view-no-parent", view: true, want: func(id string) []mount.Mount {
					return []mount.Mount{{Type: "erofs", Source: filepath.Join(s.dir(id), "layer.erofs"), Options: []string{"ro"}}}
				}, mountType: "erofs"},
				{name: "view-1", parent: "l1", view: true, want: func(string) []mount.Mount { return []mount.Mount{erofs1} }, mountType: "erofs"},
				{name: "view-3", parent: "l3", view: true, want: func(string) []mount.Mount { return []mount.Mount{erofs3} }, mountType: "format/erofs"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					create := s.Prepare
					if tc.view {
						create = s.View
					}
					got, err := create(ctx, tc.name, tc.parent, snapshots.WithLabels(tc.labels))
					if err != nil {
						t.Fatal(err)
					}
					id := idOf(t, s, tc.name)
					if want := tc.want(id); !reflect.DeepEqual(got, want) {
						t.Fatalf("mounts:\n got %+v\nwant %+v", got, want)
					}
					again, err := s.Mounts(ctx, tc.name)
					if err != nil || !reflect.DeepEqual(again, got) {
						t.Fatalf("Mounts = %+v, %v; want %+v", again, err, got)
					}
					if v := s.mustLabel(t, tc.name, LabelMountType); v != tc.mountType {
						t.Errorf("label %s = %q, want %q", LabelMountType, v, tc.mountType)
					}
					for _, m := range got {
						if m.Type == "overlay" {
							t.Errorf("an overlay mount was returned: %+v", m)
						}
						if m.Type == "bind" && tc.name != "extract" && mode == CommitModeBlock {
							t.Errorf("a bind mount in block mode for a non-extract snapshot: %+v", m)
						}
					}
				})
			}
		})
	}
}

func idOf(t *testing.T, s *Snapshotter, key string) string {
	t.Helper()
	var id string
	if err := s.ms.WithTransaction(testContext(t), false, func(ctx contextT) error {
		var err error
		id, _, _, err = storageGetInfo(ctx, key)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestCommittedStackLabels checks the §5 labels of a committed 3-layer
// stack and that its merged disk is what the guest will read: the VMDK
// lists [fsmeta, l1, l2, l3], and qemu-img's flattening of it mounts as
// ONE erofs device (flat multi-device, no device=) showing the merged tree.
func TestCommittedStackLabels(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{SetImmutable: true})
	dirs := stack(t, s, 3)
	ctx := testContext(t)
	// An unpack builds no merged disk: until a View or Prepare uses l3,
	// neither the files nor the labels that announce them exist.
	for _, name := range []string{"l2", "l3"} {
		info, err := s.Stat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, has := info.Labels[LabelFSMetaReady]; has {
			t.Errorf("%s: %s before any use", name, LabelFSMetaReady)
		}
	}
	for _, f := range []string{"fsmeta.erofs", "merged.vmdk"} {
		if _, err := os.Lstat(filepath.Join(dirs[2], f)); !os.IsNotExist(err) {
			t.Errorf("%s exists before any use: %v", f, err)
		}
	}
	if _, err := s.View(ctx, "use-l3", "l3"); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "l3")
	if err != nil || !info.Created.Equal(info.Updated) {
		t.Errorf("l3: Created %v != Updated %v (%v): building the merged disk must not touch the record", info.Created, info.Updated, err)
	}
	want := map[string]string{
		LabelExtract:         "true",
		LabelLayerDigest:     fakeDigest("l3"),
		LabelLayerBlobDigest: fakeDigest("blob-l3"),
		LabelLayerBlobPath:   filepath.Join(dirs[2], "layer.erofs"),
		LabelLayerOrder:      `["` + fakeDigest("l1") + `","` + fakeDigest("l2") + `","` + fakeDigest("l3") + `"]`,
		LabelFSMetaReady:     "true",
		LabelFSMetaLayers:    "3",
		LabelMountType:       "format/erofs",
		LabelImmutable:       "true",
	}
	for k, v := range want {
		if got := s.mustLabel(t, "l3", k); got != v {
			t.Errorf("label %s = %q, want %q", k, got, v)
		}
	}
	// The labels are queryable the way `ctr snapshots ls --filter` asks.
	var ready []string
	if err := s.Walk(testContext(t), func(_ contextT, info snapshots.Info) error {
		ready = append(ready, info.Name)
		return nil
	}, `labels."`+LabelFSMetaReady+`"==true,kind==committed`); err != nil {
		t.Fatal(err)
	}
	sort.Strings(ready)
	if !reflect.DeepEqual(ready, []string{"l3"}) {
		t.Errorf("walk fsmeta-ready==true: %v, want [l3] (l2 was never used as a parent)", ready)
	}
	order, err := DecodeLayerOrder(s.mustLabel(t, "l3", LabelLayerOrder))
	if err != nil || len(order) != 3 {
		t.Fatalf("layer order %v: %v", order, err)
	}
	// A base layer has neither fsmeta nor a layer order.
	info, err = s.Stat(testContext(t), "l1")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{LabelFSMetaReady, LabelLayerOrder, LabelFSMetaLayers} {
		if v, ok := info.Labels[k]; ok {
			t.Errorf("base layer has %s=%q", k, v)
		}
	}
	if info.Labels[LabelMountType] != "erofs" {
		t.Errorf("base layer mount type %q", info.Labels[LabelMountType])
	}

	for _, f := range []string{"layer.erofs", "fsmeta.erofs", "merged.vmdk"} {
		p := filepath.Join(dirs[2], f)
		on, err := isImmutable(p)
		if err != nil || !on {
			t.Errorf("%s immutable = %v, %v", p, on, err)
		}
	}
	fd, err := os.Open(filepath.Join(dirs[2], "merged.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := vmdk.ParseDescriptor(fd)
	fd.Close()
	if err != nil {
		t.Fatal(err)
	}
	wantPaths := []string{filepath.Join(dirs[2], "fsmeta.erofs"), filepath.Join(dirs[0], "layer.erofs"), filepath.Join(dirs[1], "layer.erofs"), filepath.Join(dirs[2], "layer.erofs")}
	var gotPaths []string
	for _, e := range d.Extents {
		gotPaths = append(gotPaths, e.Path)
	}
	if !reflect.DeepEqual(gotPaths, wantPaths) {
		t.Fatalf("vmdk extents %v, want %v", gotPaths, wantPaths)
	}

	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img is required (qemu-utils): %v", err)
	}
	raw := filepath.Join(t.TempDir(), "flat.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", filepath.Join(dirs[2], "merged.vmdk"), raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	mnt := t.TempDir()
	if err := mountLoop(raw, mnt, "erofs", true, ""); err != nil {
		t.Fatal(err)
	}
	defer unmountDetach(mnt)
	for p, c := range map[string]string{"common": "from l3", "only-l1/f": "l1", "only-l2/f": "l2", "only-l3/f": "l3"} {
		b, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil || string(b) != c {
			t.Errorf("flat disk %s = %q, %v; want %q", p, b, err, c)
		}
	}
}
