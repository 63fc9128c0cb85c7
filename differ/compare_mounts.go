package differ

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"

	"github.com/erofs-vm/containerd-erofs/internal/layout"
)

// lowerStack is the committed EROFS stack named by a View's mounts: one
// layer.erofs, or fsmeta.erofs plus its layer devices oldest first. The
// zero value is the empty stack (a snapshot without parent).
type lowerStack struct {
	image   string
	devices []string
}

// parseLower reads the mounts erofs-vm hands out for a committed stack
// (docs/design.md §4). ok is false for anything else.
func parseLower(mounts []mount.Mount) (lowerStack, bool) {
	switch len(mounts) {
	case 0:
		return lowerStack{}, true
	case 1:
	default:
		return lowerStack{}, false
	}
	m := mounts[0]
	var s lowerStack
	switch {
	case m.Type == "erofs" && filepath.Base(m.Source) == layout.LayerFile:
	case m.Type == "format/erofs" && filepath.Base(m.Source) == layout.FSMetaFile:
		for _, o := range m.Options {
			if dev, ok := strings.CutPrefix(o, "device="); ok {
				s.devices = append(s.devices, dev)
			}
		}
		if len(s.devices) == 0 {
			return lowerStack{}, false
		}
	default:
		return lowerStack{}, false
	}
	if !filepath.IsAbs(m.Source) {
		return lowerStack{}, false
	}
	s.image = m.Source
	return s, true
}

func (s lowerStack) equal(o lowerStack) bool {
	return s.image == o.image && slices.Equal(s.devices, o.devices)
}

// upperSource says where the upper dir of the change is: inside an ext4
// image (block mode), a host dir (overlay mode), or, when the upper is a
// committed snapshot, its own layer.erofs (a layer is kept in overlayfs
// upper form: 0:0 whiteouts, opaque xattrs).
type upperSource struct {
	ext4Image string // block mode: rwlayer.img, upper/ at its root
	dir       string // overlay mode: rw/upper
	layer     string // committed: the top layer.erofs
	// emptyLower: the upper has no parent, so the lower must be the empty
	// view containerd's CreateDiff makes of "" (checked once it is open).
	emptyLower bool
}

// parseCompare recognises the mounts of an erofs-vm Compare: lower = a View
// of the committed parent, upper = the active writable snapshot over that
// same parent (its lower mounts, then the ext4 rwlayer or the rw dir), or a
// View of a committed snapshot whose parent is lower. Anything else is
// someone else's and yields ErrNotImplemented.
func parseCompare(lower, upper []mount.Mount) (lowerStack, upperSource, error) {
	notOurs := func(why string) (lowerStack, upperSource, error) {
		return lowerStack{}, upperSource{}, fmt.Errorf("erofs-vm differ: %s: %w", why, errdefs.ErrNotImplemented)
	}
	ls, ok := parseLower(lower)
	if !ok {
		return notOurs("lower mounts are not an erofs-vm stack")
	}
	if len(upper) == 0 {
		return notOurs("no upper mounts")
	}
	if us, ok := committedUpper(ls, upper); ok {
		return ls, us, nil
	}
	last := upper[len(upper)-1]
	var us upperSource
	switch {
	case last.Type == "ext4" && filepath.Base(last.Source) == layout.RWLayerFile:
		us.ext4Image = last.Source
	case last.Type == "bind" && filepath.Base(last.Source) == layout.RWDir:
		us.dir = filepath.Join(last.Source, layout.UpperDir)
	case last.Type == "bind" && filepath.Base(last.Source) == layout.UpperDir &&
		filepath.Base(filepath.Dir(last.Source)) == layout.RWDir:
		us.dir = last.Source
	default:
		return notOurs(fmt.Sprintf("upper mount %s %s is not an erofs-vm writable layer", last.Type, last.Source))
	}
	if !filepath.IsAbs(last.Source) {
		return notOurs("upper source is not absolute")
	}
	// The upper holds the change relative to its own lowers; that is the
	// diff asked for only when they are the lower given.
	ul, ok := parseLower(upper[:len(upper)-1])
	switch {
	case !ok:
		return notOurs("upper's lower mounts are not an erofs-vm stack")
	case ul.image == "" && ls.image != "" && len(ls.devices) == 0:
		us.emptyLower = true
	case !ul.equal(ls):
		return notOurs("upper is not directly over the lower")
	}
	return ls, us, nil
}

// committedUpper recognises a View of a committed snapshot whose parent is
// the lower: its stack is the lower's plus one layer on top.
func committedUpper(ls lowerStack, upper []mount.Mount) (upperSource, bool) {
	us, ok := parseLower(upper)
	if !ok || us.image == "" {
		return upperSource{}, false
	}
	layers := us.devices
	if len(layers) == 0 {
		layers = []string{us.image}
	}
	lowerLayers := ls.devices
	if len(lowerLayers) == 0 && ls.image != "" {
		lowerLayers = []string{ls.image}
	}
	if len(layers) != len(lowerLayers)+1 || !slices.Equal(layers[:len(lowerLayers)], lowerLayers) {
		return upperSource{}, false
	}
	return upperSource{layer: layers[len(layers)-1]}, true
}
