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
// (DESIGN §4). ok is false for anything else.
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

// upperSource says where the upper dir of an active writable snapshot is:
// inside an ext4 image (block mode), or a host dir (overlay mode).
type upperSource struct {
	ext4Image string // block mode: rwlayer.img, upper/ at its root
	dir       string // overlay mode: rw/upper
}

// parseCompare recognises the mounts of an erofs-vm Compare: lower = a View
// of the committed parent, upper = the active writable snapshot over that
// same parent (its lower mounts, then the ext4 rwlayer or the rw dir).
// Anything else is someone else's and yields ErrNotImplemented.
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
	if !ok || !ul.equal(ls) {
		return notOurs("upper is not directly over the lower")
	}
	return ls, us, nil
}
