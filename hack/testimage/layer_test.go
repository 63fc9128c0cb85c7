package main

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_raw (bit 13) permitted+effective, as setcap writes it.
func capNetRaw() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<13)
	return string(b)
}

// buildUpper makes an overlay-style upper dir holding one of every entry
// kind the converter knows.
func buildUpper(t *testing.T, subsec time.Time) string {
	t.Helper()
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	writeFile(t, p("dir/file"), "hello")
	must(t, "chmod", os.Chmod(p("dir/file"), 0o640))
	must(t, "chown", os.Lchown(p("dir/file"), 1000, 1001))
	must(t, "link", os.Link(p("dir/file"), p("dir/link1")))
	must(t, "xattr", unix.Lsetxattr(p("dir"), "user.k", []byte("v"), 0))
	must(t, "symlink", os.Symlink("dir/file", p("sym")))
	must(t, "mkfifo", unix.Mkfifo(p("fifo"), 0o600))
	must(t, "mknod chr", unix.Mknod(p("chr"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, "mknod blk", unix.Mknod(p("blk"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 7))))
	must(t, "chmod chr", unix.Chmod(p("chr"), 0o666)) // mknod honours the umask
	must(t, "chmod blk", unix.Chmod(p("blk"), 0o660))
	must(t, "mknod whiteout", unix.Mknod(p("wh"), unix.S_IFCHR, 0))
	writeFile(t, p("suid"), "#!/bin/true\n")
	must(t, "chmod suid", unix.Chmod(p("suid"), 0o4755)) // os.Chmod drops 0o4000
	writeFile(t, p("opq/new"), "new")
	must(t, "opaque", unix.Lsetxattr(p("opq"), "trusted.overlay.opaque", []byte("y"), 0))
	must(t, "mkdir", os.Mkdir(p("origin"), 0o700))
	must(t, "origin", unix.Lsetxattr(p("origin"), "trusted.overlay.origin", []byte{0, 1, 2}, 0))
	writeFile(t, p("cap"), "binary")
	must(t, "setcap", unix.Lsetxattr(p("cap"), "security.capability", []byte(capNetRaw()), 0))
	writeFile(t, p("subsec"), "time")
	must(t, "chtimes", os.Chtimes(p("subsec"), subsec, subsec))
	return d
}

func readTar(t *testing.T, data []byte) []*tar.Header {
	t.Helper()
	var hdrs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs
		}
		must(t, "read layer tar", err)
		hdrs = append(hdrs, h)
	}
}

