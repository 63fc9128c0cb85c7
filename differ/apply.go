package differ

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/decompress"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// Apply converts the layer blob desc into layer.erofs of the extract
// snapshot behind mounts. The blob is read once: content store →
// decompression → diff ID digester → tar→EROFS converter → a temp file in
// the snapshot dir, renamed to layer.erofs only after the diff ID checked
// out. Then the marker records diff ID, blob digest and media type for the
// snapshotter's Commit. On any failure (bad blob, digest mismatch, bad tar,
// cancelled ctx) nothing new is left in the dir and the marker is untouched.
//
// Mounts that are not an erofs-vm extract snapshot get an error wrapping
// errdefs.ErrNotImplemented.
func (d *Differ) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	dir, err := extractDir(mounts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer end()
	var config diff.ApplyConfig
	for _, o := range opts {
		if err := o(ctx, desc, &config); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("erofs-vm: apply layer %s: option: %w", desc.Digest, err)
		}
	}
	if err := checkLayerMediaType(ctx, desc.MediaType); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("erofs-vm: apply layer %s: %w", desc.Digest, err)
	}

	start := time.Now()
	want := d.expectedDiffID(ctx, dir, desc)
	applied, err := d.applyTo(ctx, dir, desc, want, config.Progress)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("erofs-vm: apply layer %s (%s): %w", desc.Digest, desc.MediaType, err)
	}
	log.G(ctx).WithFields(log.Fields{
		"d":       time.Since(start),
		"digest":  desc.Digest,
		"diff_id": applied.Digest,
		"size":    desc.Size,
		"media":   desc.MediaType,
		"dir":     dir,
	}).Debug("erofs-vm: layer applied")
	return applied, nil
}

// expectedDiffID returns the uncompressed digest the layer must have, when
// it is known before reading: the snapshotter may put the unpacker's
// containerd.io/snapshot/diff-id label into the marker at Prepare, and a
// blob unpacked before carries containerd.io/uncompressed in the content
// store. Without either, Apply returns what it computed and containerd's
// unpacker compares it with the image config (and removes the snapshot on
// a mismatch).
func (d *Differ) expectedDiffID(ctx context.Context, dir string, desc ocispec.Descriptor) digest.Digest {
	if m, err := layout.ReadMarker(dir); err == nil && m.DiffID != "" {
		return m.DiffID
	}
	if info, err := d.store.Info(ctx, desc.Digest); err == nil {
		if v, err := digest.Parse(info.Labels[labels.LabelUncompressed]); err == nil {
			return v
		}
	}
	return ""
}

// applyTo does the streaming conversion into dir; see Apply.
func (d *Differ) applyTo(ctx context.Context, dir string, desc ocispec.Descriptor, want digest.Digest, progress func(int64)) (ocispec.Descriptor, error) {
	ra, err := d.store.ReaderAt(ctx, desc)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("open blob: %w", err)
	}
	defer ra.Close()

	var blob io.Reader = content.NewReader(ra)
	if progress != nil {
		pr := &progressReader{r: blob, fn: progress}
		defer func() { progress(pr.n) }()
		blob = pr
	}
	// A small blob gets a buffer of about its size (4 KiB at least):
	// zeroing 1 MiB per layer is measurable when a deep image has a
	// hundred small ones.
	buffered := bufio.NewReaderSize(&ctxReader{ctx: ctx, r: blob}, int(min(max(desc.Size, 4096), blobBufferSize)))

	// igzip or unpigz when on PATH (several times faster than any Go
	// inflate) unless the blob is small; gzip/zstd/plain is detected from
	// the magic.
	dc, _, err := decompress.Open(ctx, buffered, desc.Size)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("decompress: %w", err)
	}
	defer dc.Close()

	digester := digest.Canonical.Digester()
	counted := &countingReader{r: dc, limit: d.cfg.MaxLayerSize}
	prefetch := newPrefetchReader(counted, digester.Hash())
	defer prefetch.Close()
	tarStream := &ctxReader{ctx: ctx, r: prefetch}

	// layer.erofs appears whole or not at all, and is always fsynced
	// before its rename whatever the diff service's sync_fs says: after a
	// power failure a committed snapshot with a lost layer would be
	// corrupt without anyone noticing (docs/design.md §3).
	final := filepath.Join(dir, layout.LayerFile)
	var got digest.Digest
	written := false
	err = layout.WriteFileAtomicFunc(final, 0o644, func(f *os.File) error {
		t0 := time.Now()
		stats, err := d.convert(ctx, f, tarStream, erofs.ConvertOptions{MaxImageSize: d.cfg.MaxLayerSize, StartWriteback: true})
		if err != nil {
			return fmt.Errorf("convert to EROFS: %w", err)
		}
		if stats != nil && stats.SkippedCount > 0 {
			// What a Linux extraction would drop too (xattrs outside the
			// namespaces Linux stores); containerd's applier logs the same.
			log.G(ctx).WithFields(log.Fields{"blob": desc.Digest, "count": stats.SkippedCount, "first": stats.Skipped[0]}).
				Warn("erofs-vm: layer content no Linux file system can hold was left out")
		}
		// The diff ID covers the whole uncompressed stream, including the
		// zero blocks and any padding after the tar's end-of-archive
		// marker that the converter has no reason to read.
		if _, err := io.Copy(io.Discard, tarStream); err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		prefetch.Close() // the digester is complete and ours alone now
		got = digester.Digest()
		if want != "" && got != want {
			return fmt.Errorf("diff ID mismatch: blob %s uncompresses to %s, expected %s", desc.Digest, got, want)
		}
		log.G(ctx).WithFields(log.Fields{"convert": time.Since(t0), "blob": desc.Digest}).Debug("erofs-vm: layer written")
		written = true
		return nil
	})
	if err != nil {
		if written {
			// The image was complete and failed to become durable (fsync,
			// rename, or the directory sync after the rename, which leaves
			// it in place): remove it, so the dir is as Prepare left it,
			// with no layer.erofs.
			if rerr := os.Remove(final); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
		return ocispec.Descriptor{}, err
	}
	m := layout.Marker{DiffID: got, BlobDigest: desc.Digest, MediaType: desc.MediaType}
	if err := layout.WriteMarker(dir, m); err != nil {
		return ocispec.Descriptor{}, errors.Join(fmt.Errorf("write marker: %w", err), os.Remove(final))
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: got, Size: counted.n}, nil
}
