package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/erofs"
	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// writeLayerAtomic runs write on a temp file in dir and, if it succeeds,
// fsyncs it and renames it to dir/layer.erofs. Nothing is left on failure.
func writeLayerAtomic(dir string, write func(*os.File) error) error {
	return layout.WriteFileAtomicFunc(filepath.Join(dir, layout.LayerFile), 0o644, write)
}

// validateLayer checks that path is an uncompressed EROFS image this
// snapshotter can stack: the magic, 4 KiB blocks, a size covering every
// block the superblock claims, no extra devices, and a root inode that is a
// directory whose entries decode. It does not walk the tree: a layer is
// 4 KiB to gigabytes and Commit must stay fast; the differ that wrote it
// verified the content's digest.
func validateLayer(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("layer %s is missing: %w", path, errdefs.ErrFailedPrecondition)
		}
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("layer %s is not a regular file: %w", path, errdefs.ErrFailedPrecondition)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("layer %s is not a valid EROFS image: %s: %w", path, fmt.Sprintf(format, a...), errdefs.ErrFailedPrecondition)
	}
	buf := make([]byte, erofs.SuperblockSize)
	if _, err := f.ReadAt(buf, erofs.SuperblockOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return bad("%d bytes, too short for a superblock", st.Size())
		}
		return err
	}
	var sb erofs.Superblock
	if err := erofs.Unmarshal(buf, &sb); err != nil {
		return bad("%v", err)
	}
	switch {
	case sb.Magic != erofs.Magic:
		return bad("magic %#x", sb.Magic)
	case sb.BlkSzBits != erofs.BlockSizeBits:
		return bad("block size 2^%d, want 4096", sb.BlkSzBits)
	case sb.Blocks == 0 || int64(sb.Blocks)*erofs.BlockSize > st.Size():
		return bad("superblock claims %d blocks, file has %d bytes", sb.Blocks, st.Size())
	case sb.FeatureIncompat&erofs.FeatureIncompatDeviceTable != 0 || sb.ExtraDevices != 0:
		return bad("has extra devices; a layer must stand alone")
	}
	// The root inode: i_format then i_xattr_icount then i_mode, the same
	// offsets in the compact and the extended form.
	ino := make([]byte, 6)
	off := int64(sb.MetaBlkAddr)*erofs.BlockSize + int64(sb.RootNid)*erofs.SlotSize
	if _, err := f.ReadAt(ino, off); err != nil {
		return bad("root inode at %d: %v", off, err)
	}
	if mode := uint32(ino[4]) | uint32(ino[5])<<8; mode&unix.S_IFMT != unix.S_IFDIR {
		return bad("root inode mode %#o is not a directory", mode)
	}
	// Then the reader: the root directory must decode (dirent blocks,
	// names, nids in range). Still no walk of the whole tree.
	im, err := erofs.Open(path)
	if err != nil {
		return bad("%v", err)
	}
	defer im.Close()
	if _, err := im.ReadDir("."); err != nil {
		return bad("root directory: %v", err)
	}
	return nil
}

// convertUpper turns the upper directory of the active writable snapshot
// id into dir/layer.erofs. Block mode mounts rwlayer.img read-only on the
// host for the time of the conversion (docs/design.md §8 allows it for commit):
// read-only loop device, `noload` so a journal left dirty by a guest is
// not replayed (the loop device could not take the writes anyway).
func (s *Snapshotter) convertUpper(ctx context.Context, id string) error {
	dir := s.dir(id)
	if s.cfg.CommitMode == CommitModeOverlay {
		return convertDir(ctx, dir, filepath.Join(s.rwDir(id), layout.UpperDir))
	}
	img := s.rwLayerPath(id)
	mnt, err := os.MkdirTemp(dir, commitMountPrefix)
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	loop, err := mount.SetupLoop(img, mount.LoopParams{Readonly: true, Autoclear: true})
	if err != nil {
		return fmt.Errorf("attach %s to a loop device: %w", img, err)
	}
	err = unix.Mount(loop.Name(), mnt, "ext4", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, "noload")
	// With autoclear the loop device goes away once it is unmounted and
	// this last open file is closed.
	loop.Close()
	if err != nil {
		return fmt.Errorf("mount %s read-only: %w", img, err)
	}
	defer func() {
		if err := unmountDetach(mnt); err != nil {
			logWarn(ctx, err, mnt, "erofs-vm: failed to unmount writable layer after conversion")
		}
	}()
	testHook("commit:upper-mounted")
	upper := filepath.Join(mnt, layout.UpperDir)
	if _, err := os.Lstat(upper); errors.Is(err, os.ErrNotExist) {
		// The guest never created upper/: nothing was written.
		empty, err := os.MkdirTemp(dir, ".empty-")
		if err != nil {
			return err
		}
		defer os.Remove(empty)
		upper = empty
	}
	return convertDir(ctx, dir, upper)
}

// commitMountPrefix names the temporary mount point of a conversion; a
// crash can leave one mounted, which recovery unmounts.
const commitMountPrefix = ".commit-mnt-"

func convertDir(ctx context.Context, dir, upper string) error {
	err := writeLayerAtomic(dir, func(f *os.File) error {
		_, err := erofs.ConvertDir(ctx, f, upper, erofs.ConvertOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("convert %s: %w", upper, err)
	}
	return nil
}

// unmountDetach unmounts target, lazily if it is busy; not mounted is fine.
func unmountDetach(target string) error {
	err := unix.Unmount(target, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}
