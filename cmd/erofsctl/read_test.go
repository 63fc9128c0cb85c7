package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// ls, cat and extract against images from Debian's mkfs.erofs: extract's
// output must equal the source tree in every attribute a container sees.

func readTestNeeds(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (device nodes, owners, trusted xattrs)")
	}
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("mkfs.erofs (erofs-utils) not installed")
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// readTree makes a source tree with every inode type and attribute.
func readTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(n string) string { return filepath.Join(src, n) }
	file := func(n string, data []byte, mode os.FileMode) {
		must(os.MkdirAll(filepath.Dir(p(n)), 0o755))
		must(os.WriteFile(p(n), data, 0o600))
		must(unix.Chmod(p(n), uint32(mode)))
	}
	big := make([]byte, 3<<20+123)
	for i := range big {
		big[i] = byte(i * 7 / 3)
	}
	file("empty", nil, 0o644)
	file("small", []byte("small\n"), 0o644)
	file("big", big, 0o644)
	file("bin/setuid", []byte("#!/bin/sh\n"), 0o4755)
	file("bin/setgid", []byte("#!/bin/sh\n"), 0o2711)
	must(os.Mkdir(p("tmp"), 0o755))
	must(unix.Chmod(p("tmp"), 0o1777))
	file("home/user/owned", []byte("owned"), 0o600)
	must(os.Lchown(p("home/user/owned"), 100000, 100001))
	must(os.Lchown(p("home/user"), 1000, 1000))
	must(os.Symlink("../small", p("bin/link")))
	must(os.Symlink(strings.Repeat("very/long/", 60), p("longlink")))
	must(os.Lchown(p("longlink"), 7, 8))
	must(os.Link(p("big"), p("bin/big-hardlink")))
	must(os.Link(p("small"), p("home/small-hardlink")))
	must(os.Mkdir(p("dev"), 0o755))
	must(unix.Mknod(p("dev/null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(p("dev/sda1"), syscall.S_IFBLK|0o660, int(unix.Mkdev(8, 1))))
	must(unix.Mknod(p("dev/big"), syscall.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))))
	must(unix.Mkfifo(p("dev/fifo"), 0o640))
	for n, m := range map[string]uint32{"dev/null": 0o666, "dev/sda1": 0o660, "dev/fifo": 0o640} {
		must(unix.Chmod(p(n), m)) // mknod applied the umask
	}
	must(unix.Mknod(p("whiteout"), syscall.S_IFCHR, 0)) // overlay whiteout
	must(os.Mkdir(p("opaque"), 0o755))
	file("opaque/inside", []byte("i"), 0o644)
	must(unix.Lsetxattr(p("opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(unix.Lsetxattr(p("small"), "user.note", []byte("hello"), 0))
	must(unix.Lsetxattr(p("small"), "security.label", []byte("lbl"), 0))
	must(unix.Lsetxattr(p("big"), "trusted.big", bytes.Repeat([]byte("v"), 2000), 0))
	must(unix.Lsetxattr(p("longlink"), "trusted.sym", []byte("s"), 0))
	mustRun(t, "setfacl", "-m", "u:1000:rwx", p("home/user/owned"))
	mustRun(t, "setfacl", "-d", "-m", "g:100:rx", p("home"))
	must(os.Chmod(src, 0o755))
	i := int64(0)
	must(filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		i++
		ts := unix.Timespec{Sec: time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC).Unix() + i*3600, Nsec: i * 1_000_007}
		return unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}))
	return src
}

