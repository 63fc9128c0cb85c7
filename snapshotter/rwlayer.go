package snapshotter

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// The ext4 writable layer (block mode): a sparse file formatted by
// mkfs.ext4 with upper/ and work/ already at its root, so the guest's
// overlay finds them without a first-boot mkdir.
//
// How, and why this way (measured by BenchmarkRWLayer, see hack/bench):
// `mkfs.ext4 -d <template>` formats and populates in one exec. On a fresh
// sparse file every unwritten block reads as zero, so the inode tables and
// the journal need no zeroing: lazy_itable_init, lazy_journal_init and
// assume_storage_prezeroed skip it (1 GiB: ~0.6 MiB allocated instead of
// 33 MiB, and the guest kernel starts no lazy-init thread). Copying a
// cached pre-formatted template was measured too; it saves about a
// millisecond but gives every layer the same filesystem UUID.

// mkfsExtendedOpts are mkfs.ext4 -E options. The last one needs
// e2fsprogs >= 1.47; noPrezeroed remembers an older mkfs rejected it.
const (
	mkfsBaseOpts      = "nodiscard,lazy_itable_init=1,lazy_journal_init=1"
	mkfsPrezeroedOpt  = ",assume_storage_prezeroed=1"
	rwTemplateDirName = ".rwlayer-template"
)

var noPrezeroed atomic.Bool

// rwTemplate returns a directory holding empty upper/ and work/ (0755,
// root-owned): what mkfs.ext4 -d copies into every writable layer.
func (s *Snapshotter) rwTemplate() (string, error) {
	tpl := filepath.Join(s.root, rwTemplateDirName)
	for _, d := range []string{tpl, filepath.Join(tpl, layout.UpperDir), filepath.Join(tpl, layout.WorkDir)} {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return "", err
		}
		// The mode must not depend on the daemon's umask: it becomes the
		// mode of the container's root directory.
		if err := os.Chmod(d, 0o755); err != nil {
			return "", err
		}
	}
	return tpl, nil
}

// createRWLayer writes dir/rwlayer.img, an ext4 filesystem of size bytes,
// through a temp file, fsync and rename.
func (s *Snapshotter) createRWLayer(ctx context.Context, dir string, size int64) error {
	tpl, err := s.rwTemplate()
	if err != nil {
		return fmt.Errorf("writable layer template: %w", err)
	}
	dst := filepath.Join(dir, layout.RWLayerFile)
	f, err := os.CreateTemp(dir, "."+layout.RWLayerFile+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size %s to %d bytes: %w", tmp, size, err)
	}
	if err := mkfsExt4(ctx, tmp, tpl); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	ok = true
	return nil
}

// mkfsExt4 formats the file at path with the template's contents.
func mkfsExt4(ctx context.Context, path, template string) error {
	bin, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("format writable layer %s: mkfs.ext4 not found (install e2fsprogs): %w", path, err)
	}
	run := func(ext string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, "-q", "-F", "-b", "4096", "-E", ext, "-d", template, path)
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
