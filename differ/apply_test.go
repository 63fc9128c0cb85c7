package differ

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// fakeConvert stands in for erofs.ConvertTar in tests of the plumbing: it
// reads the tar entry by entry exactly as a converter does (stopping at the
// end-of-archive marker), refuses ../ names, and writes a summary.
func fakeConvert(ctx context.Context, dst *os.File, src io.Reader, _ erofs.ConvertOptions) (*erofs.ConvertStats, error) {
	tr := tar.NewReader(src)
	var st erofs.ConvertStats
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if strings.Contains("/"+h.Name+"/", "/../") {
			return nil, fmt.Errorf("tar entry %q escapes the root", h.Name)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", h.Name, err)
		}
		if _, err := fmt.Fprintln(dst, h.Name); err != nil {
			return nil, err
		}
		st.Entries++
	}
	return &st, ctx.Err()
}

type blobKind int

const (
	plain blobKind = iota
	gzipped
	zstded
)

func (k blobKind) mediaType() string {
	return [...]string{ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd}[k]
}

func makeTar(t testing.TB, names ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i, n := range names {
		data := bytes.Repeat([]byte{byte(i + 1)}, 1000*(i+1))
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, k blobKind, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	switch k {
	case plain:
		return b
	case gzipped:
		zw := gzip.NewWriter(&out)
		zw.Write(b)
		zw.Close()
	case zstded:
		zw, err := zstd.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(b)
		zw.Close()
	}
	return out.Bytes()
}

// memLabels is the label store of the test content store (in the daemon
// the metadata DB keeps labels).
type memLabels struct {
	mu sync.Mutex
	m  map[digest.Digest]map[string]string
}

func (l *memLabels) Get(d digest.Digest) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m[d]), nil
}

func (l *memLabels) Set(d digest.Digest, v map[string]string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[d] = maps.Clone(v)
	return nil
}

func (l *memLabels) Update(d digest.Digest, v map[string]string) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.m[d]
	if cur == nil {
		cur = map[string]string{}
	}
	for k, val := range v {
		if val == "" {
			delete(cur, k)
		} else {
			cur[k] = val
		}
	}
	l.m[d] = cur
	return maps.Clone(cur), nil
}

type fixture struct {
	t     testing.TB
	store content.Store
	d     *Differ
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	cs, err := local.NewLabeledStore(t.TempDir(), &memLabels{m: map[digest.Digest]map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	d := New(cs, Config{})
	d.convert = fakeConvert
	return &fixture{t: t, store: cs, d: d}
}

// blob stores b and returns its descriptor.
func (f *fixture) blob(b []byte, mediaType string, lbls map[string]string) ocispec.Descriptor {
	f.t.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(context.Background(), f.store, desc.Digest.String(), bytes.NewReader(b), desc, content.WithLabels(lbls)); err != nil {
		f.t.Fatal(err)
	}
	return desc
}

// extractDir makes a snapshot dir as the snapshotter prepares it: the
// empty marker, nothing else.
func (f *fixture) extractDir() (string, []mount.Mount) {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), "snapshots", "7")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, layout.MarkerFile), nil, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return dir, []mount.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}}
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// assertUntouched checks a failed Apply left the dir as Prepare made it.
func assertUntouched(t *testing.T, dir string) {
	t.Helper()
	if got := listDir(t, dir); strings.Join(got, ",") != layout.MarkerFile {
		t.Errorf("dir holds %v after a failed Apply, want only the marker", got)
	}
	if b, err := os.ReadFile(filepath.Join(dir, layout.MarkerFile)); err != nil || len(b) != 0 {
		t.Errorf("marker = %q, %v; want it empty as Prepare left it", b, err)
	}
}

