package erofs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestFuzzSeeds writes the FuzzReader seed corpus from mkfs.erofs images
// of a small tree, in the variants the reader supports. Run with
// EROFS_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz/FuzzReader/seed-*.
func TestFuzzSeeds(t *testing.T) {
	if os.Getenv("EROFS_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set EROFS_WRITE_FUZZ_SEEDS=1 to regenerate the FuzzReader seeds")
	}
	needRoot(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{}
	// A flat multi-device image: metadata, then the blob at mapped_blkaddr.
	blob := filepath.Join(t.TempDir(), "blob")
	meta, err := os.ReadFile(mkfsErofs(t, smallTree(t), "-T", "1000", "--blobdev="+blob, "--chunksize=4096"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	meta, data = padBlock(meta), padBlock(data)
	setDeviceSlot(t, meta, 0, uint32(len(data)/BlockSize), uint32(len(meta)/BlockSize))
	seeds["flat"] = append(meta, data...)
	seeds["long-prefix"] = rdLongPrefixImage(t)
	for name, args := range map[string][]string{
		"plain":    nil,
		"noinline": {"-E", "noinline_data"},
		"chunked":  {"--chunksize=4096"},
		"extended": {"-E", "force-inode-extended"},
	} {
		seeds[name] = smallImage(t, args...)
	}
	for name, img := range seeds {
		im, err := NewImage(bytes.NewReader(img))
		if err == nil {
			err = walkAll(im)
		}
		if err != nil {
			t.Fatalf("seed %s does not read cleanly: %v", name, err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", img)
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
