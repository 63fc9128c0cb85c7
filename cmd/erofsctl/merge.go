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
	"github.com/erofs-vm/containerd-erofs/internal/layout"
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
	meta, err := merge(context.Background(), *out, *vmdkOut, layers)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d layers, %d entries, %d inodes, %d blocks, %d bytes copied from layers\n",
		*out, len(meta.Devices), meta.Entries, meta.Inodes, meta.Blocks, meta.CopiedBytes)
	return nil
}

// merge builds the fsmeta into a temp file beside out and, once it is
// complete, writes the VMDK (itself atomic) naming out; then the fsmeta is
// synced and renamed into place. A failure before the VMDK is written
// leaves out and vmdkOut as they were; one after it removes vmdkOut, which
// would describe an fsmeta that is not there.
//
// Paths become absolute first: the VMDK names its extents by path, and
// qemu resolves a relative one against the descriptor's own directory.
func merge(ctx context.Context, out, vmdkOut string, layers []string) (*erofs.FSMeta, error) {
	out, err := filepath.Abs(out)
	if err != nil {
		return nil, err
	}
	abs := make([]string, len(layers))
	for i, p := range layers {
		if abs[i], err = filepath.Abs(p); err != nil {
			return nil, err
		}
	}
	layers = abs
	var meta *erofs.FSMeta
	vmdkWritten := false
	err = layout.WriteFileAtomicFunc(out, 0o644, func(f *os.File) (err error) {
		if meta, err = erofs.BuildFSMeta(ctx, f, layers); err != nil {
			return err
		}
		if vmdkOut == "" {
			return nil
		}
		if err := writeMergedVMDK(vmdkOut, out, meta); err != nil {
			return err
		}
		vmdkWritten = true
		return nil
	})
	if err != nil {
		if vmdkWritten {
			os.Remove(vmdkOut)
		}
		return nil, err
	}
	return meta, nil
}

// writeMergedVMDK writes the descriptor of the merged disk meta describes,
// with the fsmeta at its final path out (not in place yet: the VMDK is
// written first).
func writeMergedVMDK(vmdkOut, out string, meta *erofs.FSMeta) error {
	parts, err := meta.FlatDisk(out)
	if err != nil {
		return err
	}
	files := make([]vmdk.File, len(parts))
	for i, p := range parts {
		files[i] = vmdk.File{Path: p.Path, Size: p.Size}
	}
	return vmdk.WriteFile(vmdkOut, files)
}
