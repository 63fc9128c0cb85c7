// Package hostile is the corpus of hostile OCI layers (issue 8): tars an
// attacker controls, each with the outcome the converter must give. Some
// expand to gigabytes, so the corpus stores generators, not tar files: every
// Case writes its tar on demand. erofs/hostile_test.go converts each one
// with erofs.ConvertTar and judges accepted images with the kernel and
// fsck.erofs; differ/hostile_test.go applies each one, gzip-compressed,
// through the differ into an extract dir.
//
// The expected outcomes follow containerd's own applier
// (pkg/archive/tar.go) where that makes sense for an image we write rather
// than a host directory; each Case's Containerd field says what containerd
// does with the same input, and Why explains any difference.
package hostile

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Outcome is what a layer must lead to.
type Outcome string

const (
	// OK: the layer converts, and the image shows Want.
	OK Outcome = "ok"
	// Reject: the conversion fails with an error containing Case.Err and
	// leaves nothing behind.
	Reject Outcome = "reject"
)

// Case is one hostile layer.
type Case struct {
	Name   string
	Expect Outcome
	// Err is a substring of the error of a rejected layer; it names the
	// entry wherever there is one.
	Err string
	// Why says why this outcome is right.
	Why string
	// Containerd is what containerd's applier does with the same tar on a
	// host directory, and ContainerdExpect its outcome as
	// differ/hostile_test.go checks it (empty: not checked, because it
	// depends on the host filesystem or costs gigabytes).
	Containerd       string
	ContainerdExpect Outcome
	// MaxSize is the size limit to convert under (ConvertOptions.
	// MaxImageSize, the differ's max_layer_size); 0 is none.
	MaxSize int64
	// Want lists what an accepted image must hold; Absent, names it must
	// not (each component looked up without following symlinks).
	Want   []Want
	Absent []string
	// Write writes the uncompressed layer tar.
	Write func(w io.Writer) error
}

// Want is one entry an accepted image must show.
type Want struct {
	Path string // relative to the image root, bytes as in the tar
	Kind string // "file", "dir", "symlink", "char"
	// Data is a regular file's content (checked when Size is 0 and Kind
	// is "file"); Size, when > 0, its size instead.
	Data string
	Size int64
	// Target is a symlink's target.
	Target string
	// Entries, when > 0, is how many names a directory holds.
	Entries int
	// Xattrs, when not nil, is the entry's complete set of xattrs.
	Xattrs map[string]string
}

var mtime = time.Unix(1700000000, 0)

// entry is one tar entry to write.
type entry struct {
	hdr  tar.Header
	data string
}

func file(name, data string) entry {
	return entry{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}, data}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func hardlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

func withXattrs(e entry, kv ...string) entry {
	e.hdr.PAXRecords = map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		e.hdr.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
	}
	e.hdr.Format = tar.FormatPAX
	return e
}

