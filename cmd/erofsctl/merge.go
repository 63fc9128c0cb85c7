package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/vmdk"
)

func init() {
	register("merge", command{
		usage: "merge -o FSMETA [--vmdk VMDK] LAYER...",
		help:  "merge layer images (oldest first) into fsmeta (+ flat VMDK)",
		run:   runMerge,
	})
}

func runMerge(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("merge", flag.ContinueOnError)
	fl.SetOutput(stderr)
	out := fl.String("o", "", "fsmeta image to write (required)")
	vmdkOut := fl.String("vmdk", "", "also write a flat VMDK over [fsmeta, layers...] here")
	if err := fl.Parse(args); err != nil {
		return err
	}
	layers := fl.Args()
	if *out == "" || len(layers) == 0 {
		fl.Usage()
		return errors.New("need -o FSMETA and at least one LAYER")
	}
	meta, err := mergeToFile(context.Background(), *out, layers)
	if err != nil {
		return err
	}
	if *vmdkOut != "" {
		if err := writeMergedVMDK(*vmdkOut, *out, layers); err != nil {
			os.Remove(*out) // nothing half-made is left behind
			return err
		}
	}
	fmt.Fprintf(stdout, "%s: %d layers, %d entries, %d inodes, %d blocks, %d bytes copied from layers\n",
		*out, len(meta.Devices), meta.Entries, meta.Inodes, meta.Blocks, meta.CopiedBytes)
	return nil
}

// mergeToFile builds the fsmeta into a temp file beside out, syncs it and
// renames it into place, so out is either absent, old, or complete.
func mergeToFile(ctx context.Context, out string, layers []string) (*erofs.FSMeta, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".fsmeta-*.tmp")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	meta, err := erofs.BuildFSMeta(ctx, tmp, layers)
	if err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return nil, err
	}
	ok = true
	return meta, nil
}

// writeMergedVMDK writes the descriptor of [fsmeta, layers...] with
// absolute paths, so it works from any working directory.
func writeMergedVMDK(out, fsmeta string, layers []string) error {
	paths := make([]string, 0, len(layers)+1)
	for _, p := range append([]string{fsmeta}, layers...) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		paths = append(paths, abs)
	}
	files, err := vmdk.FilesFromPaths(paths...)
	if err != nil {
		return err
	}
	return vmdk.WriteFile(out, files)
}
