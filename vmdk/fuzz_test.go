package vmdk

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseDescriptor feeds hostile descriptors to the parser. It must never
// panic or use unbounded memory, and whatever it accepts must render back
// (MarshalText) to text that parses to the same Descriptor and renders to
// the same bytes: the parser and the writer agree on the format.
func FuzzParseDescriptor(f *testing.F) {
	d, err := NewDescriptor([]File{{"/a/fsmeta.erofs", 4096}, {"/b/layer one.erofs", 5 * gib}})
	if err != nil {
		f.Fatal(err)
	}
	golden, _ := d.MarshalText()
	f.Add(golden)
	f.Add([]byte("version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"x\" 0\nRDONLY 2 ZERO\n#DDB\nddb.a = \"b\"\n"))
	f.Add([]byte("version=1\r\nCID=fffffffe\r\nparentCID=ffffffff\r\ncreateType=\"x\"\r\nencoding=\"UTF-8\"\r\n"))
	f.Add([]byte("KDMV\x01\x00\x00\x00"))
	f.Add([]byte("RW 9223372036854775807 FLAT \"/a\" 0\nRW 1 FLAT \"/a\" 0\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := ParseDescriptor(bytes.NewReader(in))
		if err != nil {
			return
		}
		out, err := d.MarshalText()
		if err != nil {
			if strings.Contains(err.Error(), "qemu reads only") {
				return // the canonical form can be longer than a compact input
			}
			t.Fatalf("parsed descriptor does not render: %v\ninput %q", err, in)
		}
		d2, err := ParseDescriptor(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("rendered descriptor does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("round trip changed the descriptor:\n%+v\n%+v", d, d2)
		}
		out2, _ := d2.MarshalText()
		if !bytes.Equal(out, out2) {
			t.Fatalf("rendering is not stable:\n%s\n%s", out, out2)
		}
		if d.Sectors() < 0 {
			t.Fatalf("negative size")
		}
	})
}
