package vmdk

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

const gib = int64(1) << 30

func TestWriteDescriptorGolden(t *testing.T) {
	files := []File{
		{Path: "/s/1/fsmeta.erofs", Size: 8192},
		{Path: "/s/2/layer with space.erofs", Size: 5 * gib},
		{Path: "/s/3/layer.erofs", Size: 2 * gib},
	}
	var b bytes.Buffer
	if err := WriteDescriptor(&b, files); err != nil {
		t.Fatal(err)
	}
	d, err := NewDescriptor(files)
	if err != nil {
		t.Fatal(err)
	}
	want := `# Disk DescriptorFile
version=1
CID=` + hex8(d.CID) + `
parentCID=ffffffff
createType="twoGbMaxExtentFlat"

# Extent description
RW 16 FLAT "/s/1/fsmeta.erofs" 0
RW 4194304 FLAT "/s/2/layer with space.erofs" 0
RW 4194304 FLAT "/s/2/layer with space.erofs" 4194304
RW 2097152 FLAT "/s/2/layer with space.erofs" 8388608
RW 4194304 FLAT "/s/3/layer.erofs" 0

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "14564"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
`
	// 16 + 5 GiB + 2 GiB in sectors = 14680080; /1008 = 14563.57 -> 14564.
	if got := b.String(); got != want {
		t.Errorf("descriptor:\n%s\nwant:\n%s", got, want)
	}
	if d.Size() != 8192+7*gib {
		t.Errorf("Size = %d", d.Size())
	}
	// Same input, same bytes (CID is derived, not random).
	var b2 bytes.Buffer
	if err := WriteDescriptor(&b2, files); err != nil || b2.String() != b.String() {
		t.Errorf("second write differs (err %v)", err)
	}
	files[0].Size += 512
	d2, _ := NewDescriptor(files)
	if d2.CID == d.CID {
		t.Errorf("CID unchanged after an extent changed")
	}
}

func hex8(v uint32) string {
	const digits = "0123456789abcdef"
	var s [8]byte
	for i := 7; i >= 0; i-- {
		s[i] = digits[v&0xf]
		v >>= 4
	}
	return string(s[:])
}

func TestExtentSplit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int64
		extents []int64 // sectors of each extent
	}{
		{"one sector", 512, []int64{1}},
		{"just under 2GiB", 2*gib - 512, []int64{MaxExtentSectors - 1}},
		{"exactly 2GiB", 2 * gib, []int64{MaxExtentSectors}},
		{"2GiB plus a sector", 2*gib + 512, []int64{MaxExtentSectors, 1}},
		{"4GiB", 4 * gib, []int64{MaxExtentSectors, MaxExtentSectors}},
		{"9GiB", 9 * gib, []int64{MaxExtentSectors, MaxExtentSectors, MaxExtentSectors, MaxExtentSectors, MaxExtentSectors / 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDescriptor([]File{{Path: "/f", Size: tc.size}})
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			var off int64
			for _, e := range d.Extents {
				got = append(got, e.Sectors)
				if e.Offset != off || e.Path != "/f" || e.Type != TypeFlat || e.Access != AccessRW {
					t.Errorf("extent %+v: want offset %d", e, off)
				}
				off += e.Sectors
			}
			if !reflect.DeepEqual(got, tc.extents) {
				t.Errorf("extents %v, want %v", got, tc.extents)
			}
			if d.Size() != tc.size {
				t.Errorf("size %d, want %d", d.Size(), tc.size)
			}
		})
	}
}

func TestNewDescriptorErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []File
		want  string // substring of the error
	}{
		{"no files", nil, "no files"},
		{"relative", []File{{"a/b", 512}}, `"a/b": path is not absolute`},
		{"unclean", []File{{"/a/../b", 512}}, "not clean"},
		{"quote", []File{{`/a"b`, 512}}, `contains '"'`},
		{"newline", []File{{"/a\nb", 512}}, "control character"},
		{"carriage return", []File{{"/a\rb", 512}}, "control character"},
		{"nul", []File{{"/a\x00b", 512}}, "control character"},
		{"invalid utf8", []File{{"/a\xffb", 512}}, "UTF-8"},
		{"too long", []File{{"/" + strings.Repeat("x", MaxPathLen), 512}}, "at most 511"},
		{"parent hint", []File{{"/parentFileNameHint", 512}}, "backing file"},
		{"empty file", []File{{"/a", 0}}, "must be positive"},
		{"negative", []File{{"/a", -512}}, "must be positive"},
		{"unaligned", []File{{"/ok", 512}, {"/a", 1000}}, `file 1 "/a": size 1000 is not a multiple of 512`},
		{"overflow", []File{{"/a", 1 << 62}, {"/b", 1 << 62}}, "overflows"},
		{"too many extents", []File{{"/a", 1 << 50}}, "extents would make"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewDescriptor(tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestPathLimits(t *testing.T) {
	longest := "/" + strings.Repeat("x", MaxPathLen-1)
	if _, err := NewDescriptor([]File{{longest, 512}}); err != nil {
		t.Errorf("a %d-byte path must be accepted: %v", len(longest), err)
	}
	if _, err := NewDescriptor([]File{{"/ünïcode dir/l.erofs", 512}}); err != nil {
		t.Errorf("UTF-8 path: %v", err)
	}
}

func TestDescriptorTooLarge(t *testing.T) {
	// ~1500 files with 500-byte paths make a descriptor over 1 MiB, which
	// qemu would truncate.
	p := "/" + strings.Repeat("p", 490)
	files := make([]File, 2500)
	for i := range files {
		files[i] = File{p, 512}
	}
	var b bytes.Buffer
	err := WriteDescriptor(&b, files)
	if err == nil || !strings.Contains(err.Error(), "qemu reads only") {
		t.Fatalf("err = %v", err)
	}
	if b.Len() != 0 {
		t.Errorf("wrote %d bytes on error", b.Len())
	}
}

func TestParseRoundTrip(t *testing.T) {
	d, err := NewDescriptor([]File{{"/a/fsmeta.erofs", 4096}, {"/b/layer.erofs", 3 * gib}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseDescriptor(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Errorf("parsed %+v\nwant %+v", got, d)
	}
	if v, _ := got.Lookup("ddb.adapterType"); v != "ide" {
		t.Errorf("adapterType %q", v)
	}
}

// TestParseQemuImg parses what qemu-img 7.2 writes for
// `qemu-img create -f vmdk -o subformat=twoGbMaxExtentFlat x.vmdk 5G`.
func TestParseQemuImg(t *testing.T) {
	const in = `# Disk DescriptorFile
version=1
CID=54cc7a66
parentCID=ffffffff
createType="twoGbMaxExtentFlat"

# Extent description
RW 4194304 FLAT "ref-f001.vmdk" 0
RW 4194304 FLAT "ref-f002.vmdk" 0
RW 2097152 FLAT "ref-f003.vmdk" 0

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "10402"
ddb.geometry.heads = "16"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
ddb.toolsVersion = "2147483647"
`
	d, err := ParseDescriptor(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if d.CID != 0x54cc7a66 || d.ParentCID != NoParentCID || d.CreateType != CreateTypeTwoGbMaxExtentFlat ||
		len(d.Extents) != 3 || d.Extents[1].Path != "ref-f002.vmdk" || d.Size() != 5*gib || len(d.DDB) != 6 {
		t.Errorf("parsed %+v", d)
	}
}

func TestParseErrors(t *testing.T) {
	const head = "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "no version"},
		{"no createType", "version=1\nCID=1\nparentCID=ffffffff\n", "no createType"},
		{"duplicate CID", head + "CID=2\n", "line 5: duplicate CID"},
		{"bad CID", "version=1\nCID=xyz\n", "line 2: CID"},
		{"binary", "KDMV\x01\x00\x00\x00", "binary sparse"},
		{"nul", head + "\x00", "NUL"},
		{"garbage", head + "hello\n", "line 5"},
		{"unquoted path", head + "RW 1 FLAT /a 0\n", "not quoted"},
		{"unclosed path", head + "RW 1 FLAT \"/a 0\n", "no closing quote"},
		{"flat no offset", head + "RW 1 FLAT \"/a\"\n", "no offset"},
		{"zero sectors", head + "RW 0 FLAT \"/a\" 0\n", "must be positive"},
		{"negative offset", head + "RW 1 FLAT \"/a\" -1\n", "negative offset"},
		{"bad access", head + "RX 1 FLAT \"/a\" 0\n", "access"},
		{"bad offset", head + "RW 1 FLAT \"/a\" 0 9\n", "offset"},
		{"huge sectors", head + "RW 99999999999999999999 FLAT \"/a\" 0\n", "not an integer"},
		{"overflow", head + "RW 9000000000000000000 FLAT \"/a\" 0\n", "overflows"},
		{"ddb unquoted", head + "ddb.adapterType = ide\n", "not quoted"},
		{"not ddb in ddb", head + "#DDB\nRW 1 FLAT \"/a\" 0\n", "disk database"},
		{"parent", head + "parentFileNameHint=\"/p.vmdk\"\n", "parent disks"},
		{"too big", head + strings.Repeat("#", MaxDescriptorSize), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDescriptor(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestParseLargeInputIsLinear parses a maximal descriptor of tiny lines; a
// quadratic parser (found by the fuzzer) takes minutes here.
func TestParseLargeInputIsLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"x\"\n")
	for i := 0; b.Len() < MaxDescriptorSize-32; i++ {
		fmt.Fprintf(&b, "k%d=\n", i)
	}
	d, err := ParseDescriptor(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Header) < 100000 {
		t.Fatalf("%d header keys", len(d.Header))
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/merged.vmdk"
	if err := WriteFile(path, []File{{"/a", 512}}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []File{{"/a", 512}, {"/b", 1024}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := ParseDescriptor(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Extents) != 2 || d.Size() != 1536 {
		t.Errorf("replaced descriptor: %+v", d)
	}
	// A bad file list leaves the old descriptor and no temp file behind.
	if err := WriteFile(path, []File{{"/c", 100}}); err == nil {
		t.Fatal("unaligned file accepted")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "merged.vmdk" {
		t.Errorf("dir holds %v, want only merged.vmdk", entries)
	}
	if _, err := FilesFromPaths(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FilesFromPaths(dir) = %v", err)
	}
	if _, err := FilesFromPaths(dir + "/missing"); err == nil {
		t.Error("FilesFromPaths of a missing file succeeded")
	}
}
