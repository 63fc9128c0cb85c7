package snapshotter

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// TestErrors pins the errdefs class of each misuse and that the message
// names the snapshot key (and the file when one is at fault).
func TestErrors(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{})
	ctx := testContext(t)
	stack(t, s, 1)
	ref := snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: "r"})
	if _, err := s.View(ctx, "v", "l1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "no-layer", "l1", ref); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Prepare(ctx, "bad-layer", "l1", ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ms[0].Source, "layer.erofs"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err = s.Prepare(ctx, "short-layer", "l1", ref)
	if err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(ms[0].Source, "layer.erofs")
	mkfsErofs(t, short, writeTree(t, map[string]string{"big": strings.Repeat("x", 20000)}))
	if err := os.Truncate(short, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "rebase", "", ref); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		err   error
		is    func(error) bool
		names []string
	}{
		{"prepare existing key", second(s.Prepare(ctx, "v", "l1")), errdefs.IsAlreadyExists, []string{`"v"`}},
		{"prepare missing parent", second(s.Prepare(ctx, "p", "nope")), errdefs.IsNotFound, []string{`"nope"`}},
		{"commit a view", s.Commit(ctx, "c", "v"), errdefs.IsFailedPrecondition, []string{`"v"`}},
		{"commit a committed", s.Commit(ctx, "c", "l1"), errdefs.IsFailedPrecondition, []string{`"l1"`}},
		{"commit missing", s.Commit(ctx, "c", "nope"), errdefs.IsNotFound, []string{`"nope"`}},
		{"commit without layer", s.Commit(ctx, "c", "no-layer"), errdefs.IsFailedPrecondition, []string{`"no-layer"`, "layer.erofs"}},
		{"commit corrupt layer", s.Commit(ctx, "c", "bad-layer"), errdefs.IsFailedPrecondition, []string{`"bad-layer"`, "layer.erofs", "magic"}},
		{"commit truncated layer", s.Commit(ctx, "c", "short-layer"), errdefs.IsFailedPrecondition, []string{`"short-layer"`, "layer.erofs", "blocks"}},
		{"commit onto a view", s.Commit(ctx, "c", "rebase", snapshots.WithParent("v")), errdefs.IsFailedPrecondition, []string{`"rebase"`, `"v"`}},
		{"commit changing parent", s.Commit(ctx, "c", "no-layer", snapshots.WithParent("v")), errdefs.IsInvalidArgument, []string{`"no-layer"`}},
		{"commit to existing name", commitWithLayer(t, s, "rebase", "l1"), errdefs.IsAlreadyExists, []string{`"l1"`}},
		{"remove missing", s.Remove(ctx, "nope"), errdefs.IsNotFound, []string{`"nope"`}},
		{"remove parent", s.Remove(ctx, "l1"), errdefs.IsFailedPrecondition, []string{`"l1"`, "remove"}},
		{"mounts of committed", second(s.Mounts(ctx, "l1")), errdefs.IsFailedPrecondition, []string{`"l1"`}},
		{"stat missing", second(s.Stat(ctx, "nope")), errdefs.IsNotFound, []string{`"nope"`}},
		{"usage missing", second(s.Usage(ctx, "nope")), errdefs.IsNotFound, []string{`"nope"`}},
	} {
		if tc.err == nil || !tc.is(tc.err) {
			t.Errorf("%s: err = %v, wrong class", tc.name, tc.err)
			continue
		}
		for _, n := range tc.names {
			if !strings.Contains(tc.err.Error(), n) {
				t.Errorf("%s: %q does not name %s", tc.name, tc.err, n)
			}
		}
	}
	// A failed extract Commit keeps the snapshot active.
	if info, err := s.Stat(ctx, "no-layer"); err != nil || info.Kind != snapshots.KindActive {
		t.Errorf("after a failed commit: %v, %v", info.Kind, err)
	}
}

func second[T any](_ T, err error) error { return err }

// commitWithLayer gives the extract snapshot key a valid layer and commits
// it as name.
func commitWithLayer(t *testing.T, s *Snapshotter, key, name string, opts ...snapshots.Opt) error {
	t.Helper()
	dir := s.dir(idOf(t, s, key))
	mkfsErofs(t, filepath.Join(dir, "layer.erofs"), writeTree(t, map[string]string{"x": key}))
	return s.Commit(testContext(t), name, key, opts...)
}

