package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"golang.org/x/sys/unix"
)

// hostMounter is a TEST-ONLY wrapper that turns the VM mounts the
// snapshotter returns into host mounts, so tests written for host
// snapshotters (containerd's conformance suite) can look inside them. It
// does on the host what the guest does (docs/design.md §4): each erofs or
// format/erofs mount becomes a read-only erofs mount (every device= as its
// own read-only loop block device, as the kernel requires), the ext4 layer a
// read-write loop mount, and the writable view an overlay of them with
// upper/ and work/ at the ext4 root. It hands back one bind mount of the
// result. The plugin never does this: it returns the raw mounts.
type hostMounter struct {
	*Snapshotter
	base string

	mu      sync.Mutex
	mounted map[string]*hostMount
	seq     int
}

// hostMount is what the wrapper mounted for one snapshot key.
type hostMount struct {
	target string
	ro     bool
	points []string // mount points, in mount order
}

func newHostMounter(s *Snapshotter, base string) (*hostMounter, error) {
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	return &hostMounter{Snapshotter: s, base: base, mounted: map[string]*hostMount{}}, nil
}

func (w *hostMounter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	ms, err := w.Snapshotter.Prepare(ctx, key, parent, opts...)
	if err != nil {
		return nil, err
	}
	return w.hostMounts(key, ms, false)
}

func (w *hostMounter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	ms, err := w.Snapshotter.View(ctx, key, parent, opts...)
	if err != nil {
		return nil, err
	}
	return w.hostMounts(key, ms, true)
}

func (w *hostMounter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	w.mu.Lock()
	hm := w.mounted[key]
	w.mu.Unlock()
	if hm != nil {
		return hm.bind(), nil
	}
	ms, err := w.Snapshotter.Mounts(ctx, key)
	if err != nil {
		return nil, err
	}
	info, err := w.Snapshotter.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return w.hostMounts(key, ms, info.Kind == snapshots.KindView)
}

func (w *hostMounter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	if err := w.release(key); err != nil {
		return err
	}
	return w.Snapshotter.Commit(ctx, name, key, opts...)
}

func (w *hostMounter) Remove(ctx context.Context, key string) error {
	if err := w.release(key); err != nil {
		return err
	}
	return w.Snapshotter.Remove(ctx, key)
}

// Close unmounts everything the wrapper mounted, closes the snapshotter
// and lifts immutable flags so the test's temp dir can be deleted.
func (w *hostMounter) Close() error {
	w.mu.Lock()
	keys := make([]string, 0, len(w.mounted))
	for k := range w.mounted {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	var errs []error
	for _, k := range keys {
		errs = append(errs, w.release(k))
	}
	errs = append(errs, w.Snapshotter.Close())
	entries, _ := os.ReadDir(w.snapshotsRoot())
	for _, e := range entries {
		errs = append(errs, clearImmutableTree(filepath.Join(w.snapshotsRoot(), e.Name())))
	}
	return errors.Join(errs...)
}

func (hm *hostMount) bind() []mount.Mount {
	rw := "rw"
	if hm.ro {
		rw = "ro"
	}
	return []mount.Mount{{Type: "bind", Source: hm.target, Options: []string{"rbind", rw}}}
}

// hostMounts mounts ms on the host and returns one bind mount of the result.
func (w *hostMounter) hostMounts(key string, ms []mount.Mount, ro bool) (_ []mount.Mount, err error) {
	if len(ms) == 1 && ms[0].Type == typeBind {
		// An extract snapshot: the differ's directory is already on the host.
		return ms, nil
	}
	w.mu.Lock()
	w.seq++
	dir := filepath.Join(w.base, fmt.Sprint(w.seq))
	w.mu.Unlock()
	hm := &hostMount{ro: ro}
	defer func() {
		if err != nil {
			hm.unmount()
		}
	}()
	var lower, rw string
	for i, m := range ms {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, err
		}
		switch m.Type {
		case typeErofs, typeFormatErofs:
			if err := mountErofs(m, p); err != nil {
				return nil, err
			}
			lower = p
		case typeExt4:
			if err := mountLoop(m.Source, p, "ext4", false, ""); err != nil {
				return nil, err
			}
			rw = p
		case typeBind:
			rw = m.Source
			continue
		default:
			return nil, fmt.Errorf("hostMounter: unexpected mount type %q", m.Type)
		}
		hm.points = append(hm.points, p)
	}
	switch {
	case rw == "":
		hm.target = lower
	default:
		for _, d := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(rw, d), 0o755); err != nil {
				return nil, err
			}
		}
		if lower == "" {
			hm.target = filepath.Join(rw, "upper")
			break
		}
		merged := filepath.Join(dir, "merged")
		if err := os.MkdirAll(merged, 0o755); err != nil {
			return nil, err
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(rw, "upper"), filepath.Join(rw, "work"))
		if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
			return nil, fmt.Errorf("hostMounter: overlay %s: %w", opts, err)
		}
		hm.points = append(hm.points, merged)
		hm.target = merged
	}
	w.mu.Lock()
	w.mounted[key] = hm
	w.mu.Unlock()
	return hm.bind(), nil
}

// mountErofs mounts an erofs or format/erofs mount read-only at p.
func mountErofs(m mount.Mount, p string) error {
	var data []string
	for _, o := range m.Options {
		dev, ok := strings.CutPrefix(o, "device=")
		if !ok {
			continue
		}
		loop, err := mount.SetupLoop(dev, mount.LoopParams{Readonly: true, Autoclear: true})
		if err != nil {
			return fmt.Errorf("hostMounter: loop %s: %w", dev, err)
		}
		// The mount holds the device open; autoclear frees it afterwards.
		defer loop.Close()
		data = append(data, "device="+loop.Name())
	}
	return mountLoop(m.Source, p, "erofs", true, strings.Join(data, ","))
}

// mountLoop mounts the image file src at p through a new loop device.
func mountLoop(src, p, fstype string, ro bool, data string) error {
	loop, err := mount.SetupLoop(src, mount.LoopParams{Readonly: ro, Autoclear: true})
	if err != nil {
		return fmt.Errorf("hostMounter: loop %s: %w", src, err)
	}
	defer loop.Close()
	var flags uintptr
	if ro {
		flags = unix.MS_RDONLY
	}
	if err := unix.Mount(loop.Name(), p, fstype, flags, data); err != nil {
		return fmt.Errorf("hostMounter: mount %s (%s) on %s: %w", src, fstype, p, err)
	}
	return nil
}

func (w *hostMounter) release(key string) error {
	w.mu.Lock()
	hm := w.mounted[key]
	delete(w.mounted, key)
	w.mu.Unlock()
	if hm == nil {
		return nil
	}
	return hm.unmount()
}

func (hm *hostMount) unmount() error {
	var errs []error
	for i := len(hm.points) - 1; i >= 0; i-- {
		if err := unix.Unmount(hm.points[i], 0); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("hostMounter: unmount %s: %w", hm.points[i], err))
		}
	}
	hm.points = nil
	return errors.Join(errs...)
}