// TestApply: every compression gives layer.erofs, a marker with the
// verified diff ID, and the descriptor containerd's unpacker checks.
func TestApply(t *testing.T) {
	raw := makeTar(t, "a", "dir/b", "dir/c")
	// Trailing zeros after the end-of-archive marker are part of the diff
	// ID (tar writers pad to a record size) though no converter reads them.
	padded := append(append([]byte{}, raw...), make([]byte, 8192)...)
	tests := []struct {
		name string
		kind blobKind
		tar  []byte
	}{
		{"uncompressed", plain, raw},
		{"gzip", gzipped, raw},
		{"zstd", zstded, raw},
		{"gzip padded", gzipped, padded},
		{"zstd padded", zstded, padded},
		{"docker gzip", gzipped, raw},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			mt := tc.kind.mediaType()
			if strings.HasPrefix(tc.name, "docker") {
				mt = "application/vnd.docker.image.rootfs.diff.tar.gzip"
			}
			desc := f.blob(compress(t, tc.kind, tc.tar), mt, nil)
			dir, mounts := f.extractDir()
			var progressed int64
			got, err := f.d.Apply(context.Background(), desc, mounts, func(_ context.Context, _ ocispec.Descriptor, c *diff.ApplyConfig) error {
				c.Progress = func(n int64) { progressed = n }
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := digest.FromBytes(tc.tar)
			if got.Digest != want || got.Size != int64(len(tc.tar)) || got.MediaType != ocispec.MediaTypeImageLayer {
				t.Errorf("Apply = %+v, want digest %s size %d", got, want, len(tc.tar))
			}
			if progressed != desc.Size {
				t.Errorf("progress reported %d, want %d", progressed, desc.Size)
			}
			m, err := layout.ReadMarker(dir)
			if err != nil {
				t.Fatal(err)
			}
			if m.DiffID != want || m.BlobDigest != desc.Digest || m.MediaType != mt {
				t.Errorf("marker %+v", m)
			}
			layer, err := os.ReadFile(filepath.Join(dir, layout.LayerFile))
			if err != nil || string(layer) != "a\ndir/b\ndir/c\n" {
				t.Errorf("layer.erofs = %q, %v", layer, err)
			}
			if names := listDir(t, dir); strings.Join(names, ",") != layout.MarkerFile+","+layout.LayerFile {
				t.Errorf("dir holds %v", names)
			}
		})
	}
}

// TestApplyFailures: each bad input fails with an error naming the blob
// and leaves the dir exactly as Prepare made it.
func TestApplyFailures(t *testing.T) {
	raw := makeTar(t, "a", "b", "c", "d")
	gz := compress(t, gzipped, raw)
	zs := compress(t, zstded, raw)
	corruptZstd := append([]byte{}, zs...)
	for i := len(corruptZstd) / 2; i < len(corruptZstd)/2+16; i++ {
		corruptZstd[i] ^= 0x5a
	}
	tests := []struct {
		name      string
		blob      []byte
		mediaType string
		marker    *layout.Marker    // pre-filled expected diff ID
		labels    map[string]string // content labels of the blob
		maxSize   int64
		wantErr   string
	}{
		{name: "truncated gzip", blob: gz[:len(gz)/2], mediaType: gzipped.mediaType(), wantErr: "unexpected EOF|complete gzip"},
		{name: "corrupt zstd", blob: corruptZstd, mediaType: zstded.mediaType()},
		{name: "escape", blob: makeTar(t, "../etc/passwd"), mediaType: plain.mediaType(), wantErr: "escapes"},
		{name: "diff ID from marker", blob: gz, mediaType: gzipped.mediaType(),
			marker: &layout.Marker{DiffID: digest.FromString("not this")}, wantErr: "diff ID mismatch"},
		{name: "diff ID from content label", blob: zs, mediaType: zstded.mediaType(),
			labels: map[string]string{labels.LabelUncompressed: digest.FromString("nope").String()}, wantErr: "diff ID mismatch"},
		{name: "encrypted", blob: gz, mediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted", wantErr: "encrypted"},
		{name: "unknown media type", blob: gz, mediaType: "application/x-foo", wantErr: "not supported"},
		{name: "too big", blob: gz, mediaType: gzipped.mediaType(), maxSize: 2000, wantErr: "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.d.cfg.MaxLayerSize = tc.maxSize
			desc := f.blob(tc.blob, tc.mediaType, tc.labels)
			dir, mounts := f.extractDir()
			var before []byte
			if tc.marker != nil {
				if err := layout.WriteMarker(dir, *tc.marker); err != nil {
					t.Fatal(err)
				}
				before, _ = os.ReadFile(filepath.Join(dir, layout.MarkerFile))
			}
			_, err := f.d.Apply(context.Background(), desc, mounts)
			if err == nil {
				t.Fatal("Apply succeeded")
			}
			if !strings.Contains(err.Error(), desc.Digest.String()) || !regexp.MustCompile(tc.wantErr).MatchString(err.Error()) {
				t.Errorf("error %q should name %s and say %q", err, desc.Digest, tc.wantErr)
			}
			if errdefs.IsNotImplemented(err) {
				t.Errorf("error %v is ErrNotImplemented: the diff service would try walking on our dir", err)
			}
			if tc.marker != nil {
				after, _ := os.ReadFile(filepath.Join(dir, layout.MarkerFile))
				if !bytes.Equal(before, after) || len(listDir(t, dir)) != 1 {
					t.Errorf("dir changed: %v, marker %q", listDir(t, dir), after)
				}
				return
			}
			assertUntouched(t, dir)
		})
	}
}

