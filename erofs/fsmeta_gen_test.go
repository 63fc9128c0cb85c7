package erofs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
)

// genLayers writes n synthetic layer images with about entries names in
// total into dir, for the scaling benchmark (hack/bench/fsmeta.sh) and the
// memory test. Every layer shares the same directories (so every directory
// merges across all layers), adds its own files, rewrites a few files of
// the layer below and whites out one; 1% of files have a data block, 4%
// are small files kept inline (copied into fsmeta), the rest are empty.
func genLayers(dir string, n, entries int) ([]string, error) {
	per := max(entries/n, 1)
	const dirSize = 1000
	ndirs := max(per/dirSize, 1)
	var paths []string
	block := make([]byte, BlockSize)
	for li := range n {
		p := filepath.Join(dir, fmt.Sprintf("layer%04d.erofs", li))
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		t := NewTree()
		root := t.Root()
		next := uint32(1)
		var data []byte
		dirs := make([]*Node, ndirs)
		for d := range dirs {
			dirs[d] = &Node{Mode: syscall.S_IFDIR | 0o755, Mtime: int64(li)}
			if err := t.Link(root, fmt.Sprintf("d%04d", d), dirs[d]); err != nil {
				return nil, err
			}
		}
		for k := range per {
			d := dirs[k%ndirs]
			node := &Node{Mode: syscall.S_IFREG | 0o644, Mtime: 1700000000}
			switch k % 100 {
			case 0:
				copy(block, fmt.Sprintf("layer %d file %d", li, k))
				data = append(data, block...)
				node.Data = Data{Kind: DataBlocks, Size: BlockSize, BlkAddr: next}
				next++
			case 1, 2, 3, 4:
				node.Data = Data{Kind: DataBytes, Bytes: []byte(fmt.Sprintf("inline %d/%d", li, k))}
			}
			name := fmt.Sprintf("f%04d_%07d", li, k)
			if k < 3 && li > 0 { // rewrite a file of the layer below
				name = fmt.Sprintf("f%04d_%07d", li-1, k+10)
			}
			if err := t.Link(d, name, node); err != nil {
				return nil, err
			}
		}
		if li > 0 { // delete one file of the layer below
			wo := &Node{Mode: syscall.S_IFCHR}
			if err := t.Link(dirs[0], fmt.Sprintf("f%04d_%07d", li-1, 20*ndirs), wo); err != nil {
				return nil, err
			}
		}
		if _, err := f.WriteAt(data, BlockSize); err != nil {
			return nil, err
		}
		info, err := t.WriteImage(f, ImageOptions{MetaBlkAddr: next})
		if err != nil {
			return nil, err
		}
		if err := f.Truncate(int64(info.Blocks) * BlockSize); err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// TestFSMetaGenerateLayers writes synthetic layers for hack/bench/fsmeta.sh
// when FSMETA_GEN_DIR is set (FSMETA_GEN_LAYERS, FSMETA_GEN_ENTRIES).
func TestFSMetaGenerateLayers(t *testing.T) {
	dir := os.Getenv("FSMETA_GEN_DIR")
	if dir == "" {
		t.Skip("FSMETA_GEN_DIR not set: only hack/bench/fsmeta.sh generates layers")
	}
	n, _ := strconv.Atoi(os.Getenv("FSMETA_GEN_LAYERS"))
	e, _ := strconv.Atoi(os.Getenv("FSMETA_GEN_ENTRIES"))
	if n <= 0 || e <= 0 {
		t.Fatal("FSMETA_GEN_LAYERS and FSMETA_GEN_ENTRIES must be positive")
	}
	if _, err := genLayers(dir, n, e); err != nil {
		t.Fatal(err)
	}
}

// TestFSMetaMemoryPerEntry builds an fsmeta over 16 layers of 200k entries
// in total and bounds the heap it needs: memory must follow the merged
// entries (a few hundred bytes each), not the layers' sizes.
func TestFSMetaMemoryPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 200k entries")
	}
	dir := t.TempDir()
	const entries = 200000
	layers, err := genLayers(dir, 16, entries)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	f, err := os.Create(filepath.Join(dir, "fsmeta.erofs"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta, err := BuildFSMeta(context.Background(), f, layers)
	if err != nil {
		t.Fatal(err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	perEntry := alloc / uint64(meta.Entries)
	t.Logf("%d entries, %d inodes, %d blocks: %d MiB allocated in total, %d bytes/entry, heap in use %d MiB",
		meta.Entries, meta.Inodes, meta.Blocks, alloc>>20, perEntry, after.HeapInuse>>20)
	if meta.Entries < entries*9/10 {
		t.Fatalf("only %d merged entries", meta.Entries)
	}
	// Total allocation (not just the peak) per entry: generous, but fails
	// if anything per layer × entry or per data byte creeps in.
	if perEntry > 4096 {
		t.Errorf("%d bytes allocated per merged entry", perEntry)
	}
}