// compareDirs checks that got equals want in every attribute: type, mode,
// owner, size, mtime (ns), rdev, nlink, xattrs, link target, content, and
// hardlink groups.
func compareDirs(t *testing.T, want, got string) {
	t.Helper()
	var wantNames []string
	gotLinks := map[uint64]uint64{} // want ino -> got ino
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		wantNames = append(wantNames, rel)
		g := filepath.Join(got, rel)
		var ws, gs unix.Stat_t
		if err := unix.Lstat(p, &ws); err != nil {
			return err
		}
		if err := unix.Lstat(g, &gs); err != nil {
			t.Errorf("%s: missing from the extraction: %v", rel, err)
			return nil
		}
		var diffs []string
		check := func(what string, a, b any) {
			if a != b {
				diffs = append(diffs, fmt.Sprintf("%s %v, want %v", what, b, a))
			}
		}
		check("mode", fmt.Sprintf("%o", ws.Mode), fmt.Sprintf("%o", gs.Mode))
		check("uid", ws.Uid, gs.Uid)
		check("gid", ws.Gid, gs.Gid)
		check("mtime", ws.Mtim, gs.Mtim)
		check("nlink", ws.Nlink, gs.Nlink)
		if !d.IsDir() {
			check("size", ws.Size, gs.Size)
		}
		if m := ws.Mode & syscall.S_IFMT; m == syscall.S_IFCHR || m == syscall.S_IFBLK {
			check("rdev", ws.Rdev, gs.Rdev)
		}
		check("xattrs", xattrString(t, p), xattrString(t, g))
		switch ws.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(g)
			check("target", a, b)
		case syscall.S_IFREG:
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(g)
			check("content", true, bytes.Equal(a, b))
			if prev, ok := gotLinks[ws.Ino]; ok {
				check("hardlink inode", prev, gs.Ino)
			}
			gotLinks[ws.Ino] = gs.Ino
		}
		if len(diffs) > 0 {
			t.Errorf("%s: %s", rel, strings.Join(diffs, "; "))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var gotNames []string
	filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(got, p)
		gotNames = append(gotNames, rel)
		return nil
	})
	if !slices.Equal(wantNames, gotNames) {
		t.Errorf("names differ:\nwant %v\ngot  %v", wantNames, gotNames)
	}
}

func xattrString(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	slices.Sort(names)
	var out []string
	for _, name := range names {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=%q", name, v[:m]))
	}
	return strings.Join(out, ",")
}

func erofsctl(args ...string) (string, string, int) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestExtract(t *testing.T) {
	readTestNeeds(t)
	src := readTree(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		mkfs []string
		devs func() []string
		flat bool // read [image, blob] concatenated, no --device
	}{
		{name: "default"},
		{name: "noinline", mkfs: []string{"-E", "noinline_data"}},
		{name: "blobdev", mkfs: []string{"--blobdev=" + filepath.Join(dir, "blob"), "--chunksize=4096"},
			devs: func() []string { return []string{"--device", filepath.Join(dir, "blob")} }},
		{name: "flat", mkfs: []string{"--blobdev=" + filepath.Join(dir, "blob2"), "--chunksize=4096"}, flat: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img.erofs")
			mustRun(t, "mkfs.erofs", append(append([]string{"--quiet"}, tc.mkfs...), img, src)...)
			if tc.flat {
				img = flatten(t, img, filepath.Join(dir, "blob2"))
			}
			out := filepath.Join(t.TempDir(), "out")
			args := []string{"extract"}
			if tc.devs != nil {
				args = append(args, tc.devs()...)
			}
			if _, stderr, code := erofsctl(append(args, img, out)...); code != 0 {
				t.Fatalf("extract: exit %d: %s", code, stderr)
			}
			compareDirs(t, src, out)
		})
	}
}