// entries returns a Write func for a tar of es.
func entries(es ...entry) func(io.Writer) error {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, e := range es {
			h := e.hdr
			h.ModTime = mtime
			if err := tw.WriteHeader(&h); err != nil {
				return fmt.Errorf("header %q: %w", h.Name, err)
			}
			if _, err := io.WriteString(tw, e.data); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}

// rawHeader is a 512-byte ustar header block with a valid checksum, for
// entries archive/tar's writer refuses to produce.
func rawHeader(name string, typeflag byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", mtime.Unix()))
	b[156] = typeflag
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// paxRecords encodes PAX records ("%d %s=%s\n", the length counting itself).
func paxRecords(kv ...string) []byte {
	var out []byte
	for i := 0; i < len(kv); i += 2 {
		rec := " " + kv[i] + "=" + kv[i+1] + "\n"
		n := len(rec)
		for {
			l := len(strconv.Itoa(n)) + len(rec)
			if l == n {
				break
			}
			n = l
		}
		out = append(out, strconv.Itoa(n)+rec...)
	}
	return out
}

func pad(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxThen writes a PAX 'x' header with records kv for the next entry, then
// the entry itself (a regular file named name with body, its header's size
// field set to len(body)), then the end of the archive.
func paxThen(name string, body []byte, kv ...string) func(io.Writer) error {
	return func(w io.Writer) error {
		var b bytes.Buffer
		recs := paxRecords(kv...)
		b.Write(rawHeader("PaxHeaders/"+name, tar.TypeXHeader, int64(len(recs))))
		b.Write(pad(recs))
		b.Write(rawHeader(name, tar.TypeReg, int64(len(body))))
		b.Write(pad(body))
		b.Write(make([]byte, 1024))
		_, err := w.Write(b.Bytes())
		return err
	}
}

// headerOnly writes one header and no data or end marker: for entries that
// announce sizes nobody could send.
func headerOnly(h tar.Header) func(io.Writer) error {
	return func(w io.Writer) error {
		h.ModTime = mtime
		tw := tar.NewWriter(w)
		return tw.WriteHeader(&h) // written at once; never Close: the data cannot follow
	}
}

// zeros is an io.Reader of n zero bytes.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n)
	clear(p[:k])
	z.n -= k
	return int(k), nil
}

// zeroFiles writes count files of size zero bytes each: a layer that
// compresses ~1000:1.
func zeroFiles(count int, size int64) func(io.Writer) error {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for i := range count {
			h := tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("bomb/%05d", i), Mode: 0o644, Size: size, ModTime: mtime}
			if err := tw.WriteHeader(&h); err != nil {
				return err
			}
			if _, err := io.Copy(tw, &zeros{size}); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}

// bigDir writes n empty files in one directory.
func bigDir(n int) func(io.Writer) error {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "big/", Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
		for i := range n {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("big/f%06d", i), Mode: 0o644, ModTime: mtime}); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}

// sparse writes a PAX 1.0 sparse file (the format GNU tar --sparse
// writes) of realSize bytes whose only data is 4096 bytes of 'S' at dataAt.
func sparse(name string, realSize, dataAt int64) func(io.Writer) error {
	sparseMap := pad([]byte(fmt.Sprintf("1\n%d\n4096\n", dataAt)))
	body := append(sparseMap, bytes.Repeat([]byte{'S'}, 4096)...)
	return paxThen("GNUSparseFile.0/"+name, body,
		"GNU.sparse.major", "1", "GNU.sparse.minor", "0",
		"GNU.sparse.name", name, "GNU.sparse.realsize", strconv.FormatInt(realSize, 10))
}

var (
	deepPath  = strings.Repeat("d/", 10000) + "bottom"
	name255   = strings.Repeat("n", 255)
	name256   = strings.Repeat("n", 256)
	badUTF8   = "bad\xff\xfe"
	badUTF8F  = "\x80name\xc3("
	badTarget = "../\xfftarget\xc0"
)

// Cases is the corpus.
var Cases = []Case{
	{
		Name: "dotdot-escape", Expect: Reject, Err: `tar entry "../escape": path escapes the layer root`, ContainerdExpect: OK,
		Why:        "a name climbing above the root is an attack or a broken tar; docs/design.md §6 rejects it rather than guess",
		Containerd: "cleans the name relative to the root: writes root/escape (clamps, no error)",
		Write:      entries(file("ok", "ok"), file("../escape", "x")),
	},
	{
		Name: "dotdot-middle", Expect: Reject, Err: `tar entry "a/../../escape": path escapes the layer root`, ContainerdExpect: OK,
		Why:        "same as dotdot-escape, hidden behind a real component",
		Containerd: "clamps to root/escape",
		Write:      entries(dir("a/"), file("a/../../escape", "x")),
	},
	{
		Name: "absolute-path", Expect: OK, ContainerdExpect: OK,
		Why:        "a leading / means the layer root, as every tar applier reads it",
		Containerd: "same: root/etc/passwd",
		Write:      entries(file("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")),
		Want:       []Want{{Path: "etc", Kind: "dir"}, {Path: "etc/passwd", Kind: "file", Data: "root:x:0:0::/root:/bin/sh\n"}},
	},
	{
		Name: "absolute-dotdot", Expect: Reject, Err: `tar entry "/../etc/x": path escapes the layer root`, ContainerdExpect: OK,
		Why:        "'..' above the root, even after a leading /",
		Containerd: "filepath.Clean makes it /etc/x: root/etc/x",
		Write:      entries(file("/../etc/x", "x")),
	},
	{
		Name: "symlink-abs-write-through", Expect: OK, ContainerdExpect: OK,
		Why: "an absolute symlink as a parent resolves inside the layer (the image is the whole world the entry can reach); " +
			"the symlink keeps its target byte for byte",
		Containerd: "same: fs.RootPath resolves evil -> /etc inside the root, writes root/etc/passwd, keeps the link's target",
		Write:      entries(symlink("evil", "/etc"), file("evil/passwd", "pwned")),
		Want:       []Want{{Path: "evil", Kind: "symlink", Target: "/etc"}, {Path: "etc/passwd", Kind: "file", Data: "pwned"}},
	},
	{
		Name: "symlink-rel-write-through", Expect: OK, ContainerdExpect: OK,
		Why:        "a relative symlink climbing above the root is clamped at the root while resolving, like chroot",
		Containerd: "same (fs.RootPath clamps ..)",
		Write:      entries(symlink("up", "../../../../../../tmp"), file("up/x", "inside")),
		Want:       []Want{{Path: "up", Kind: "symlink", Target: "../../../../../../tmp"}, {Path: "tmp/x", Kind: "file", Data: "inside"}},
	},
	{
		Name: "symlink-loop", Expect: Reject, Err: `tar entry "a/x": parent directory: "a": too many levels of symbolic links`, ContainerdExpect: Reject,
		Why:        "a parent that never resolves",
		Containerd: "fs.RootPath fails with too many links",
		Write:      entries(symlink("a", "b"), symlink("b", "a"), file("a/x", "x")),
	},
	{
		Name: "symlink-replaced-by-dir", Expect: OK, ContainerdExpect: OK,
		Why:        "a directory entry over a symlink replaces the symlink, it does not write through it",
		Containerd: "same: Lstat sees a symlink, removes it, mkdir",
		Write:      entries(dir("real/"), symlink("w", "real"), dir("w/"), file("w/f", "f")),
		Want:       []Want{{Path: "w", Kind: "dir"}, {Path: "w/f", Kind: "file", Data: "f"}, {Path: "real", Kind: "dir", Entries: -1}},
		Absent:     []string{"real/f"},
	},
	{
		Name: "hardlink-missing", Expect: Reject, Err: `tar entry "h": hardlink to "nope": target not in the layer`, ContainerdExpect: Reject,
		Why:        "a hardlink can only share an inode the layer has",
		Containerd: "link(2) fails with ENOENT",
		Write:      entries(file("a", "a"), hardlink("h", "nope")),
	},
	{
		Name: "hardlink-escape", Expect: Reject, Err: `tar entry "h": hardlink to "../../etc/passwd": path escapes the layer root`, ContainerdExpect: Reject,
		Why:        "a hardlink target above the root",
		Containerd: "clamps the target to root/etc/passwd, then ENOENT unless the layer has it",
		Write:      entries(hardlink("h", "../../etc/passwd")),
	},
	{
		Name: "hardlink-through-symlink", Expect: Reject, Err: `tar entry "h": hardlink to "s/passwd": target not in the layer`, ContainerdExpect: Reject,
		Why:        "the target's parents resolve inside the layer (s -> /etc is the layer's /etc, which does not exist)",
		Containerd: "fs.RootPath resolves to root/etc/passwd: ENOENT",
		Write:      entries(symlink("s", "/etc"), hardlink("h", "s/passwd")),
	},
	{
		Name: "hardlink-to-dir", Expect: Reject, Err: `tar entry "h": hardlink to "d": target is a directory`, ContainerdExpect: Reject,
		Why:        "Linux has no directory hard links; EROFS directories have one parent",
		Containerd: "link(2) fails with EPERM",
		Write:      entries(dir("d/"), hardlink("h", "d")),
	},
	{
		Name: "deep-dir-chain", Expect: OK, ContainerdExpect: Reject,
		Why: "10,000 nested directories are legal: the kernel resolves them component by component, and nothing " +
			"in the converter, writer or reader recurses per level",
		Containerd: "DIFFERENT: MkdirAll of a 20 kB path fails with ENAMETOOLONG (PATH_MAX 4096), so containerd rejects the layer",
		Write:      entries(file(deepPath, "deep")),
		Want:       []Want{{Path: deepPath, Kind: "file", Data: "deep"}},
	},
	{
		Name: "name-255", Expect: OK, ContainerdExpect: OK,
		Why:        "255 bytes is NAME_MAX, still legal",
		Containerd: "same",
		Write:      entries(file("d/"+name255, "x")),
		Want:       []Want{{Path: "d/" + name255, Kind: "file", Data: "x"}},
	},
	{
		Name: "name-256", Expect: Reject, Err: "file name longer than 255 bytes", ContainerdExpect: Reject,
		Why:        "no Linux filesystem can hold it (NAME_MAX 255; EROFS_NAME_LEN 255)",
		Containerd: "open(2) fails with ENAMETOOLONG",
		Write:      entries(file("d/"+name256, "x")),
	},
	{
		Name: "symlink-target-4096", Expect: Reject, Err: `tar entry "l": invalid symlink target of 4096 bytes`, ContainerdExpect: Reject,
		Why:        "longer than PATH_MAX-1: symlink(2) refuses it",
		Containerd: "symlink(2) fails with ENAMETOOLONG",
		Write:      entries(symlink("l", strings.Repeat("t", 4096))),
	},
	{
		Name: "dir-100k-entries", Expect: OK,
		Why:        "big directories are normal (node_modules, datasets); entries are hashed, not searched",
		Containerd: "same",
		Write:      bigDir(100000),
		Want:       []Want{{Path: "big", Kind: "dir", Entries: 100000}, {Path: "big/f099999", Kind: "file"}},
	},
	{
		Name: "duplicate-conflicting-types", Expect: OK, ContainerdExpect: OK,
		Why:        "later entries win: a file replaces a directory and its subtree, a symlink replaces the file, a directory replaces a file",
		Containerd: "same: anything but dir-over-dir is RemoveAll'd first",
		Write: entries(dir("x/"), file("x/f", "f"), file("x", "file"), symlink("x", "y"),
			file("y", "file"), dir("y/"), file("y/z", "z")),
		Want:   []Want{{Path: "x", Kind: "symlink", Target: "y"}, {Path: "y", Kind: "dir", Entries: 1}, {Path: "y/z", Kind: "file", Data: "z"}},
		Absent: []string{"x/f"},
	},
	{
		Name: "file-as-parent", Expect: Reject, Err: `tar entry "z/child": parent directory: "z": not a directory`, ContainerdExpect: Reject,
		Why:        "a regular file cannot hold entries",
		Containerd: "open(2) of root/z/child fails with ENOTDIR",
		Write:      entries(file("z", "z"), file("z/child", "c")),
	},
	{
		Name: "root-as-file", Expect: Reject, Err: `tar entry ".": names the layer root but is not a directory`, ContainerdExpect: OK,
		Why:        "the root is a directory; a tar saying otherwise is broken",
		Containerd: "DIFFERENT: skips the entry (\"resolved to root\")",
		Write:      entries(file(".", "x")),
	},
	{
		Name: "whiteout-dotdot", Expect: Reject, Err: `invalid whiteout name ".wh.."`, ContainerdExpect: Reject,
		Why:        "a whiteout of '..' would hide the parent",
		Containerd: "same: invalid whiteout name",
		Write:      entries(dir("a/"), file("a/.wh..", "")),
	},
	{
		Name: "pax-huge-size", Expect: Reject, Err: `tar entry "huge": data of 4611686018427387904 bytes would end beyond block 2^32`,
		Why:        "EROFS block addresses are 32-bit: 16 TiB per image; checked before a byte is read",
		Containerd: "starts copying and fails at the end of the stream (short read)",
		Write:      headerOnly(tar.Header{Typeflag: tar.TypeReg, Name: "huge", Mode: 0o644, Size: 1 << 62, Format: tar.FormatPAX}),
	},
	{
		Name: "pax-size-overflow", Expect: Reject, Err: "first entry: archive/tar: invalid tar header", ContainerdExpect: Reject,
		Why:        "a PAX size that overflows int64 is a corrupt header",
		Containerd: "same error from archive/tar",
		Write:      paxThen("f", nil, "size", "99999999999999999999999"),
	},
	{
		Name: "pax-bad-mtime", Expect: Reject, Err: "first entry: archive/tar: invalid tar header", ContainerdExpect: Reject,
		Why:        "a PAX number that is not a number",
		Containerd: "same error from archive/tar",
		Write:      paxThen("f", nil, "mtime", "12x.5"),
	},
	{
		Name: "pax-negative-uid", Expect: Reject, Err: `tar entry "f": uid/gid -5/0 out of range`, ContainerdExpect: OK,
		Why:        "owners are 32-bit unsigned on Linux and in EROFS",
		Containerd: "DIFFERENT: accepts it (the owner wraps to 4294967291)",
		Write:      paxThen("f", nil, "uid", "-5"),
	},
	{
		Name: "device-number-range", Expect: Reject, Err: `tar entry "dev": device number 4096:0 out of range`, ContainerdExpect: OK,
		Why:        "Linux device numbers are 12-bit major, 20-bit minor",
		Containerd: "DIFFERENT: accepts it, mknod with the number unix.Mkdev makes of it",
		Write:      entries(entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev", Mode: 0o600, Devmajor: 4096, Format: tar.FormatPAX}}),
	},
	{
		Name: "xattr-value-64k", Expect: Reject, Err: `tar entry "f": xattr "user.big": value of 70000 bytes exceeds 65535`, ContainerdExpect: Reject,
		Why:        "an EROFS xattr value is at most 65535 bytes (Linux XATTR_SIZE_MAX is 65536)",
		Containerd: "setxattr fails with E2BIG",
		Write:      entries(withXattrs(file("f", "x"), "user.big", strings.Repeat("v", 70000))),
	},
	{
		Name: "xattr-name-256", Expect: Reject, Err: "name longer than 255 bytes after its prefix", ContainerdExpect: Reject,
		Why:        "XATTR_NAME_MAX is 255",
		Containerd: "setxattr fails with ERANGE",
		Write:      entries(withXattrs(file("f", "x"), "user."+strings.Repeat("k", 256), "v")),
	},
	{
		Name: "xattr-area-overflow", Expect: Reject, Err: "exceed the inline xattr area",
		Why:        "an inode's inline xattrs are at most 4*65535 bytes",
		Containerd: "depends on the host filesystem: ext4 fails a setxattr with ENOSPC once the inode's block is full",
		Write: entries(withXattrs(file("f", "x"), "user.a", strings.Repeat("a", 60000), "user.b", strings.Repeat("b", 60000),
			"user.c", strings.Repeat("c", 60000), "user.d", strings.Repeat("d", 60000), "user.e", strings.Repeat("e", 60000))),
	},
	{
		Name: "xattr-unknown-namespace", Expect: OK, ContainerdExpect: OK,
		Why: "no Linux file system stores a com.apple.* (or other non user./trusted./security./system.) xattr, so " +
			"every Linux extraction drops it and keeps the file; refusing the layer would refuse macOS-built images " +
			"that overlayfs unpacks. The converter drops it and says so in ConvertStats.Skipped; the differ logs a warning",
		Containerd: "the same: setxattr fails with ENOTSUP, which it logs and ignores, keeping the file and its other xattrs",
		Want:       []Want{{Path: "f", Kind: "file", Data: "kept", Xattrs: map[string]string{"user.ok": "y"}}},
		Write:      entries(withXattrs(file("f", "kept"), "com.apple.provenance", "x", "user.ok", "y")),
	},
	{
		Name: "gzip-bomb", Expect: Reject, Err: `tar entry "bomb/00000": image would exceed the limit of 67108864 bytes`,
		MaxSize:    64 << 20,
		Why:        "1 GiB of zeros (1 MiB gzipped) with a 64 MiB limit: the file's size is checked against the limit before its data is read",
		Containerd: "no limit: writes the 1 GiB",
		Write:      zeroFiles(1, 1<<30),
	},
	{
		Name: "gzip-bomb-many-files", Expect: Reject, Err: "16777216 byte", // the converter's or the differ's stream limit, whichever trips first
		MaxSize:    16 << 20,
		Why:        "many files each under the limit: the running total is checked",
		Containerd: "no limit",
		Write:      zeroFiles(1024, 64<<10),
	},
	{
		Name: "sparse-1tib", Expect: Reject, Err: `tar entry "huge": image would exceed the limit of 1073741824 bytes`,
		MaxSize: 1 << 30,
		Why: "a PAX 1.0 sparse file claiming 1 TiB: the claimed size counts against the limit. Without a limit it would convert " +
			"(holes stay holes in the image) after reading 1 TiB of zeros from archive/tar's sparse expansion: set max_layer_size",
		Containerd: "no limit: archive/tar expands the holes and containerd writes 1 TiB of zeros (sparse on disk)",
		Write:      sparse("huge", 1<<40, 0),
	},
	{
		Name: "sparse-64mib", Expect: OK, ContainerdExpect: OK,
		Why:        "a sparse file within limits: holes read as zeros and take no blocks",
		Containerd: "same",
		Write:      sparse("holey", 64<<20, 32<<20),
		Want:       []Want{{Path: "holey", Kind: "file", Size: 64 << 20}},
	},
	{
		Name: "invalid-utf8-names", Expect: OK, ContainerdExpect: OK,
		Why:        "Linux names are bytes: names and link targets that are not UTF-8 are kept byte for byte",
		Containerd: "same",
		Write:      entries(dir(badUTF8+"/"), file(badUTF8+"/"+badUTF8F, "bytes"), symlink(badUTF8+"/link\xfe", badTarget)),
		Want: []Want{
			{Path: badUTF8, Kind: "dir", Entries: 2},
			{Path: badUTF8 + "/" + badUTF8F, Kind: "file", Data: "bytes"},
			{Path: badUTF8 + "/link\xfe", Kind: "symlink", Target: badTarget},
		},
	},
}

// Verify checks that the tree at root (a mounted image or an extraction)
// shows c.Want and none of c.Absent. Paths are walked one component at a
// time with openat and O_NOFOLLOW, so paths longer than PATH_MAX work and
// no symlink is ever followed.
func (c Case) Verify(root string) error {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rootFd)
	var errs []error
	for _, w := range c.Want {
		if err := verifyOne(rootFd, w); err != nil {
			errs = append(errs, fmt.Errorf("%.80q: %w", w.Path, err))
		}
	}
	for _, p := range c.Absent {
		if _, _, err := lookup(rootFd, p); err == nil {
			errs = append(errs, fmt.Errorf("%q is present, want it absent", p))
		}
	}
	return errors.Join(errs...)
}

// lookup opens p's parent dir (O_PATH) and returns its fd and p's base.
func lookup(rootFd int, p string) (int, *unix.Stat_t, error) {
	comps := strings.Split(p, "/")
	fd, err := unix.Dup(rootFd)
	if err != nil {
		return -1, nil, err
	}
	for _, c := range comps[:len(comps)-1] {
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, nil, err
		}
		fd = next
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, comps[len(comps)-1], &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, &st, nil
}

func verifyOne(rootFd int, w Want) error {
	dirFd, st, err := lookup(rootFd, w.Path)
	if err != nil {
		return err
	}
	defer unix.Close(dirFd)
	base := w.Path[strings.LastIndexByte(w.Path, '/')+1:]
	kinds := map[uint32]string{unix.S_IFREG: "file", unix.S_IFDIR: "dir", unix.S_IFLNK: "symlink", unix.S_IFCHR: "char"}
	if got := kinds[st.Mode&unix.S_IFMT]; got != w.Kind {
		return fmt.Errorf("is a %q (mode %o), want %q", got, st.Mode, w.Kind)
	}
	if w.Xattrs != nil {
		if err := verifyXattrs(fmt.Sprintf("/proc/self/fd/%d/%s", dirFd, base), w.Xattrs); err != nil {
			return err
		}
	}
	switch w.Kind {
	case "file":
		if w.Size > 0 {
			if st.Size != w.Size {
				return fmt.Errorf("size %d, want %d", st.Size, w.Size)
			}
			return nil
		}
		if st.Size != int64(len(w.Data)) {
			return fmt.Errorf("size %d, want %d", st.Size, len(w.Data))
		}
		fd, err := unix.Openat(dirFd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		b := make([]byte, len(w.Data)+1)
		n, err := unix.Pread(fd, b, 0)
		if err != nil {
			return err
		}
		if string(b[:n]) != w.Data {
			return fmt.Errorf("content %q, want %q", b[:n], w.Data)
		}
	case "symlink":
		b := make([]byte, 8192)
		n, err := unix.Readlinkat(dirFd, base, b)
		if err != nil {
			return err
		}
		if string(b[:n]) != w.Target {
			return fmt.Errorf("target %q, want %q", b[:n], w.Target)
		}
	case "dir":
		if w.Entries <= 0 {
			return nil
		}
		fd, err := unix.Openat(dirFd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		n, err := countEntries(fd)
		if err != nil {
			return err
		}
		if n != w.Entries {
			return fmt.Errorf("%d entries, want %d", n, w.Entries)
		}
	}
	return nil
}

// verifyXattrs checks that path (not followed) has exactly the xattrs want.
func verifyXattrs(path string, want map[string]string) error {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	if len(names) != len(want) {
		return fmt.Errorf("xattrs %q, want %d: %v", names, len(want), want)
	}
	for _, name := range names {
		v, ok := want[name]
		if !ok {
			return fmt.Errorf("unexpected xattr %q (have %q)", name, names)
		}
		k, err := unix.Lgetxattr(path, name, buf)
		if err != nil {
			return fmt.Errorf("xattr %q: %w", name, err)
		}
		if string(buf[:k]) != v {
			return fmt.Errorf("xattr %q = %q, want %q", name, buf[:k], v)
		}
	}
	return nil
}

// countEntries counts the names in the directory open at fd, . and .. aside.
func countEntries(fd int) (int, error) {
	buf := make([]byte, 64<<10)
	n := 0
	for {
		k, err := unix.Getdents(fd, buf)
		if err != nil {
			return 0, err
		}
		if k == 0 {
			return n, nil
		}
		for b := buf[:k]; len(b) > 0; {
			reclen := int(b[16]) | int(b[17])<<8
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				n++
			}
			b = b[reclen:]
		}
	}
}
