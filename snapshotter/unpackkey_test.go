package snapshotter

import "testing"

// TestIsUnpackKey: containerd's unpack keys (snapshots.UnpackKeyFormat),
// bare or behind the metadata layer's "<ns>/<n>/" prefix, are extract
// snapshots even without the snapshot.ref label; other keys are not.
func TestIsUnpackKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"extract-123-abcd sha256:0123", true},
		{"default/7/extract-123-abcd sha256:0123", true},
		{"k8s.io/12/extract-1 sha256:ff", true},
		{"extract-no-chain", false},
		{"default/7/extractfoo sha256:0123", false},
		{"default/7/my-container", false},
		{"default/7/rw extract-1 x", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := isUnpackKey(tc.key); got != tc.want {
			t.Errorf("isUnpackKey(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}
