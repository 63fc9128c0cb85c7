package integration

import (
	"archive/tar"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"

	"github.com/erofs-vm/containerd-erofs/integration/guest"
)

// Unit tests of the e2e steps that judge: if CheckMounts, the report parser
// or the tar oracle were lenient, TestE2E would pass on a broken snapshotter.

func TestCheckMounts(t *testing.T) {
	dir := t.TempDir()
	layer := func(i string) string {
		p := filepath.Join(dir, i, "layer.erofs")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	l1, l2, l3 := layer("1"), layer("2"), layer("3")
	layers := []string{l1, l2, l3}
	fsmeta := filepath.Join(dir, "3", "fsmeta.erofs")
	vmdk := filepath.Join(dir, "3", "merged.vmdk")
	rw := filepath.Join(dir, "4", "rwlayer.img")
	os.MkdirAll(filepath.Dir(rw), 0o755)
	if err := os.WriteFile(vmdk, []byte("# Disk DescriptorFile\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(rw, 4096); err != nil {
		t.Fatal(err)
	}
	stack := mount.Mount{Type: "format/erofs", Source: fsmeta, Options: []string{"ro", "device=" + l1, "device=" + l2, "device=" + l3}}
	ext4 := mount.Mount{Type: "ext4", Source: rw, Options: []string{"rw"}}

	tests := []struct {
		name     string
		mounts   []mount.Mount
		layers   []string
		writable bool
		size     int64
		wantErr  string
	}{
		{"view over 3", []mount.Mount{stack}, layers, false, 0, ""},
		{"writable over 3", []mount.Mount{stack, ext4}, layers, true, 4096, ""},
		{"one layer", []mount.Mount{{Type: "erofs", Source: l1, Options: []string{"ro"}}}, layers[:1], false, 0, ""},
		{"devices newest first", []mount.Mount{{Type: "format/erofs", Source: fsmeta, Options: []string{"ro", "device=" + l3, "device=" + l2, "device=" + l1}}}, layers, false, 0, "want format/erofs"},
		{"a device missing", []mount.Mount{{Type: "format/erofs", Source: fsmeta, Options: []string{"ro", "device=" + l1, "device=" + l2}}}, layers, false, 0, "want format/erofs"},
		{"not read-only", []mount.Mount{{Type: "format/erofs", Source: fsmeta, Options: []string{"device=" + l1, "device=" + l2, "device=" + l3}}}, layers, false, 0, "want format/erofs"},
		{"overlay", []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a:/b"}}}, layers, false, 0, "want format/erofs"},
		{"erofs per layer", []mount.Mount{{Type: "erofs", Source: l3, Options: []string{"ro"}}}, layers, false, 0, "want format/erofs"},
		{"no ext4 on a writable", []mount.Mount{stack}, layers, true, 4096, "1 mounts"},
		{"ext4 read-only", []mount.Mount{stack, {Type: "ext4", Source: rw, Options: []string{"ro"}}}, layers, true, 4096, "writable"},
		{"ext4 wrong size", []mount.Mount{stack, ext4}, layers, true, 1 << 30, "is 4096 bytes"},
		{"bind instead of ext4", []mount.Mount{stack, {Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}}, layers, true, 4096, "want ext4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckMounts(tc.mounts, tc.layers, tc.writable, tc.size)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	// No merged.vmdk beside the fsmeta: qemubox would attach fsmeta alone.
	if err := os.Remove(vmdk); err != nil {
		t.Fatal(err)
	}
	if err := CheckMounts([]mount.Mount{stack}, layers, false, 0); err == nil || !strings.Contains(err.Error(), "merged.vmdk") {
		t.Errorf("missing merged.vmdk: %v", err)
	}
}

func TestParseContainerReport(t *testing.T) {
	good := "@@E2E python@@\n42\n@@E2E os-release@@\nID=debian\nVERSION_CODENAME=bookworm\n@@E2E write@@\nhello\n"
	tests := []struct {
		name     string
		out      string
		content  string
		parseErr string
		checkErr string
	}{
		{"good", good, "hello", "", ""},
		{"wrong answer", strings.Replace(good, "42", "41", 1), "hello", "", "printed \"41\""},
		{"not debian", strings.Replace(good, "ID=debian", "ID=alpine", 1), "hello", "", "not Debian"},
		{"write lost", good, "other", "", "read back"},
		{"no write section", strings.Split(good, "@@E2E write@@")[0], "hello", "no \"write\" section", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseContainerReport(tc.out, false)
			if tc.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
					t.Fatalf("parse error %v, want %q", err, tc.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = CheckContainerReport(r, tc.content)
			if (tc.checkErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.checkErr)) {
				t.Errorf("check error %v, want %q", err, tc.checkErr)
			}
		})
	}
	// The script frames exactly the sections the parser reads, in order.
	s := ContainerScript(true, "it's")
	var secs []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "echo '"+sectionPrefix) {
			secs = append(secs, strings.TrimSuffix(strings.TrimPrefix(l, "echo '"+sectionPrefix), sectionSuffix+"'"))
		}
	}
	if want := []string{SectionManifest, SectionPython, SectionOSRelease, SectionWrite}; !slices.Equal(secs, want) {
		t.Errorf("script sections %q, want %q", secs, want)
	}
	if !strings.Contains(s, `'it'\''s'`) {
		t.Errorf("content not shell-quoted in:\n%s", s)
	}
}

// TestTarOracle: the oracle applies whiteouts, opaque dirs and type
// replacements the way overlayfs shows a stack.
func TestTarOracle(t *testing.T) {
	requireRoot(t)
	type ent struct {
		name, body string
		typ        byte
		link       string
	}
	mk := func(name string, ents ...ent) string {
		p := filepath.Join(t.TempDir(), name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		tw := tar.NewWriter(f)
		for _, e := range ents {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link}
			if e.typ == tar.TypeDir {
				h.Mode = 0o755
			}
			if e.typ == tar.TypeReg {
				h.Size = int64(len(e.body))
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if e.typ == tar.TypeReg {
				tw.Write([]byte(e.body))
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	d, f, l := byte(tar.TypeDir), byte(tar.TypeReg), byte(tar.TypeSymlink)
	lower := mk("lower.tar",
		ent{name: "a/", typ: d}, ent{name: "a/keep", body: "k", typ: f}, ent{name: "a/gone", body: "g", typ: f},
		ent{name: "opq/", typ: d}, ent{name: "opq/old", body: "o", typ: f},
		ent{name: "f2d", body: "file", typ: f},
		ent{name: "d2f/", typ: d}, ent{name: "d2f/child", body: "c", typ: f},
		ent{name: "lnk", typ: l, link: "a/keep"})
	upper := mk("upper.tar",
		ent{name: "a/", typ: d}, ent{name: "a/.wh.gone", typ: f},
		ent{name: "opq/", typ: d}, ent{name: "opq/.wh..wh..opq", typ: f}, ent{name: "opq/new", body: "n", typ: f},
		ent{name: "f2d/", typ: d}, ent{name: "f2d/inside", body: "i", typ: f},
		ent{name: "d2f", body: "now a file", typ: f},
		ent{name: "lnk", body: "replaced", typ: f})
	root := tarOracle(t, []string{lower, upper})
	m, err := guest.HostManifest(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for p := range m {
		got = append(got, p)
	}
	slices.Sort(got)
	want := []string{".", "./a", "./a/keep", "./d2f", "./f2d", "./f2d/inside", "./lnk", "./opq", "./opq/new"}
	if !slices.Equal(got, want) {
		t.Errorf("oracle tree %q, want %q", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "d2f")); string(b) != "now a file" {
		t.Errorf("d2f = %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(root, "lnk")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("lnk: %v %v, want a regular file", fi, err)
	}
}