// TestRebase is the unpacker's parallel mode: an extract snapshot prepared
// without a parent and committed WithParent gets that parent and an fsmeta
// over the whole chain; the kernel reads the merged tree.
func TestRebase(t *testing.T) {
	requireHost(t)
	s, root := newTestSnapshotter(t, Config{})
	ctx := testContext(t)
	stack(t, s, 2)
	if _, err := s.Prepare(ctx, "x", "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: "l3"})); err != nil {
		t.Fatal(err)
	}
	if err := commitWithLayer(t, s, "x", "l3", snapshots.WithParent("l2")); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "l3")
	if err != nil || info.Parent != "l2" {
		t.Fatalf("rebased snapshot: parent %q, %v", info.Parent, err)
	}
	if _, err := s.View(ctx, "use-l3", "l3"); err != nil {
		t.Fatal(err)
	}
	if got := s.mustLabel(t, "l3", LabelFSMetaLayers); got != "3" {
		t.Errorf("fsmeta layers = %s, want 3", got)
	}
	w, err := newHostMounter(s, filepath.Join(root, "..", "hostmnt-rebase"))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := w.View(ctx, "v", "l3")
	if err != nil {
		t.Fatal(err)
	}
	defer w.release("v")
	for p, c := range map[string]string{"x": "x", "only-l1/f": "l1", "only-l2/f": "l2", "common": "from l2"} {
		b, err := os.ReadFile(filepath.Join(ms[0].Source, p))
		if err != nil || string(b) != c {
			t.Errorf("%s = %q, %v; want %q", p, b, err, c)
		}
	}
}

// TestUpdateLabels: an Update cannot forge or change an erofs-vm/ label,
// may drop them with a full replace (containerd semantics), and Mounts do
// not depend on them.
func TestUpdateLabels(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{})
	ctx := testContext(t)
	stack(t, s, 2)
	before, err := s.Prepare(ctx, "a", "l2")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Update(ctx, snapshots.Info{Name: "l2", Labels: map[string]string{LabelFSMetaLayers: "9"}}, "labels."+LabelFSMetaLayers)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), LabelFSMetaLayers) {
		t.Fatalf("forging %s: %v", LabelFSMetaLayers, err)
	}
	info, err := s.Stat(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	info.Labels["user"] = "x"
	if _, err := s.Update(ctx, info); err != nil {
		t.Fatalf("Update keeping the snapshotter's labels unchanged: %v", err)
	}
	got, err := s.Update(ctx, snapshots.Info{Name: "a", Labels: map[string]string{"only": "this"}}, "labels")
	if err != nil || !reflect.DeepEqual(got.Labels, map[string]string{"only": "this"}) {
		t.Fatalf("replace labels: %v, %v", got.Labels, err)
	}
	after, err := s.Mounts(ctx, "a")
	if err != nil || !reflect.DeepEqual(after, before) {
		t.Fatalf("mounts changed with the labels: %+v, %v", after, err)
	}
}

// TestImmutable: committed files carry FS_IMMUTABLE_FL (so even root's rm
// fails), Remove lifts it and deletes them; with SetImmutable off nothing
// is flagged and no label says so.
func TestImmutable(t *testing.T) {
	requireHost(t)
	for _, on := range []bool{true, false} {
		s, _ := newTestSnapshotter(t, Config{SetImmutable: on})
		ctx := testContext(t)
		dirs := stack(t, s, 2)
		// The merged disk is built at the first use of l2 as a parent.
		if _, err := s.View(ctx, "use-l2", "l2"); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, "use-l2"); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"layer.erofs", "fsmeta.erofs", "layers.manifest", "merged.vmdk"} {
			p := filepath.Join(dirs[1], f)
			got, err := isImmutable(p)
			if err != nil || got != on {
				t.Errorf("SetImmutable=%v: %s flagged %v, %v", on, p, got, err)
			}
			if on {
				if err := os.Remove(p); err == nil {
					t.Errorf("removed immutable %s", p)
				}
			}
		}
		info, err := s.Stat(ctx, "l2")
		if err != nil {
			t.Fatal(err)
		}
		if _, has := info.Labels[LabelImmutable]; has != on {
			t.Errorf("SetImmutable=%v: label %s present %v", on, LabelImmutable, has)
		}
		for _, k := range []string{"l2", "l1"} {
			if err := s.Remove(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("SetImmutable=%v: %s still there after Remove: %v", on, d, err)
			}
		}
	}
}

// TestUsage: a committed snapshot reports the allocated bytes of its files.
func TestUsage(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{})
	ctx := testContext(t)
	dirs := stack(t, s, 2)
	files := []string{dirs[1], filepath.Join(dirs[1], ".erofslayer"), filepath.Join(dirs[1], "layer.erofs")}
	check := func(when string) {
		t.Helper()
		u, err := s.Usage(ctx, "l2")
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		for _, p := range files {
			want += allocated(t, p)
		}
		if u.Size != want || u.Inodes != int64(len(files)) {
			t.Errorf("%s: usage = %+v, want %d bytes in %d inodes", when, u, want, len(files))
		}
	}
	check("before first use")
	// The first View builds l2's merged disk; its files count from then on.
	if _, err := s.View(ctx, "use-l2", "l2"); err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(dirs[1], "fsmeta.erofs"), filepath.Join(dirs[1], "layers.manifest"), filepath.Join(dirs[1], "merged.vmdk"))
	check("after first use")
}

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st statT
	if err := lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestConversionError: a writable snapshot whose upper cannot be converted
