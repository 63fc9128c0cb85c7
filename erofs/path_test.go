package erofs

import (
	"errors"
	"strings"
	"testing"
)

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // components joined by "|"; "!" for errEscape
	}{
		{"", ""}, {".", ""}, {"./", ""}, {"/", ""}, {"//", ""},
		{"a", "a"}, {"./a/b/", "a|b"}, {"/a//b/./c", "a|b|c"},
		{"a/../b", "b"}, {"a/b/../../c", "c"}, {"a/..", ""},
		{"..", "!"}, {"../a", "!"}, {"a/../../b", "!"}, {"/../a", "!"},
		{"bad\xff/é", "bad\xff|é"}, {"...", "..."}, {".wh..wh..opq", ".wh..wh..opq"},
	} {
		parts, err := splitPath(tc.in, nil)
		got := strings.Join(parts, "|")
		if errors.Is(err, errEscape) {
			got = "!"
		} else if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("splitPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestXattrName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		index  uint8
		suffix string
		err    string
	}{
		{"user.mime_type", XattrIndexUser, "mime_type", ""},
		{"trusted.overlay.opaque", XattrIndexTrusted, "overlay.opaque", ""},
		{"security.capability", XattrIndexSecurity, "capability", ""},
		{"system.posix_acl_access", XattrIndexPosixACLAccess, "", ""},
		{"system.posix_acl_default", XattrIndexPosixACLDefault, "", ""},
		{"system.posix_acl_accessX", 0, "", "namespace"},
		{"system.nfs4_acl", 0, "", "namespace"},
		{"user.", 0, "", "empty"},
		{"os2.x", 0, "", "namespace"},
		{"user." + strings.Repeat("x", 255), XattrIndexUser, strings.Repeat("x", 255), ""},
		{"user." + strings.Repeat("x", 256), 0, "", "255"},
	} {
		index, suffix, err := xattrName(tc.name)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("xattrName(%.30q): err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || index != tc.index || suffix != tc.suffix {
			t.Errorf("xattrName(%.30q) = %d, %.20q, %v", tc.name, index, suffix, err)
		}
	}
}

func TestMkdev(t *testing.T) {
	// Linux new_encode_dev: minor low byte, major 12 bits, minor high bits.
	for _, tc := range []struct{ major, minor, want uint32 }{
		{0, 0, 0}, {1, 3, 0x103}, {8, 1, 0x801}, {259, 70000, 0x70 | 259<<8 | (70000&^0xff)<<12},
		{4095, 1048575, 0xff | 0xfff00 | 0xfff00000},
	} {
		if got := Mkdev(tc.major, tc.minor); got != tc.want {
			t.Errorf("Mkdev(%d, %d) = %#x, want %#x", tc.major, tc.minor, got, tc.want)
		}
	}
}

// TestDirBlocks: entries pack greedily into 4 KiB blocks, a name never
// spans two blocks, and the size is full blocks plus the last one's bytes.
func TestDirBlocks(t *testing.T) {
	var children []dirEntry
	for range 300 {
		children = append(children, dirEntry{name: strings.Repeat("n", 20)})
	}
	var blocks [][2]int
	size := dirBlocks(children, func(s, e int) { blocks = append(blocks, [2]int{s, e}) })
	per := BlockSize / (DirentSize + 20) // 128 entries of 32 bytes
	if len(blocks) != 3 || blocks[0] != [2]int{0, per} || blocks[1] != [2]int{per, 2 * per} || blocks[2] != [2]int{2 * per, 300} {
		t.Fatalf("blocks %v", blocks)
	}
	if want := uint64(2*BlockSize + (300-2*per)*32); size != want {
		t.Errorf("size %d, want %d", size, want)
	}
}