// flatten concatenates a one-device image and its blob, 4 KiB-aligned, and
// sets the slot's blocks and mapped_blkaddr (mkfs.erofs 1.5 leaves them
// 0) and the superblock checksum: the single-disk form of a merged VMDK.
func flatten(t *testing.T, img, blob string) string {
	t.Helper()
	meta, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	pad := func(b []byte) []byte {
		return append(b, make([]byte, (erofs.BlockSize-len(b)%erofs.BlockSize)%erofs.BlockSize)...)
	}
	meta, data = pad(meta), pad(data)
	var sb erofs.Superblock
	if err := erofs.Unmarshal(meta[erofs.SuperblockOffset:], &sb); err != nil {
		t.Fatal(err)
	}
	slot := int(sb.DevtSlotOff) * erofs.DeviceSlotSize
	binary.LittleEndian.PutUint32(meta[slot+64:], uint32(len(data)/erofs.BlockSize))
	binary.LittleEndian.PutUint32(meta[slot+68:], uint32(len(meta)/erofs.BlockSize))
	blk := meta[erofs.SuperblockOffset:erofs.BlockSize]
	clear(blk[4:8])
	binary.LittleEndian.PutUint32(blk[4:], ^crc32.Checksum(blk, crc32.MakeTable(crc32.Castagnoli)))
	out := filepath.Join(t.TempDir(), "flat.img")
	if err := os.WriteFile(out, append(meta, data...), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestExtractErrors(t *testing.T) {
	readTestNeeds(t)
	src := readTree(t)
	img := filepath.Join(t.TempDir(), "img.erofs")
	mustRun(t, "mkfs.erofs", "--quiet", img, src)

	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := erofsctl("extract", img, full); code == 0 || !strings.Contains(stderr, "not empty") {
		t.Errorf("extract into a non-empty dir: exit %d, %q", code, stderr)
	}

	// Corrupt the data of "big" (past the metadata): the extraction fails
	// naming the entry and leaves nothing behind.
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.erofs")
	if err := os.WriteFile(bad, b[:len(b)-8192], 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	_, stderr, code := erofsctl("extract", bad, out)
	if code == 0 || !strings.Contains(stderr, "corrupt") {
		t.Errorf("extract of a truncated image: exit %d, %q", code, stderr)
	}
	if _, err := os.Lstat(out); !os.IsNotExist(err) {
		t.Errorf("failed extract left %s behind: %v", out, err)
	}
}

func TestLsCat(t *testing.T) {
	readTestNeeds(t)
	src := readTree(t)
	img := filepath.Join(t.TempDir(), "img.erofs")
	mustRun(t, "mkfs.erofs", "--quiet", img, src)

	stdout, stderr, code := erofsctl("ls", img)
	if code != 0 {
		t.Fatalf("ls: %d %s", code, stderr)
	}
	if want := "big\nbin\ndev\nempty\nhome\nlonglink\nopaque\nsmall\ntmp\nwhiteout\n"; stdout != want {
		t.Errorf("ls:\n%s\nwant:\n%s", stdout, want)
	}
	for _, tc := range []struct {
		args []string
		want []string // substrings of the output
	}{
		{[]string{"ls", "-l", img, "/bin"}, []string{
			"-rwsr-xr-x 0/0         10 ", " setuid\n",
			"-rwx--s--x 0/0 ", " setgid\n",
			"lrwxrwxrwx 0/0          8 ", " link -> ../small\n",
			"-rw-r--r-- 0/0    3145851 ",
		}},
		{[]string{"ls", "-l", img, "dev"}, []string{"crw-rw-rw- 0/0       1, 3 ", "brw-rw---- 0/0       8, 1 ", "crw------- 0/0 300, 70000 ", "prw-r----- 0/0 "}},
		{[]string{"ls", "-l", img, "tmp/"}, nil},
		{[]string{"ls", "-l", img, "/"}, []string{"drwxrwxrwt 0/0 ", "c--------- 0/0       0, 0 ", " whiteout\n"}},
		{[]string{"ls", "-l", img, "home/user/owned"}, []string{"-rw-rwx--- 100000/100001          5 2021-05-"}},
		{[]string{"cat", img, "small"}, []string{"small\n"}},
	} {
		stdout, stderr, code := erofsctl(tc.args...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", tc.args, code, stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, stdout)
			}
		}
	}
	want, _ := os.ReadFile(filepath.Join(src, "big"))
	if stdout, _, code := erofsctl("cat", img, "/big"); code != 0 || stdout != string(want) {
		t.Errorf("cat big: exit %d, %d bytes, want %d", code, len(stdout), len(want))
	}
	for _, args := range [][]string{
		{"cat", img, "bin"},
		{"cat", img, "nope"},
		{"ls", img, "nope"},
		{"ls", "/nonexistent.img"},
		{"cat", img},
		{"extract", img},
	} {
		if _, stderr, code := erofsctl(args...); code == 0 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q: want an error", args, code, stderr)
		}
	}
}
