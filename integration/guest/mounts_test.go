package guest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
)

func TestDisksFromMounts(t *testing.T) {
	dir := t.TempDir()
	withVMDK := filepath.Join(dir, "with")
	emptyVMDK := filepath.Join(dir, "empty")
	noVMDK := filepath.Join(dir, "none")
	for _, d := range []string{withVMDK, emptyVMDK, noVMDK} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(withVMDK, "merged.vmdk"), []byte("# Disk DescriptorFile\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withVMDK, "x-merged.vmdk"), []byte("# Disk DescriptorFile\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(emptyVMDK, "merged.vmdk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fsmeta := func(d string) string { return filepath.Join(d, "fsmeta.erofs") }

	for _, tc := range []struct {
		name   string
		mounts []mount.Mount
		disks  []Disk
		plan   []GuestMount
		err    string
	}{
		{
			name:   "single layer",
			mounts: []mount.Mount{{Type: "erofs", Source: "/s/1/layer.erofs", Options: []string{"ro"}}},
			disks:  []Disk{{Path: "/s/1/layer.erofs", Format: "raw", ReadOnly: true}},
			plan:   []GuestMount{{Type: "erofs", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: "/s/1/layer.erofs"}},
		},
		{
			name: "fsmeta with merged.vmdk, plus ext4",
			mounts: []mount.Mount{
				{Type: "format/erofs", Source: fsmeta(withVMDK), Options: []string{"ro", "device=/s/1/layer.erofs", "device=/s/2/layer.erofs"}},
				{Type: "ext4", Source: "/s/3/rwlayer.img"},
			},
			disks: []Disk{{Path: filepath.Join(withVMDK, "merged.vmdk"), Format: "vmdk", ReadOnly: true}, {Path: "/s/3/rwlayer.img", Format: "raw"}},
			plan: []GuestMount{
				{Type: "erofs", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: fsmeta(withVMDK)},
				{Type: "ext4", Disk: 1, Device: "/dev/vdb", HostSource: "/s/3/rwlayer.img"},
			},
		},
		{
			name:   "empty merged.vmdk falls back to fsmeta",
			mounts: []mount.Mount{{Type: "format/erofs", Source: fsmeta(emptyVMDK), Options: []string{"ro", "loop"}}},
			disks:  []Disk{{Path: fsmeta(emptyVMDK), Format: "raw", ReadOnly: true}},
			plan:   []GuestMount{{Type: "erofs", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: fsmeta(emptyVMDK)}},
		},
		{
			name:   "missing merged.vmdk falls back to fsmeta",
			mounts: []mount.Mount{{Type: "erofs", Source: fsmeta(noVMDK)}},
			disks:  []Disk{{Path: fsmeta(noVMDK), Format: "raw", ReadOnly: true}},
			plan:   []GuestMount{{Type: "erofs", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: fsmeta(noVMDK)}},
		},
		{
			name:   "ext4 ro",
			mounts: []mount.Mount{{Type: "ext4", Source: "/s/rw.img", Options: []string{"rw", "ro"}}},
			disks:  []Disk{{Path: "/s/rw.img", Format: "raw", ReadOnly: true}},
			plan:   []GuestMount{{Type: "ext4", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: "/s/rw.img"}},
		},
		{
			name:   "bind passes through without a disk",
			mounts: []mount.Mount{{Type: "bind", Source: "/s/4", Options: []string{"rbind", "rw"}}},
			plan:   []GuestMount{{Type: "bind", Disk: -1, HostSource: "/s/4", Unsupported: "bind mount of host path /s/4 passes through and cannot reach a VM"}},
		},
		{
			name:   "ext4 readonly, vmdk ext4 stays raw",
			mounts: []mount.Mount{{Type: "ext4", Source: "/s/rw.vmdk", Options: []string{"readonly"}}},
			disks:  []Disk{{Path: "/s/rw.vmdk", Format: "raw", ReadOnly: true}},
			plan:   []GuestMount{{Type: "ext4", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: "/s/rw.vmdk"}},
		},
		{
			name:   "erofs given as a vmdk",
			mounts: []mount.Mount{{Type: "erofs", Source: "/s/x.vmdk"}},
			disks:  []Disk{{Path: "/s/x.vmdk", Format: "vmdk", ReadOnly: true}},
			plan:   []GuestMount{{Type: "erofs", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: "/s/x.vmdk"}},
		},
		{
			// qemubox matches a suffix, not a base name: x-fsmeta.erofs → x-merged.vmdk.
			name:   "fsmeta suffix, not name",
			mounts: []mount.Mount{{Type: "erofs", Source: filepath.Join(withVMDK, "x-fsmeta.erofs")}},
			disks:  []Disk{{Path: filepath.Join(withVMDK, "x-merged.vmdk"), Format: "vmdk", ReadOnly: true}},
			plan:   []GuestMount{{Type: "erofs", Disk: 0, Device: "/dev/vda", ReadOnly: true, HostSource: filepath.Join(withVMDK, "x-fsmeta.erofs")}},
		},
		{name: "mkfs rejected", mounts: []mount.Mount{{Type: "mkfs/ext4", Source: "/s/x"}}, err: "mkfs/ext4 is rejected"},
		{name: "overlay rejected", mounts: []mount.Mount{{Type: "overlay", Source: "overlay"}}, err: "never return an overlay"},
		{name: "format/mkdir/overlay rejected", mounts: []mount.Mount{{Type: "format/mkdir/overlay", Source: "overlay"}}, err: "never return an overlay"},
		{name: "other format rejected", mounts: []mount.Mount{{Type: "format/ext4", Source: "/x"}}, err: "rejected by qemubox"},
		{name: "empty source", mounts: []mount.Mount{{Type: "erofs"}}, err: "empty source"},
		{name: "eleven disks", mounts: repeat(mount.Mount{Type: "erofs", Source: "/l.erofs"}, 11), err: "11 disks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disks, plan, err := DisksFromMounts(tc.mounts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(disks, tc.disks) {
				t.Errorf("disks %+v\nwant  %+v", disks, tc.disks)
			}
			if !reflect.DeepEqual(plan.Mounts, tc.plan) {
				t.Errorf("plan %+v\nwant %+v", plan.Mounts, tc.plan)
			}
		})
	}
	// Ten disks is the limit, not an error.
	if _, _, err := DisksFromMounts(repeat(mount.Mount{Type: "erofs", Source: "/l.erofs"}, 10)); err != nil {
		t.Errorf("10 disks: %v", err)
	}
}

