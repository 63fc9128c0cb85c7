package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive/compression"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/decompress"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

func init() {
	register("convert", command{
		usage: "convert [-v] [-o OUT] [IN|-]",
		help:  "convert an OCI layer tar (plain, gzip or zstd) to an EROFS image",
		run:   runConvert,
	})
}

// stdin is the input of "convert -"; tests replace it.
var stdin io.Reader = os.Stdin

func runConvert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output image (default: IN with its .tar[.gz|.zst] suffix replaced by .erofs)")
	verbose := fs.Bool("v", false, "print statistics")
	noSync := fs.Bool("no-sync", false, "skip the fsync before the rename (benchmarks; the image may be lost in a crash)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	in := "-"
	switch fs.NArg() {
	case 0:
	case 1:
		in = fs.Arg(0)
	default:
		return errors.New("at most one input")
	}
	if *out == "" {
		if in == "-" {
			return errors.New("-o is required when reading stdin")
		}
		*out = defaultOutput(in)
	}

	var src io.Reader = stdin
	size := int64(-1)
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		src = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The differ's decompression: gzip and zstd detected by their magic,
	// igzip or unpigz for gzip when on PATH (containerd's choice), fed
	// through 1 MiB pipes.
	dec, kind, err := decompress.Open(ctx, bufio.NewReaderSize(src, 1<<20), size)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	defer dec.Close()

	start := time.Now()
	stats, err := convertAtomic(ctx, *out, dec, !*noSync)
	if err != nil {
		return err
	}
	if *verbose {
		d := time.Since(start)
		fmt.Fprintf(stdout, "%s: %d entries, %d inodes, %d data bytes, image %d bytes, %.3fs, %.0f MB/s (%s input)\n",
			*out, stats.Entries, stats.Inodes, stats.DataBytes, stats.ImageBytes, d.Seconds(),
			float64(stats.DataBytes)/1e6/d.Seconds(), compressionName(kind))
		for _, s := range stats.Skipped {
			fmt.Fprintf(stdout, "skipped %s\n", s)
		}
		if more := stats.SkippedCount - int64(len(stats.Skipped)); more > 0 {
			fmt.Fprintf(stdout, "skipped %d more\n", more)
		}
	}
	return nil
}

// convertAtomic converts into a temp file next to out and renames it into
// place (after fsync unless !sync), so out is either absent/old or a
// complete image, and nothing is left behind on error.
func convertAtomic(ctx context.Context, out string, src io.Reader, sync bool) (*erofs.ConvertStats, error) {
	var stats *erofs.ConvertStats
	err := layout.WriteFileAtomicWith(out, 0o644, layout.AtomicOptions{NoSync: !sync}, func(f *os.File) (err error) {
		stats, err = erofs.ConvertTar(ctx, f, src, erofs.ConvertOptions{})
		return err
	})
	return stats, err
}

func defaultOutput(in string) string {
	for _, ext := range []string{".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tar"} {
		if strings.HasSuffix(in, ext) {
			return strings.TrimSuffix(in, ext) + ".erofs"
		}
	}
	return in + ".erofs"
}

func compressionName(c compression.Compression) string {
	if ext := c.Extension(); ext != "" {
		return ext
	}
	return "tar"
}
