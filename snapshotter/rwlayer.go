package snapshotter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// The ext4 writable layer (block mode): a sparse file holding an ext4
// filesystem with upper/ and work/ already at its root, so the guest's
// overlay finds them without a first-boot mkdir.
//
// How, and why this way (BenchmarkRWLayer, hack/bench/prepare.sh):
// mkfs.ext4 runs once per size, into a template cached under root; each
// Prepare copies the template's allocated extents into a new sparse file
// and gives the copy a fresh UUID (setExt4UUID) — the same result as a
// fresh mkfs, about ten times faster (an exec of mkfs.ext4 costs 20-30 ms
// from the daemon, the copy 2-3 ms for 0.6 MiB). mkfs.ext4 itself gets -d
// (format and populate in one run) and, since a fresh sparse file reads as
// zeros, lazy_itable_init, lazy_journal_init and assume_storage_prezeroed:
// no zeroing (1 GiB: 0.6 MiB allocated instead of 33 MiB, and the guest
// starts no lazy-init thread). metadata_csum_seed lets the UUID change
// without rewriting every metadata checksum.

const (
	mkfsBaseOpts     = "nodiscard,lazy_itable_init=1,lazy_journal_init=1"
	mkfsPrezeroedOpt = ",assume_storage_prezeroed=1"
	// rwTemplateDirName holds the empty upper/ and work/ mkfs copies in.
	rwTemplateDirName = ".rwlayer-template"
	// rwCacheDirName holds formatted templates, one per size. It is a
	// cache: emptied at startup, at most rwCacheMax sizes kept.
	rwCacheDirName = ".rwlayer-cache"
	rwCacheMax     = 4
)

// noPrezeroed remembers that mkfs.ext4 (e2fsprogs < 1.47) rejected
// assume_storage_prezeroed.
var noPrezeroed atomic.Bool

// rwTemplate returns a directory holding empty upper/ and work/ (0755,
// root-owned): what mkfs.ext4 -d copies into every writable layer.
func (s *Snapshotter) rwTemplate() (string, error) {
	tpl := filepath.Join(s.root, rwTemplateDirName)
	for _, d := range []string{tpl, filepath.Join(tpl, layout.UpperDir), filepath.Join(tpl, layout.WorkDir)} {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return "", err
		}
		// Not the daemon's umask: this becomes the container root's mode.
		if err := os.Chmod(d, 0o755); err != nil {
			return "", err
		}
	}
	return tpl, nil
}

// createRWLayer writes dir/rwlayer.img, an ext4 filesystem of size bytes,
// by temp file, fsync and rename.
func (s *Snapshotter) createRWLayer(ctx context.Context, dir string, size int64) error {
	tpl, err := s.rwCached(ctx, size)
	if err != nil {
		return err
	}
	defer tpl.Close()
	return layout.WriteFileAtomicFunc(filepath.Join(dir, layout.RWLayerFile), 0o600, func(f *os.File) error {
		if err := sparseCopy(f, tpl); err != nil {
			return fmt.Errorf("copy %s: %w", tpl.Name(), err)
		}
		return setExt4UUID(f)
	})
}

// rwCached opens the cached formatted template of size bytes, making it if
// needed. A cached template is opened under rwMu, so evicting it later
// cannot pull it from under a copy. mkfs.ext4 runs without the lock (one
// run per size at a time): formatting a new size must not stall the
// Prepares whose size is already cached.
func (s *Snapshotter) rwCached(ctx context.Context, size int64) (*os.File, error) {
	dir := filepath.Join(s.root, rwCacheDirName)
	path := filepath.Join(dir, strconv.FormatInt(size, 10)+".img")
	for {
		s.rwMu.Lock()
		if i := slices.Index(s.rwSizes, path); i >= 0 {
			// Most recently used last.
			s.rwSizes = append(append(s.rwSizes[:i:i], s.rwSizes[i+1:]...), path)
			f, err := os.Open(path)
			s.rwMu.Unlock()
			return f, err
		}
		if busy, ok := s.rwFormatting[path]; ok {
			s.rwMu.Unlock()
			select {
			case <-busy:
				continue // formatted, or failed: look again
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if s.rwFormatting == nil {
			s.rwFormatting = map[string]chan struct{}{}
		}
		done := make(chan struct{})
		s.rwFormatting[path] = done
		s.rwMu.Unlock()

		err := os.MkdirAll(dir, 0o700)
		if err == nil {
			testHook("rwlayer:format")
			err = s.formatRWLayer(ctx, path, size)
		}

		s.rwMu.Lock()
		delete(s.rwFormatting, path)
		close(done)
		if err != nil {
			s.rwMu.Unlock()
			return nil, err
		}
		s.rwSizes = append(s.rwSizes, path)
		if len(s.rwSizes) > rwCacheMax {
			os.Remove(s.rwSizes[0])
			s.rwSizes = s.rwSizes[1:]
		}
		f, err := os.Open(path)
		s.rwMu.Unlock()
		return f, err
	}
}

// formatRWLayer makes the ext4 image at path with mkfs.ext4 (temp, fsync,
// rename).
func (s *Snapshotter) formatRWLayer(ctx context.Context, path string, size int64) error {
	tpl, err := s.rwTemplate()
	if err != nil {
		return fmt.Errorf("writable layer template: %w", err)
	}
	return layout.WriteFileAtomicFunc(path, 0o600, func(f *os.File) error {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("size to %d bytes: %w", size, err)
		}
		return mkfsExt4(ctx, f.Name(), tpl)
	})
}

// mkfsExt4 formats the file at path with the template's contents.
func mkfsExt4(ctx context.Context, path, template string) error {
	bin, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("format writable layer %s: mkfs.ext4 not found (install e2fsprogs): %w", path, err)
	}
	run := func(ext string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, "-q", "-F", "-b", "4096", "-O", "metadata_csum_seed", "-E", ext, "-d", template, path)
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		err := cmd.Run()
		return out.String(), err
	}
	if !noPrezeroed.Load() {
		out, err := run(mkfsBaseOpts + mkfsPrezeroedOpt)
		if err == nil {
			return nil
		}
		if !strings.Contains(out, "assume_storage_prezeroed") {
			return fmt.Errorf("format writable layer %s: mkfs.ext4: %w: %s", path, err, strings.TrimSpace(out))
		}
		noPrezeroed.Store(true)
	}
	if out, err := run(mkfsBaseOpts); err != nil {
		return fmt.Errorf("format writable layer %s: mkfs.ext4: %w: %s", path, err, strings.TrimSpace(out))
	}
	return nil
}

// sparseCopy copies the allocated extents of in into dst (sized like
// in), keeping holes: SEEK_DATA/SEEK_HOLE to find them, copy_file_range
// to move them in the kernel.
func sparseCopy(dst, in *os.File) error {
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := dst.Truncate(st.Size()); err != nil {
		return err
	}
	fd := int(in.Fd())
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			return nil // only a hole after off
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		roff, woff := data, data
		for roff < hole {
			n, err := unix.CopyFileRange(fd, &roff, int(dst.Fd()), &woff, int(hole-roff), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
		}
		off = hole
	}
	return nil
}