// (here its ext4 image is destroyed) stays active, says why in the
// conversion-error label, and leaves no half-written layer.
func TestConversionError(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	stack(t, s, 1)
	ms, err := s.Prepare(ctx, "w", "l1")
	if err != nil {
		t.Fatal(err)
	}
	img := ms[len(ms)-1].Source
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	err = s.Commit(ctx, "c", "w")
	if err == nil || !strings.Contains(err.Error(), img) || !strings.Contains(err.Error(), `"w"`) {
		t.Fatalf("commit of a destroyed upper: %v (want an error naming the key and %s)", err, img)
	}
	info, err := s.Stat(ctx, "w")
	if err != nil || info.Kind != snapshots.KindActive {
		t.Fatalf("after a failed conversion: %v %v", info.Kind, err)
	}
	if msg := info.Labels[LabelConversionError]; !strings.Contains(msg, img) {
		t.Errorf("label %s = %q, want the reason naming %s", LabelConversionError, msg, img)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(img), "layer.erofs")); !os.IsNotExist(err) {
		t.Errorf("a layer.erofs was left: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(img))
	for _, e := range entries {
		if isTemp(e.Name()) {
			t.Errorf("temp %s left", e.Name())
		}
	}
}

// TestContainerLayerOrder: a layer committed from a container has no diff
// ID; the layer order names it snapshot:<id>, and a commit clears an
// earlier conversion-error.
func TestContainerLayerOrder(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{DefaultWritableSize: 16 << 20})
	ctx := testContext(t)
	stack(t, s, 2)
	if _, err := s.Prepare(ctx, "w", "l2"); err != nil {
		t.Fatal(err)
	}
	id := idOf(t, s, "w")
	if _, err := s.Update(ctx, snapshots.Info{Name: "w", Labels: map[string]string{"keep": "me"}}, "labels.keep"); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "c", "w", snapshots.WithLabels(map[string]string{"user": "label"})); err != nil {
		t.Fatal(err)
	}
	order, err := DecodeLayerOrder(s.mustLabel(t, "c", LabelLayerOrder))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fakeDigest("l1"), fakeDigest("l2"), "snapshot:" + id}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("layer order %v, want %v", order, want)
	}
	info, err := s.Stat(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{LabelLayerDigest, LabelExtract, LabelConversionError, LabelWritableSize} {
		if v, ok := info.Labels[k]; ok {
			t.Errorf("container layer has %s=%q", k, v)
		}
	}
	if info.Labels["user"] != "label" {
		t.Errorf("commit labels lost: %v", info.Labels)
	}
}

// TestExtractMarker: an extract Prepare hands the diff ID containerd's
// unpacker names in its labels to the differ through the marker, so Apply
// can refuse a mismatching blob before layer.erofs exists; without (or
// with an unparsable) label the marker is empty, as the differ expects.
func TestExtractMarker(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{})
	ctx := testContext(t)
	diffID := digest.FromString("layer")
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   layout.Marker
	}{
		{"diff ID named", map[string]string{snapshots.LabelSnapshotRef: "c1", snapshots.LabelSnapshotDiffID: diffID.String()}, layout.Marker{DiffID: diffID}},
		{"no diff ID", map[string]string{snapshots.LabelSnapshotRef: "c2"}, layout.Marker{}},
		{"unparsable diff ID", map[string]string{snapshots.LabelSnapshotRef: "c3", snapshots.LabelSnapshotDiffID: "sha256:nothex"}, layout.Marker{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := s.Prepare(ctx, "extract-"+tc.name, "", snapshots.WithLabels(tc.labels))
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 || ms[0].Type != "bind" {
				t.Fatalf("extract mounts %+v, want one bind", ms)
			}
			got, err := layout.ReadMarker(ms[0].Source)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("marker %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestLayerOrderFromParent: Commit takes the order of the stack below from
// the parent's layer-order label (one lookup, however deep), and walks the
// chain when an Update dropped that label.
func TestLayerOrderFromParent(t *testing.T) {
	requireHost(t)
	s, _ := newTestSnapshotter(t, Config{})
	ctx := testContext(t)
	stack(t, s, 3)
	want := []string{fakeDigest("l1"), fakeDigest("l2"), fakeDigest("l3"), fakeDigest("l4")}
	extractLayer(t, ctx, s, "l4", "l3", map[string]string{"four": "4"})
	if got, err := DecodeLayerOrder(s.mustLabel(t, "l4", LabelLayerOrder)); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("l4 layer order %v (%v), want %v", got, err, want)
	}
	if _, err := s.Update(ctx, snapshots.Info{Name: "l4", Labels: map[string]string{"only": "this"}}, "labels"); err != nil {
		t.Fatal(err)
	}
	extractLayer(t, ctx, s, "l5", "l4", map[string]string{"five": "5"})
	got, err := DecodeLayerOrder(s.mustLabel(t, "l5", LabelLayerOrder))
	// l4's own diff ID went with its labels: the walk names it by id.
	if err != nil || len(got) != 5 || !reflect.DeepEqual(got[:3], want[:3]) || !strings.HasPrefix(got[3], LayerOrderUnknownPrefix) || got[4] != fakeDigest("l5") {
		t.Fatalf("l5 layer order %v (%v) after l4's labels were dropped", got, err)
	}
}
