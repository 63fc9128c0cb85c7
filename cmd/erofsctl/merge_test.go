package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/vmdk"
)

// mergeLayer converts a small directory into a layer image in dir.
func mergeLayer(t *testing.T, dir, name string, files map[string]string) string {
	t.Helper()
	src := filepath.Join(dir, name+".src")
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, name+".erofs")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := erofs.ConvertDir(context.Background(), f, src, erofs.ConvertOptions{}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMergeCommand(t *testing.T) {
	dir := t.TempDir()
	l0 := mergeLayer(t, dir, "l0", map[string]string{"a": "lower", "d/x": "x"})
	l1 := mergeLayer(t, dir, "l1", map[string]string{"a": "upper", "b": "new"})
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	fsmeta := filepath.Join(outDir, "fsmeta.erofs")
	desc := filepath.Join(outDir, "merged.vmdk")

	var stdout, stderr bytes.Buffer
	if rc := run([]string{"merge", "-o", fsmeta, "--vmdk", desc, l0, l1}, &stdout, &stderr); rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr.String())
	}
	if !strings.Contains(stdout.String(), "2 layers") {
		t.Errorf("summary %q does not count the layers", stdout.String())
	}
	if got := dirNames(t, outDir); !slices.Equal(got, []string{"fsmeta.erofs", "merged.vmdk"}) {
		t.Errorf("output dir holds %v, want only fsmeta.erofs and merged.vmdk", got)
	}
	fi, err := os.Stat(fsmeta)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size()%erofs.BlockSize != 0 {
		t.Errorf("fsmeta is %d bytes", fi.Size())
	}
	f, err := os.Open(desc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := vmdk.ParseDescriptor(f)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range d.Extents {
		paths = append(paths, e.Path)
	}
	if want := []string{fsmeta, l0, l1}; !slices.Equal(paths, want) {
		t.Errorf("VMDK extents %v, want %v", paths, want)
	}

	// The merged view through our reader, layers as devices.
	im, err := erofs.Open(fsmeta, l0, l1)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for p, want := range map[string]string{"a": "upper", "b": "new", "d/x": "x"} {
		got, err := im.Open(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b := make([]byte, 16)
		n, _ := got.Read(b)
		got.Close()
		if string(b[:n]) != want {
			t.Errorf("%s = %q, want %q", p, b[:n], want)
		}
	}
}

// TestMergeCommandErrors: every failure names its cause and leaves the
// output directory as it was.
func TestMergeCommandErrors(t *testing.T) {
	dir := t.TempDir()
	l0 := mergeLayer(t, dir, "l0", map[string]string{"a": "a"})
	ragged := filepath.Join(dir, "ragged.erofs")
	b, err := os.ReadFile(l0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ragged, append(b, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	fsmeta := filepath.Join(outDir, "fsmeta.erofs")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no output", []string{l0}, "need -o"},
		{"no layers", []string{"-o", fsmeta}, "need -o"},
		{"missing layer", []string{"-o", fsmeta, l0, filepath.Join(dir, "nope.erofs")}, "nope.erofs"},
		{"ragged layer", []string{"-o", fsmeta, l0, ragged}, "ragged.erofs"},
		{"output dir missing", []string{"-o", filepath.Join(dir, "no", "fsmeta.erofs"), l0}, "no such file"},
		{"vmdk dir missing", []string{"-o", fsmeta, "--vmdk", filepath.Join(dir, "no", "m.vmdk"), l0}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if rc := run(append([]string{"merge"}, tc.args...), &stdout, &stderr); rc != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", rc, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tc.want)
			}
			if got := dirNames(t, outDir); len(got) != 0 {
				t.Errorf("left behind in the output dir: %v", got)
			}
		})
	}
}

// TestMergeCommandKeepsOldOutputs: a failed merge over existing outputs
// leaves them untouched.
func TestMergeCommandKeepsOldOutputs(t *testing.T) {
	dir := t.TempDir()
	l0 := mergeLayer(t, dir, "l0", map[string]string{"a": "a"})
	fsmeta := filepath.Join(dir, "fsmeta.erofs")
	if err := os.WriteFile(fsmeta, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"merge", "-o", fsmeta, "--vmdk", filepath.Join(dir, "no", "m.vmdk"), l0}, &stdout, &stderr); rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	if b, err := os.ReadFile(fsmeta); err != nil || string(b) != "old" {
		t.Errorf("old fsmeta now %q (%v), want it untouched", b, err)
	}
	for _, n := range dirNames(t, dir) {
		if strings.HasPrefix(n, ".fsmeta-") {
			t.Errorf("temp file %s left behind", n)
		}
	}
}

// TestMergeLsPre1970 runs merge and ls over layers whose files date from
// 1950: each layer's superblock build time is then negative, which the
// reader once refused as corrupt ("superblock build time … out of range").
func TestMergeLsPre1970(t *testing.T) {
	dir := t.TempDir()
	// 1950, not 1800: the source files sit on the host's /tmp, whose
	// file system may keep only 32-bit times (1901 to 2038).
	old := time.Date(1950, 6, 1, 0, 0, 0, 0, time.UTC)
	var layers []string
	for _, name := range []string{"l0", "l1"} {
		src := filepath.Join(dir, name+".src")
		if err := os.MkdirAll(filepath.Join(src, name), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"a", "b", "c"} {
			p := filepath.Join(src, name, f)
			if err := os.WriteFile(p, []byte(name+f), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range []string{filepath.Join(src, name), src} {
			if err := os.Chtimes(d, old, old); err != nil {
				t.Fatal(err)
			}
		}
		out := filepath.Join(dir, name+".erofs")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := erofs.ConvertDir(context.Background(), f, src, erofs.ConvertOptions{}); err != nil {
			t.Fatal(err)
		}
		f.Close()
		layers = append(layers, out)
	}
	fsmeta := filepath.Join(dir, "fsmeta.erofs")
	var stdout, stderr bytes.Buffer
	if rc := run(append([]string{"merge", "-o", fsmeta, "--vmdk", filepath.Join(dir, "merged.vmdk")}, layers...), &stdout, &stderr); rc != 0 {
		t.Fatalf("merge: exit %d: %s", rc, stderr.String())
	}
	for _, args := range [][]string{
		{"ls", "-l", layers[0], "l0"},
		{"ls", "-l", "--device", layers[0], "--device", layers[1], fsmeta, "l1"},
	} {
		stdout.Reset()
		stderr.Reset()
		if rc := run(args, &stdout, &stderr); rc != 0 {
			t.Fatalf("%v: exit %d: %s", args, rc, stderr.String())
		}
		if n := strings.Count(stdout.String(), " 1950-06-01 00:00:00 "); n != 3 {
			t.Errorf("%v: %d entries dated 1950-06-01, want 3:\n%s", args, n, stdout.String())
		}
	}
}
