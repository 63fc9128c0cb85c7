package differ

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/containerd/v2/pkg/epoch"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/commitgate"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// Compare writes the change held by upper (an active writable snapshot, or
// a View of a committed one) over the committed stack lower as an OCI
// layer tar, compressed per
// diff.WithMediaType (gzip by default), into the content store with the
// containerd.io/uncompressed label, and returns its descriptor. Honours
// WithReference, WithLabels, WithCompressor and WithSourceDateEpoch (or the
// epoch in ctx). Mounts that are not erofs-vm's get ErrNotImplemented.
func (d *Differ) Compare(ctx context.Context, lower, upper []mount.Mount, opts ...diff.Opt) (ocispec.Descriptor, error) {
	ls, us, err := parseCompare(lower, upper)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	ctx, end, err := d.begin(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer end()
	var config diff.Config
	for _, o := range opts {
		if err := o(&config); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if tm := epoch.FromContext(ctx); tm != nil && config.SourceDateEpoch == nil {
		config.SourceDateEpoch = tm
	}
	compress, err := d.compressorFor(&config)
	if err != nil {
		return ocispec.Descriptor{}, err
	}

	start := time.Now()
	var lfs lowerFS
	if ls.image != "" {
		im, err := erofs.Open(ls.image, ls.devices...)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("erofs-vm: compare: open lower %s: %w", ls.image, err)
		}
		defer im.Close()
		if us.emptyLower {
			if ents, err := im.ReadDir("."); err != nil || len(ents) > 0 {
				return ocispec.Descriptor{}, fmt.Errorf("erofs-vm differ: upper has no parent but the lower %s is not empty: %w", ls.image, errdefs.ErrNotImplemented)
			}
		}
		lfs = im
	}
	if us.ext4Image != "" && !commitgate.Quiesced(config.Labels) {
		// The same gate as the snapshotter's Commit: a running VM still
		// writes the ext4 (docs/design.md §11).
		unlock, err := commitgate.Lock(us.ext4Image)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("erofs-vm: compare: %w", err)
		}
		defer unlock()
	}
	var desc ocispec.Descriptor
	err = withUpperDir(ctx, us, func(dir string) error {
		desc, err = d.writeDiffBlob(ctx, &config, compress, func(w io.Writer) error {
			return writeUpperDiff(ctx, w, dir, lfs, config.SourceDateEpoch)
		})
		return err
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("erofs-vm: compare: %w", err)
	}
	log.G(ctx).WithFields(log.Fields{"d": time.Since(start), "digest": desc.Digest, "size": desc.Size}).Debug("erofs-vm: diff created")
	return desc, nil
}

// compressorFor picks the stream compressor for the asked media type.
func (d *Differ) compressorFor(config *diff.Config) (func(io.Writer) (io.WriteCloser, error), error) {
	if config.Compressor != nil {
		if config.MediaType == "" {
			return nil, errors.New("erofs-vm: compare: a custom compressor needs an explicit media type")
		}
		mt := config.MediaType
		return func(w io.Writer) (io.WriteCloser, error) { return config.Compressor(w, mt) }, nil
	}
	alg, err := compressionFor(config.MediaType)
	if err != nil {
		return nil, err
	}
	c := compression.Uncompressed
	switch alg {
	case "gzip":
		c = compression.Gzip
	case "zstd":
		c = compression.Zstd
	}
	if config.MediaType == "" {
		config.MediaType = ocispec.MediaTypeImageLayerGzip
	}
	return func(w io.Writer) (io.WriteCloser, error) { return compression.CompressStream(w, c) }, nil
}

// writeDiffBlob runs produce into a content writer through compress,
// commits the blob with the uncompressed digest label and returns its
// descriptor. A failed write aborts the upload it started.
func (d *Differ) writeDiffBlob(ctx context.Context, config *diff.Config, compress func(io.Writer) (io.WriteCloser, error), produce func(io.Writer) error) (_ ocispec.Descriptor, retErr error) {
	ref := config.Reference
	ownRef := ref == ""
	if ownRef {
		ref = uniqueRef()
	}
	cw, err := content.OpenWriter(ctx, d.store, content.WithRef(ref),
		content.WithDescriptor(ocispec.Descriptor{MediaType: config.MediaType}))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("open content writer: %w", err)
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		cw.Close()
		if ownRef {
			if err := d.store.Abort(context.WithoutCancel(ctx), ref); err != nil && !errdefs.IsNotFound(err) {
				log.G(ctx).WithError(err).WithField("ref", ref).Warn("erofs-vm: failed to abort diff upload")
			}
		}
	}()
	if !ownRef {
		if err := cw.Truncate(0); err != nil {
			return ocispec.Descriptor{}, err
		}
	}

	bw := bufio.NewWriterSize(cw, copyBufferSize)
	zw, err := compress(bw)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("compressor: %w", err)
	}
	uncompressed := digest.Canonical.Digester()
	if err := produce(io.MultiWriter(zw, uncompressed.Hash())); err != nil {
		zw.Close()
		return ocispec.Descriptor{}, err
	}
	if err := zw.Close(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("compress: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return ocispec.Descriptor{}, err
	}

	lbls := map[string]string{}
	for k, v := range config.Labels {
		if k != commitgate.QuiescedLabel { // an instruction for this call, not content metadata
			lbls[k] = v
		}
	}
	lbls[labels.LabelUncompressed] = uncompressed.Digest().String()
	dgst := cw.Digest()
	if err := cw.Commit(ctx, 0, dgst, content.WithLabels(lbls)); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return ocispec.Descriptor{}, fmt.Errorf("commit diff blob: %w", err)
		}
	}
	committed = true
	cw.Close()

	info, err := d.store.Info(ctx, dgst)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("stat diff blob: %w", err)
	}
	// The blob may have existed already, without our label.
	if info.Labels[labels.LabelUncompressed] != lbls[labels.LabelUncompressed] {
		info.Labels = map[string]string{labels.LabelUncompressed: lbls[labels.LabelUncompressed]}
		if _, err := d.store.Update(ctx, info, "labels."+labels.LabelUncompressed); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("label diff blob: %w", err)
		}
	}
	return ocispec.Descriptor{MediaType: config.MediaType, Digest: info.Digest, Size: info.Size}, nil
}

