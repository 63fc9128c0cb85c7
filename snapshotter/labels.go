package snapshotter

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// LabelPrefix starts every label this snapshotter sets (docs/design.md §5).
const LabelPrefix = "erofs-vm/"

// Labels of docs/design.md §5. They live in the snapshot's bolt record and change
// in the same transaction as the snapshot; they are informational: what
// Mounts returns is decided by the snapshot's kind, its parent chain and its
// files, never by a label, so a caller that replaces the label set cannot
// change a mount.
const (
	// LabelExtract is "true" on snapshots the differ unpacks a layer into.
	LabelExtract = LabelPrefix + "extract"
	// LabelLayerDigest is the layer's uncompressed digest (diff ID).
	LabelLayerDigest = LabelPrefix + "layer-digest"
	// LabelLayerBlobDigest is the digest of the (compressed) blob applied.
	LabelLayerBlobDigest = LabelPrefix + "layer-blob-digest"
	// LabelLayerBlobPath is the absolute path of the snapshot's layer.erofs.
	LabelLayerBlobPath = LabelPrefix + "layer-blob-path"
	// LabelLayerOrder is the JSON array of the stack's diff IDs, oldest
	// first: the order of the layers in merged.vmdk.
	LabelLayerOrder = LabelPrefix + "layer-order"
	// LabelFSMetaReady is "true" once fsmeta.erofs, layers.manifest and
	// merged.vmdk exist. Derived from the files at Stat and Walk, never
	// stored: the disk is built after Commit (docs/design.md §4).
	LabelFSMetaReady = LabelPrefix + "fsmeta-ready"
	// LabelFSMetaLayers is the number of layers in the fsmeta, decimal;
	// derived like LabelFSMetaReady.
	LabelFSMetaLayers = LabelPrefix + "fsmeta-layers"
	// LabelMountType is the shape Mounts returns: the mount types in order,
	// comma-separated (e.g. "format/erofs,ext4" for a writable snapshot
	// over several layers). For a committed snapshot it is the shape of a
	// View of it.
	LabelMountType = LabelPrefix + "mount-type"
	// LabelWritableSize is the size in bytes of the ext4 writable layer.
	LabelWritableSize = LabelPrefix + "writable-size"
	// LabelConversionError says why converting an active snapshot's upper
	// into a layer failed; the snapshot stays active.
	LabelConversionError = LabelPrefix + "conversion-error"
	// LabelImmutable is "true" when FS_IMMUTABLE_FL is set on the layer files.
	LabelImmutable = LabelPrefix + "immutable"
)

// LayerOrderUnknownPrefix names, in a layer order, a layer whose diff ID is
// unknown (committed from a container): "snapshot:<id>".
const LayerOrderUnknownPrefix = "snapshot:"

// EncodeLayerOrder renders the value of LabelLayerOrder.
func EncodeLayerOrder(order []string) (string, error) {
	if order == nil {
		order = []string{}
	}
	for i, e := range order {
		if err := validLayerOrderEntry(e); err != nil {
			return "", fmt.Errorf("layer order entry %d: %w", i, err)
		}
	}
	b, err := json.Marshal(order)
	return string(b), err
}

// DecodeLayerOrder parses the value of LabelLayerOrder and checks each entry
// is a digest or "snapshot:<id>".
func DecodeLayerOrder(v string) ([]string, error) {
	var order []string
	if err := json.Unmarshal([]byte(v), &order); err != nil {
		return nil, fmt.Errorf("label %s: %w", LabelLayerOrder, err)
	}
	for i, e := range order {
		if err := validLayerOrderEntry(e); err != nil {
			return nil, fmt.Errorf("label %s entry %d: %w", LabelLayerOrder, i, err)
		}
	}
	return order, nil
}

func validLayerOrderEntry(e string) error {
	if id, ok := strings.CutPrefix(e, LayerOrderUnknownPrefix); ok {
		if id == "" {
			return fmt.Errorf("%q: empty snapshot id", e)
		}
		return nil
	}
	if _, err := digest.Parse(e); err != nil {
		return fmt.Errorf("%q: %w", e, err)
	}
	return nil
}

// isOwnLabel reports whether a label belongs to this snapshotter.
func isOwnLabel(k string) bool { return strings.HasPrefix(k, LabelPrefix) }
