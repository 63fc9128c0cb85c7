// Package layout names the files of an erofs-vm snapshot directory
// (docs/design.md §3) and the marker through which the differ hands what it knows
// about a layer to the snapshotter. It is shared by the snapshotter and the
// differ so neither has to import the other.
package layout

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
)

// File names inside snapshots/<id>/.
const (
	// MarkerFile marks a directory the erofs-vm differ may convert a layer
	// into. The snapshotter creates it (empty) when it prepares an extract
	// snapshot; the differ replaces it with a Marker after a successful Apply.
	MarkerFile = ".erofslayer"
	// LayerFile is the layer as an uncompressed EROFS image.
	LayerFile = "layer.erofs"
	// FSMetaFile is the merged metadata image of a committed multi-layer snapshot.
	FSMetaFile = "fsmeta.erofs"
	// VMDKFile is the flat VMDK descriptor over FSMetaFile and every layer.
	VMDKFile = "merged.vmdk"
	// ManifestFile lists the layers of VMDKFile for the VM runtime's
	// stale-disk check (docs/design.md §4).
	ManifestFile = "layers.manifest"
	// RWLayerFile is the ext4 image of a writable snapshot in block mode.
	RWLayerFile = "rwlayer.img"
	// RWDir holds upper/ and work/ of a writable snapshot in overlay mode.
	RWDir = "rw"
	// UpperDir and WorkDir are the overlay dirs at the root of the ext4
	// rwlayer and under RWDir.
	UpperDir = "upper"
	WorkDir  = "work"
)

// Marker is what the differ records in MarkerFile after applying a layer.
type Marker struct {
	// DiffID is the digest of the uncompressed layer tar, verified while streaming.
	DiffID digest.Digest `json:"diff_id,omitempty"`
	// BlobDigest is the digest of the (possibly compressed) blob that was applied.
	BlobDigest digest.Digest `json:"blob_digest,omitempty"`
	// MediaType is the blob's media type.
	MediaType string `json:"media_type,omitempty"`
}

// ReadMarker returns the marker of dir. A missing marker is an error wrapping
// os.ErrNotExist; an empty one (written at Prepare) is the zero Marker.
func ReadMarker(dir string) (Marker, error) {
	var m Marker
	b, err := os.ReadFile(filepath.Join(dir, MarkerFile))
	if err != nil {
		return m, err
	}
	if len(b) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("parse %s: %w", filepath.Join(dir, MarkerFile), err)
	}
	return m, nil
}

// WriteMarker atomically replaces the marker of dir with m.
func WriteMarker(dir string, m Marker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, MarkerFile), b, 0o644)
}

// WriteFileAtomic writes data to a temp file beside path, fsyncs it and
// renames it over path, so a crash leaves either the old file or the new one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return WriteFileAtomicFunc(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteFileAtomicFunc is WriteFileAtomic for content produced by a writer
// (an image streamed from a tar, an ext4 copy): write fills the temp file
// ".<base>.tmp-*" beside path; on success the file gets perm, is fsynced,
// renamed over path and the directory is synced. On any failure before the
// rename the temp file is removed and path is left as it was. Temp names
// keep that pattern because crash recovery recognises leftovers by it.
//
// It is the one place the project writes a file that must appear whole or
// not at all: the differ's layer.erofs, the snapshotter's fsmeta, VMDK,
// marker and ext4 images, erofsctl's outputs.
func WriteFileAtomicFunc(path string, perm os.FileMode, write func(*os.File) error) error {
	return WriteFileAtomicWith(path, perm, AtomicOptions{}, write)
}

// AtomicOptions tunes WriteFileAtomicWith.
type AtomicOptions struct {
	// NoSync skips the fsync of the file and of its directory: for
	// outputs whose loss in a power failure costs nothing, such as a
	// benchmark's image on tmpfs (erofsctl convert -no-sync). The rename
	// still makes the file appear whole.
	NoSync bool
}

// WriteFileAtomicWith is WriteFileAtomicFunc with options.
func WriteFileAtomicWith(path string, perm os.FileMode, opts AtomicOptions, write func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			// Unlink first: the name goes at once, while the close that
			// drops the last reference may wait for writeback.
			os.Remove(tmp)
			f.Close()
		}
	}()
	if err := write(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if !opts.NoSync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if opts.NoSync {
		return nil
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory so a rename or create inside it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
