package snapshotter

import (
	"reflect"
	"testing"
)

func TestLayerOrderRoundTrip(t *testing.T) {
	d1, d2 := fakeDigest("a"), fakeDigest("b")
	for _, tc := range []struct {
		name  string
		order []string
		json  string
	}{
		{"empty", []string{}, `[]`},
		{"digests", []string{d1, d2}, `["` + d1 + `","` + d2 + `"]`},
		{"unknown digest", []string{d1, "snapshot:42"}, `["` + d1 + `","snapshot:42"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := EncodeLayerOrder(tc.order)
			if err != nil || v != tc.json {
				t.Fatalf("EncodeLayerOrder = %q, %v; want %q", v, err, tc.json)
			}
			got, err := DecodeLayerOrder(v)
			if err != nil || !reflect.DeepEqual(got, tc.order) {
				t.Fatalf("DecodeLayerOrder = %v, %v; want %v", got, err, tc.order)
			}
		})
	}
}

func TestLayerOrderErrors(t *testing.T) {
	for _, v := range []string{`not json`, `["sha256:short"]`, `["snapshot:"]`, `[""]`, `{"a":1}`} {
		if _, err := DecodeLayerOrder(v); err == nil {
			t.Errorf("DecodeLayerOrder(%q) succeeded", v)
		}
	}
	if _, err := EncodeLayerOrder([]string{"nonsense"}); err == nil {
		t.Error("EncodeLayerOrder accepted an entry that is neither a digest nor snapshot:<id>")
	}
}
