package erofs

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/erofs-vm/containerd-erofs/internal/testmount"
)

// TestBuildFSMetaDeviceTableAfterTails: a stack too deep for the device
// table to fit in block 0 (more than 23 layers), over layers whose files
// end in inline tails (mkfs.erofs's default), so that fsmeta copies more
// than 8 MiB of tails. The device table must stay where devt_slotoff (16
// bits, in 128-byte slots) can reach it, and the image must read back.
func TestBuildFSMetaDeviceTableAfterTails(t *testing.T) {
	dir := t.TempDir()
	const nlayers, ntails = 24, 2100
	var layers []string
	for li := range nlayers {
		tr := NewTree()
		if li == 0 {
			for k := range ntails {
				b := bytes.Repeat([]byte{byte(k)}, BlockSize+10)
				n := &Node{Mode: syscall.S_IFREG | 0o644, Data: Data{Kind: DataBytes, Bytes: b}}
				if err := tr.Link(tr.Root(), fmt.Sprintf("f%05d", k), n); err != nil {
					t.Fatal(err)
				}
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("layer%02d.erofs", li))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		info, err := tr.WriteImage(f, ImageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(int64(info.Blocks) * BlockSize); err != nil {
			t.Fatal(err)
		}
		f.Close()
		layers = append(layers, p)
	}
	fsmeta := filepath.Join(dir, "fsmeta.erofs")
	meta, _ := buildTo(t, fsmeta, layers)
	if meta.CopiedBytes < ntails*10 {
		t.Fatalf("copied %d bytes, want the %d tails copied", meta.CopiedBytes, ntails)
	}
	im, err := Open(fsmeta, layers...)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if got := len(im.Devices()); got != nlayers {
		t.Fatalf("%d devices, want %d", got, nlayers)
	}
	check := func(who string, read func(name string) ([]byte, error)) {
		t.Helper()
		for _, k := range []int{0, 1, ntails - 1} {
			got, err := read(fmt.Sprintf("f%05d", k))
			if err != nil {
				t.Fatalf("%s: %v", who, err)
			}
			if want := bytes.Repeat([]byte{byte(k)}, BlockSize+10); !bytes.Equal(got, want) {
				t.Errorf("%s: f%05d: %d bytes, differs from what layer 0 holds", who, k, len(got))
			}
		}
	}
	check("reader", func(name string) ([]byte, error) { return fs.ReadFile(im, name) })

	// The judges: fsck.erofs with every layer as a device, and the kernel
	// mounting the flat concatenation (the VMDK's disk) from one loop device.
	ext := fsck(t, fsmeta, layers...)
	check("fsck.erofs", func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(ext, name)) })
	flat := filepath.Join(dir, "flat.img")
	var all []byte
	for _, p := range append([]string{fsmeta}, layers...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if err := os.WriteFile(flat, all, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := testmount.Erofs(t, flat)
	check("kernel", func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(mnt, name)) })
}