// withUpperDir gives fn the upper dir in overlayfs form. In block mode the
// ext4 rwlayer is loop-mounted read-only for the call (never written: a
// journal needing recovery fails the mount, the snapshot is still in use
// or was not shut down cleanly) and always unmounted and detached.
func withUpperDir(ctx context.Context, us upperSource, fn func(dir string) error) error {
	switch {
	case us.dir != "":
		return withUpper(us.dir, fn)
	case us.layer != "":
		// A committed layer is already in upper form; the kernel reads it.
		m := []mount.Mount{{Type: "erofs", Source: us.layer, Options: []string{"loop", "ro"}}}
		if err := mount.WithReadonlyTempMount(ctx, m, fn); err != nil {
			return fmt.Errorf("upper %s: %w", us.layer, err)
		}
		return nil
	}
	m := []mount.Mount{{Type: "ext4", Source: us.ext4Image, Options: []string{"loop", "ro"}}}
	err := mount.WithReadonlyTempMount(ctx, m, func(root string) error {
		return withUpper(filepath.Join(root, layout.UpperDir), fn)
	})
	if err != nil {
		return fmt.Errorf("upper %s: %w", us.ext4Image, err)
	}
	return nil
}

// withUpper runs fn on dir; a writable layer never used has no upper/
// yet, which is the empty change.
func withUpper(dir string, fn func(string) error) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		empty, err := os.MkdirTemp("", "erofs-vm-empty-upper-")
		if err != nil {
			return err
		}
		defer os.Remove(empty)
		return fn(empty)
	}
	return fn(dir)
}

func uniqueRef() string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("erofs-vm-diff-%d-%s", time.Now().UnixNano(), hex.EncodeToString(b[:]))
}