// TestApplyCancel: cancelling mid-stream stops the Apply with ctx's error
// and leaves nothing behind.
func TestApplyCancel(t *testing.T) {
	for _, kind := range []blobKind{plain, gzipped, zstded} {
		t.Run(kind.mediaType(), func(t *testing.T) {
			f := newFixture(t)
			names := make([]string, 200)
			for i := range names {
				names[i] = fmt.Sprintf("f%03d", i)
			}
			desc := f.blob(compress(t, kind, makeTar(t, names...)), kind.mediaType(), nil)
			dir, mounts := f.extractDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f.d.convert = func(ctx2 context.Context, dst *os.File, src io.Reader, o erofs.ConvertOptions) (*erofs.ConvertStats, error) {
				// Read a little, then the client goes away.
				if _, err := io.CopyN(dst, src, 50000); err != nil {
					return nil, err
				}
				cancel()
				_, err := io.Copy(dst, src)
				return nil, err
			}
			_, err := f.d.Apply(ctx, desc, mounts)
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), desc.Digest.String()) {
				t.Fatalf("err = %v, want context.Canceled naming the blob", err)
			}
			assertUntouched(t, dir)
		})
	}
}

// TestCloseStopsApply is containerd stopping on SIGTERM: it closes the
// plugin but neither cancels nor waits for the RPC in flight. Close must
// cancel the Apply and return only once it has cleaned up, and later calls
// must fail as unavailable.
func TestCloseStopsApply(t *testing.T) {
	f := newFixture(t)
	desc := f.blob(compress(t, gzipped, makeTar(t, "a", "b", "c")), gzipped.mediaType(), nil)
	dir, mounts := f.extractDir()
	converting := make(chan struct{})
	f.d.convert = func(ctx context.Context, dst *os.File, src io.Reader, o erofs.ConvertOptions) (*erofs.ConvertStats, error) {
		if _, err := io.CopyN(dst, src, 1000); err != nil {
			return nil, err
		}
		close(converting)
		<-ctx.Done() // a long layer, until something stops it
		return nil, ctx.Err()
	}
	applied := make(chan error, 1)
	go func() {
		_, err := f.d.Apply(context.Background(), desc, mounts)
		applied <- err
	}()
	<-converting
	if err := f.d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-applied:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Apply after Close: %v, want context.Canceled", err)
		}
	default:
		t.Fatal("Close returned while the Apply was still running")
	}
	assertUntouched(t, dir)
	if _, err := f.d.Apply(context.Background(), desc, mounts); !errdefs.IsUnavailable(err) {
		t.Fatalf("Apply on a closed differ: %v, want ErrUnavailable", err)
	}
}

// TestApplyNotOurs: mounts of other snapshotters fall through to walking.
func TestApplyNotOurs(t *testing.T) {
	f := newFixture(t)
	desc := f.blob(makeTar(t, "a"), plain.mediaType(), nil)
	noMarker := t.TempDir()
	tests := []struct {
		name   string
		mounts []mount.Mount
	}{
		{"none", nil},
		{"overlay", []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"upperdir=" + noMarker}}}},
		{"bind without marker", []mount.Mount{{Type: "bind", Source: noMarker, Options: []string{"rbind"}}}},
		{"two mounts", []mount.Mount{{Type: "bind", Source: noMarker}, {Type: "bind", Source: noMarker}}},
		{"erofs", []mount.Mount{{Type: "erofs", Source: filepath.Join(noMarker, "layer.erofs")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.d.Apply(context.Background(), desc, tc.mounts)
			if !errdefs.IsNotImplemented(err) {
				t.Fatalf("err = %v, want ErrNotImplemented", err)
			}
		})
	}
	if got := listDir(t, noMarker); len(got) != 0 {
		t.Errorf("wrote %v into a dir that is not ours", got)
	}
}

// TestApplyConcurrent: Applies of many layers at once (parallel unpack)
// each get their own result; run with -race.
func TestApplyConcurrent(t *testing.T) {
	f := newFixture(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		kind := blobKind(i % 3)
		raw := makeTar(t, fmt.Sprintf("layer%d", i), "common")
		desc := f.blob(compress(t, kind, raw), kind.mediaType(), nil)
		dir, mounts := f.extractDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := f.d.Apply(context.Background(), desc, mounts)
			if err == nil && got.Digest != digest.FromBytes(raw) {
				err = fmt.Errorf("layer %d: digest %s", i, got.Digest)
			}
			if err == nil {
				var m layout.Marker
				if m, err = layout.ReadMarker(dir); err == nil && m.BlobDigest != desc.Digest {
					err = fmt.Errorf("layer %d: marker names %s", i, m.BlobDigest)
				}
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
