package guest

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
)

// MaxDisks is how many disks qemubox attaches at most; more is an error there.
const MaxDisks = 10

// Guest paths the mount script uses.
const (
	// LayersDir holds mount i of the plan at LayersDir/<i>.
	LayersDir = "/mnt/layers"
	// RootDir is where the container's root filesystem appears.
	RootDir = "/mnt/root"
	// MountFailedMarker starts the line Script prints when a mount fails.
	MountFailedMarker = "GUEST-MOUNT-FAILED:"
)

// GuestMount is what becomes of one snapshotter mount inside the guest.
type GuestMount struct {
	// Type is the guest filesystem: "erofs", "ext4" or "bind".
	Type string
	// Disk is the index of the disk backing the mount, -1 for none (bind).
	Disk int
	// Device is the guest block device, /dev/vd<'a'+Disk>.
	Device   string
	ReadOnly bool
	// HostSource is the mount's source on the host, as returned.
	HostSource string
	// Unsupported says why the guest cannot use this mount (a bind mount
	// is a host path a VM cannot see); empty when it can.
	Unsupported string
}

// GuestMountPlan is the guest side of a snapshotter's mounts, one entry per
// mount in the order returned.
type GuestMountPlan struct {
	Mounts []GuestMount
}

// DisksFromMounts translates a snapshotter's mounts into VM disks and a
// guest mount plan the way qemubox/spinbox does (docs/design.md §4 records the
// contract; its mounts.transformMount/handleEROFS/handleExt4 are where it
// lives in qemubox's source):
//
//   - erofs and format/erofs become read-only virtio-blk disks. For a source
//     ending in "fsmeta.erofs", the same path ending in "merged.vmdk" is
//     attached instead if it exists with size > 0 (else fsmeta.erofs alone,
//     which cannot mount: the layers are missing); device= and loop options
//     are dropped, since the flat VMDK carries every layer on one device.
//     The qemu format is vmdk for a .vmdk source, else raw.
//   - ext4 becomes a raw disk, writable unless the options hold ro or readonly.
//   - bind, and any other plain type, passes through as a host path, useless
//     in a VM: it appears in the plan with Unsupported set and gets no disk.
//   - mkfs/* and other format/* types are errors (qemubox wants containerd's
//     mount manager for them), as is overlay, which erofs-vm never returns
//     (docs/design.md §4), and more than MaxDisks disks.
func DisksFromMounts(mounts []mount.Mount) ([]Disk, GuestMountPlan, error) {
	var disks []Disk
	var plan GuestMountPlan
	for i, m := range mounts {
		if m.Source == "" {
			return nil, GuestMountPlan{}, fmt.Errorf("mount %d (%s): empty source", i, m.Type)
		}
		gm := GuestMount{Type: m.Type, Disk: -1, HostSource: m.Source}
		switch {
		case m.Type == "erofs" || m.Type == "format/erofs":
			d := Disk{Path: m.Source, Format: "raw", ReadOnly: true}
			if strings.HasSuffix(m.Source, "fsmeta.erofs") {
				vmdk := strings.TrimSuffix(m.Source, "fsmeta.erofs") + "merged.vmdk"
				if fi, err := os.Stat(vmdk); err == nil && fi.Size() > 0 {
					d.Path = vmdk
				}
			}
			if strings.HasSuffix(d.Path, ".vmdk") {
				d.Format = "vmdk"
			}
			gm.Type, gm.ReadOnly = "erofs", true
			disks = append(disks, d)
		case m.Type == "ext4":
			gm.ReadOnly = slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "readonly")
			disks = append(disks, Disk{Path: m.Source, Format: "raw", ReadOnly: gm.ReadOnly})
		case m.Type == "overlay" || strings.Contains(m.Type, "overlay"):
			return nil, GuestMountPlan{}, fmt.Errorf("mount %d: type %s: erofs-vm must never return an overlay mount (docs/design.md §4)", i, m.Type)
		case strings.HasPrefix(m.Type, "mkfs/") || strings.HasPrefix(m.Type, "format/"):
			return nil, GuestMountPlan{}, fmt.Errorf("mount %d: type %s is rejected by qemubox (needs containerd's mount manager)", i, m.Type)
		default:
			gm.Unsupported = fmt.Sprintf("%s mount of host path %s passes through and cannot reach a VM", m.Type, m.Source)
		}
		if gm.Unsupported == "" {
			gm.Disk = len(disks) - 1
			gm.Device = DeviceName(gm.Disk)
		}
		plan.Mounts = append(plan.Mounts, gm)
	}
	if len(disks) > MaxDisks {
		return nil, GuestMountPlan{}, fmt.Errorf("%d disks: qemubox attaches at most %d", len(disks), MaxDisks)
	}
	return disks, plan, nil
}