func TestWriteLayerEntries(t *testing.T) {
	requireRoot(t)
	subsec := time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)
	upper := buildUpper(t, subsec)

	type want struct {
		typ      byte
		mode     int64
		uid, gid int
		size     int64
		link     string
		dev      [2]int64
		xattrs   map[string]string
	}
	wants := []struct {
		name string
		want want
	}{
		{"blk", want{typ: tar.TypeBlock, mode: 0o660, dev: [2]int64{7, 7}}},
		{"cap", want{typ: tar.TypeReg, mode: 0o644, size: 6, xattrs: map[string]string{"security.capability": capNetRaw()}}},
		{"chr", want{typ: tar.TypeChar, mode: 0o666, dev: [2]int64{1, 3}}},
		{"dir/", want{typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"user.k": "v"}}},
		{"dir/file", want{typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1001, size: 5}},
		{"dir/link1", want{typ: tar.TypeLink, mode: 0o640, uid: 1000, gid: 1001, link: "dir/file"}},
		{"fifo", want{typ: tar.TypeFifo, mode: 0o600}},
		{"opq/", want{typ: tar.TypeDir, mode: 0o755}},
		{"opq/.wh..wh..opq", want{typ: tar.TypeReg}},
		{"opq/new", want{typ: tar.TypeReg, mode: 0o644, size: 3}},
		{"origin/", want{typ: tar.TypeDir, mode: 0o700}}, // overlay's origin xattr dropped
		{"subsec", want{typ: tar.TypeReg, mode: 0o644, size: 4}},
		{"suid", want{typ: tar.TypeReg, mode: 0o4755, size: 12}},
		{"sym", want{typ: tar.TypeSymlink, mode: 0o777, link: "dir/file"}},
		{".wh.wh", want{typ: tar.TypeReg}},
	}

	for _, sub := range []bool{false, true} {
		hdrs := readTar(t, layerBytes(t, upper, layerOptions{subsecond: sub}))
		if len(hdrs) != len(wants) {
			var names []string
			for _, h := range hdrs {
				names = append(names, h.Name)
			}
			t.Fatalf("subsecond=%v: %d entries %q, want %d", sub, len(hdrs), names, len(wants))
		}
		for i, w := range wants {
			h := hdrs[i]
			if h.Name != w.name {
				t.Errorf("entry %d is %q, want %q (order)", i, h.Name, w.name)
				continue
			}
			xattrs := map[string]string{}
			for k, v := range h.PAXRecords {
				if name, ok := strings.CutPrefix(k, paxXattr); ok {
					xattrs[name] = v
				}
			}
			got := want{h.Typeflag, h.Mode, h.Uid, h.Gid, h.Size, h.Linkname, [2]int64{h.Devmajor, h.Devminor}, xattrs}
			if len(w.want.xattrs) == 0 {
				w.want.xattrs = map[string]string{}
			}
			if !equalWant(got.xattrs, w.want.xattrs) || got.typ != w.want.typ || got.mode != w.want.mode ||
				got.uid != w.want.uid || got.gid != w.want.gid || got.size != w.want.size ||
				got.link != w.want.link || got.dev != w.want.dev {
				t.Errorf("%s: got %+v, want %+v", w.name, got, w.want)
			}
			if h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
				t.Errorf("%s: names or atime/ctime leaked: %+v", w.name, h)
			}
			if w.name == "subsec" {
				wantTime := subsec.Truncate(time.Second)
				if sub {
					wantTime = subsec
				}
				if !h.ModTime.Equal(wantTime) {
					t.Errorf("subsecond=%v: mtime %v, want %v", sub, h.ModTime, wantTime)
				}
			}
		}
	}
}

func equalWant(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestWriteLayerDeterministic(t *testing.T) {
	requireRoot(t)
	upper := buildUpper(t, time.Unix(1700000000, 5))
	a := layerBytes(t, upper, layerOptions{subsecond: true})
	b := layerBytes(t, upper, layerOptions{subsecond: true})
	if !bytes.Equal(a, b) {
		t.Fatal("two conversions of the same tree differ")
	}
}

func TestWriteLayerRejects(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		setup   func(t *testing.T, d string)
		wantErr string
	}{
		{"literal whiteout name", func(t *testing.T, d string) {
			writeFile(t, filepath.Join(d, "x/.wh.foo"), "")
		}, "x/.wh.foo"},
		{"socket", func(t *testing.T, d string) {
			l, err := net.Listen("unix", filepath.Join(d, "sock"))
			must(t, "listen", err)
			t.Cleanup(func() { l.Close() })
		}, "sock: unsupported file type"},
		{"overlay redirect", func(t *testing.T, d string) {
			must(t, "mkdir", os.Mkdir(filepath.Join(d, "moved"), 0o755))
			must(t, "xattr", unix.Lsetxattr(filepath.Join(d, "moved"), "trusted.overlay.redirect", []byte("/old"), 0))
		}, "moved: overlay xattr trusted.overlay.redirect"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			tc.setup(t, d)
			_, err := writeLayer(io.Discard, d, layerOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("not a directory", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		writeFile(t, f, "x")
		if _, err := writeLayer(io.Discard, f, layerOptions{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("error %v, want 'not a directory'", err)
		}
	})
}

func TestLayerCmdLeavesNothingOnError(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, ".wh.bad"), "")
	outDir := t.TempDir()
	if err := layerCmd([]string{"-o", filepath.Join(outDir, "l.tar"), src}); err == nil {
		t.Fatal("converting a tree with a literal .wh. name succeeded")
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
		t.Fatalf("left behind %v", ents)
	}
}