func repeat(m mount.Mount, n int) []mount.Mount {
	out := make([]mount.Mount, n)
	for i := range out {
		out[i] = m
	}
	return out
}

func TestDiskFormat(t *testing.T) {
	for path, want := range map[string]string{"/a/merged.vmdk": "vmdk", "/a/X.VMDK": "vmdk", "/a/layer.erofs": "raw", "/a/rwlayer.img": "raw"} {
		if got := (Disk{Path: path}).format(); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
	if got := (Disk{Path: "/a.vmdk", Format: "raw"}).format(); got != "raw" {
		t.Errorf("explicit format ignored: %s", got)
	}
}

func TestPlanScript(t *testing.T) {
	erofs := func(d int) GuestMount {
		return GuestMount{Type: "erofs", Disk: d, Device: DeviceName(d), ReadOnly: true}
	}
	ext4 := func(d int) GuestMount { return GuestMount{Type: "ext4", Disk: d, Device: DeviceName(d)} }
	for _, tc := range []struct {
		name   string
		mounts []GuestMount
		want   []string // lines that must appear, in order
		err    string
	}{
		{"erofs + ext4", []GuestMount{erofs(0), ext4(1)}, []string{
			"mkdir -p /mnt/layers/0 && mount -t erofs -o ro /dev/vda /mnt/layers/0 || mount_failed",
			"mkdir -p /mnt/layers/1 && mount -t ext4 /dev/vdb /mnt/layers/1 || mount_failed",
			"mkdir -p /mnt/layers/1/upper /mnt/layers/1/work",
			"mount -t overlay overlay -o lowerdir=/mnt/layers/0,upperdir=/mnt/layers/1/upper,workdir=/mnt/layers/1/work /mnt/root",
		}, ""},
		{"two lowers in mount order (newest first)", []GuestMount{erofs(0), erofs(1), ext4(2)}, []string{
			"mount -t overlay overlay -o lowerdir=/mnt/layers/0:/mnt/layers/1,upperdir=/mnt/layers/2/upper,workdir=/mnt/layers/2/work /mnt/root",
		}, ""},
		{"single erofs", []GuestMount{erofs(0)}, []string{"mount --bind /mnt/layers/0 /mnt/root"}, ""},
		{"two erofs read-only", []GuestMount{erofs(0), erofs(1)}, []string{"mount -t overlay overlay -o ro,lowerdir=/mnt/layers/0:/mnt/layers/1 /mnt/root"}, ""},
		{"ext4 only", []GuestMount{ext4(0)}, []string{"mount --bind /mnt/layers/0/upper /mnt/root"}, ""},
		{"bind skipped", []GuestMount{{Type: "bind", Disk: -1, Unsupported: "nope"}, erofs(0)}, []string{"# mount 0: nope", "mount -t erofs -o ro /dev/vda /mnt/layers/1"}, ""},
		{"nothing usable", []GuestMount{{Type: "bind", Disk: -1, Unsupported: "x"}}, nil, "no mount"},
		{"ro ext4", []GuestMount{erofs(0), {Type: "ext4", Disk: 1, Device: "/dev/vdb", ReadOnly: true}}, nil, "read-only ext4"},
		{"two ext4", []GuestMount{ext4(0), ext4(1)}, nil, "second writable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := GuestMountPlan{Mounts: tc.mounts}.Script()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rest := s
			for _, line := range tc.want {
				i := strings.Index(rest, line)
				if i < 0 {
					t.Fatalf("script lacks (in order) %q:\n%s", line, s)
				}
				rest = rest[i:]
			}
		})
	}
}

func TestUnmountScript(t *testing.T) {
	p := GuestMountPlan{Mounts: []GuestMount{
		{Type: "erofs", Disk: 0, Device: "/dev/vda"},
		{Type: "bind", Disk: -1, Unsupported: "host path"},
		{Type: "ext4", Disk: 1, Device: "/dev/vdb"},
	}}
	want := "sync\numount /mnt/root 2>/dev/null\numount /mnt/layers/2 2>/dev/null\numount /mnt/layers/0 2>/dev/null\n"
	if got := p.UnmountScript(); got != want {
		t.Errorf("UnmountScript:\n%s\nwant:\n%s", got, want)
	}
}