// DeviceName is the guest device of the i-th virtio disk: /dev/vda, /dev/vdb, …
func DeviceName(i int) string {
	return "/dev/vd" + string(rune('a'+i))
}

// Script returns a busybox sh snippet that mounts the plan the way qemubox's
// guest does (docs/design.md §4): mount i at LayersDir/<i> (erofs read-only, ext4
// read-write with upper/ and work/ created at its root if missing), then
// RootDir as an overlay whose lowerdir is the erofs mounts in mount order
// (qemubox's {{ overlay 0 N }}: mounts are newest first, as containerd
// snapshotters return them) and whose upperdir/workdir are on the ext4 disk. Without an ext4 disk the
// root is the single erofs mount (bind-mounted) or a read-only overlay of
// several; with only an ext4 disk it is that disk's upper/. Mounts the VM
// cannot use (bind) are skipped with a comment.
//
// Every step is checked explicitly (set -e is ignored inside `if`, `||` and
// `!` contexts, so it is not relied on): a failure prints a line starting
// with MountFailedMarker, the kernel version and the kernel's last erofs,
// overlay and ext4 messages, and exits the script with status 1.
func (p GuestMountPlan) Script() (string, error) {
	var b strings.Builder
	b.WriteString(`mount_failed() {
	echo "` + MountFailedMarker + ` $* (kernel $(uname -r))"
	dmesg | grep -iE 'erofs|overlay|ext4' | tail -n 10
	exit 1
}
`)
	step := func(cmd, what string) {
		fmt.Fprintf(&b, "%s || mount_failed %q\n", cmd, what)
	}
	var lowers []string
	rw := ""
	for i, m := range p.Mounts {
		dir := fmt.Sprintf("%s/%d", LayersDir, i)
		if m.Unsupported != "" {
			fmt.Fprintf(&b, "# mount %d: %s\n", i, m.Unsupported)
			continue
		}
		switch m.Type {
		case "erofs":
			step(fmt.Sprintf("mkdir -p %s && mount -t erofs -o ro %s %s", dir, m.Device, dir), fmt.Sprintf("mount %d: erofs %s", i, m.Device))
			lowers = append(lowers, dir)
		case "ext4":
			if m.ReadOnly {
				return "", fmt.Errorf("mount %d: a read-only ext4 disk cannot hold the overlay upper dir", i)
			}
			if rw != "" {
				return "", fmt.Errorf("mount %d: a second writable ext4 disk", i)
			}
			rw = dir
			step(fmt.Sprintf("mkdir -p %s && mount -t ext4 %s %s", dir, m.Device, dir), fmt.Sprintf("mount %d: ext4 %s", i, m.Device))
			step(fmt.Sprintf("mkdir -p %s/upper %s/work", dir, dir), fmt.Sprintf("mount %d: upper/ and work/", i))
		default:
			return "", fmt.Errorf("mount %d: unknown guest type %q", i, m.Type)
		}
	}
	var root string
	switch {
	case len(lowers) == 0 && rw == "":
		return "", errors.New("no mount the guest can use")
	case rw != "" && len(lowers) == 0:
		root = fmt.Sprintf("mount --bind %s/upper %s", rw, RootDir)
	case rw != "":
		root = fmt.Sprintf("mount -t overlay overlay -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work %s",
			strings.Join(lowers, ":"), rw, rw, RootDir)
	case len(lowers) == 1:
		root = fmt.Sprintf("mount --bind %s %s", lowers[0], RootDir)
	default:
		root = fmt.Sprintf("mount -t overlay overlay -o ro,lowerdir=%s %s", strings.Join(lowers, ":"), RootDir)
	}
	step("mkdir -p "+RootDir+" && "+root, "root "+RootDir)
	return b.String(), nil
}

// UnmountScript returns a snippet that syncs and unmounts what Script
// mounted, innermost first, ignoring errors: the guest powers off hard, so
// an ext4 disk left mounted would need journal recovery on the host.
func (p GuestMountPlan) UnmountScript() string {
	var b strings.Builder
	b.WriteString("sync\numount " + RootDir + " 2>/dev/null\n")
	for i := len(p.Mounts) - 1; i >= 0; i-- {
		if p.Mounts[i].Unsupported == "" {
			fmt.Fprintf(&b, "umount %s/%d 2>/dev/null\n", LayersDir, i)
		}
	}
	return b.String()
}
