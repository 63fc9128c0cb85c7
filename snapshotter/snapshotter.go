package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// CommitMode says how writable snapshots keep their upper layer.
type CommitMode string

const (
	// CommitModeBlock keeps the upper in an ext4 image, rwlayer.img.
	CommitModeBlock CommitMode = "block"
	// CommitModeOverlay keeps the upper in rw/upper and rw/work.
	CommitModeOverlay CommitMode = "overlay"
)

// Config is the snapshotter's configuration, already parsed and validated.
type Config struct {
	DefaultWritableSize int64 // bytes of a new rwlayer.img when no max-size label
	CommitMode          CommitMode
	SetImmutable        bool // chattr +i on committed layer files
}

// Snapshotter is the erofs-vm snapshots.Snapshotter. Create it with New.
type Snapshotter struct {
	root string
	cfg  Config
	ms   *storage.MetaStore

	// pending holds the names of new-* directories of snapshots being
	// created, which Cleanup must not take for orphans.
	pendingMu sync.Mutex
	pending   map[string]struct{}

	// locks serialises the file work of Commit and Remove on one snapshot id.
	locks idLocks

	// rwMu guards rwSizes, the cached ext4 templates, least recently used
	// first, and rwFormatting, the templates being formatted (closed when
	// done). It is never held while mkfs.ext4 runs.
	rwMu         sync.Mutex
	rwSizes      []string
	rwFormatting map[string]chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

// Directory names under root.
const (
	snapshotsDir = "snapshots"
	// tempDirPrefix names a snapshot directory still being prepared; it is
	// renamed to the snapshot id inside the transaction that records it.
	tempDirPrefix = "new-"
)

// New opens (creating if needed) a snapshotter rooted at root. It removes
// what a crash may have left behind (directories of snapshots that were never
// recorded or were removed, temp files) before it returns.
func New(root string, cfg Config) (snapshots.Snapshotter, error) {
	return open(root, cfg)
}

func open(root string, cfg Config) (*Snapshotter, error) {
	switch cfg.CommitMode {
	case "":
		cfg.CommitMode = CommitModeBlock
	case CommitModeBlock, CommitModeOverlay:
	default:
		return nil, fmt.Errorf("commit mode %q: want %q or %q: %w", cfg.CommitMode, CommitModeBlock, CommitModeOverlay, errdefs.ErrInvalidArgument)
	}
	if cfg.DefaultWritableSize == 0 {
		cfg.DefaultWritableSize = DefaultWritableSize
	}
	if err := checkWritableSize(cfg.DefaultWritableSize); err != nil {
		return nil, fmt.Errorf("default writable size: %w", err)
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("root %q must be absolute: %w", root, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Join(root, snapshotsDir), 0o700); err != nil {
		return nil, err
	}
	// Templates are a cache; a new start formats them again (after an
	// e2fsprogs upgrade, with the new mkfs).
	if err := os.RemoveAll(filepath.Join(root, rwCacheDirName)); err != nil {
		return nil, err
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(root, "metadata.db"), err)
	}
	s := &Snapshotter{root: root, cfg: cfg, ms: ms, pending: map[string]struct{}{}}
	ctx := log.WithLogger(context.Background(), log.L.WithField("snapshotter", "erofs-vm"))
	if err := s.recover(ctx); err != nil {
		ms.Close()
		return nil, fmt.Errorf("recover %s: %w", root, err)
	}
	return s, nil
}

// Close closes the metadata store. Closing twice is harmless.
func (s *Snapshotter) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.ms.Close() })
	return s.closeErr
}

func (s *Snapshotter) snapshotsRoot() string { return filepath.Join(s.root, snapshotsDir) }

func (s *Snapshotter) dir(id string) string { return filepath.Join(s.root, snapshotsDir, id) }

func (s *Snapshotter) layerPath(id string) string { return filepath.Join(s.dir(id), layout.LayerFile) }

func (s *Snapshotter) fsmetaPath(id string) string {
	return filepath.Join(s.dir(id), layout.FSMetaFile)
}

func (s *Snapshotter) rwLayerPath(id string) string {
	return filepath.Join(s.dir(id), layout.RWLayerFile)
}

func (s *Snapshotter) rwDir(id string) string { return filepath.Join(s.dir(id), layout.RWDir) }

// isExtract reports whether the active snapshot id is one the differ
// unpacks into: its directory holds the marker. The file, not the label,
// decides, because labels can be replaced by Update.
func (s *Snapshotter) isExtract(id string) (bool, error) {
	_, err := os.Lstat(filepath.Join(s.dir(id), layout.MarkerFile))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}

func (s *Snapshotter) addPending(name string) {
	s.pendingMu.Lock()
	s.pending[name] = struct{}{}
	s.pendingMu.Unlock()
}

func (s *Snapshotter) donePending(name string) {
	s.pendingMu.Lock()
	delete(s.pending, name)
	s.pendingMu.Unlock()
}

func (s *Snapshotter) isPending(name string) bool {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	_, ok := s.pending[name]
	return ok
}
