package guest

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/mount"
)

// BootMounts boots a guest with the disks a VM runtime would make of a
// snapshotter's mounts (DisksFromMounts), mounts them inside as it would
// (GuestMountPlan.Script), runs script with the container root at RootDir,
// then unmounts everything so writes to an ext4 disk are complete and clean
// when Boot returns. cfg supplies the timeout, memory and assets; its Disks
// and Script are replaced. A failed mount makes the script exit 1 with a
// line starting with MountFailedMarker.
func BootMounts(ctx context.Context, mounts []mount.Mount, script string, cfg Config) (*Result, error) {
	disks, plan, err := DisksFromMounts(mounts)
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	mountSh, err := plan.Script()
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	cfg.Disks = disks
	cfg.Script = mountSh + "(\n" + script + "\n)\nrc=$?\n" + plan.UnmountScript() + "exit $rc\n"
	return Boot(ctx, cfg)
}
