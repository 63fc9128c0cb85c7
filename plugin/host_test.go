package plugin

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/containerd/plugin"

	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// pathWith returns a lookPath that finds only the named programs.
func pathWith(found ...string) func(string) (string, error) {
	return func(file string) (string, error) {
		for _, f := range found {
			if f == file {
				return "/usr/sbin/" + file, nil
			}
		}
		return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
	}
}

func TestSnapshotterSkip(t *testing.T) {
	block := snapshotter.Config{CommitMode: snapshotter.CommitModeBlock}
	overlay := snapshotter.Config{CommitMode: snapshotter.CommitModeOverlay}
	tests := []struct {
		name     string
		h        host
		cfg      snapshotter.Config
		wantSkip string // substring of the skip reason; "" means runs
	}{
		{"linux root block with mkfs.ext4", host{"linux", 0, pathWith("mkfs.ext4")}, block, ""},
		{"linux root overlay without mkfs.ext4", host{"linux", 0, pathWith()}, overlay, ""},
		{"linux root block without mkfs.ext4", host{"linux", 0, pathWith()}, block, "mkfs.ext4"},
		{"linux not root", host{"linux", 1000, pathWith("mkfs.ext4")}, block, "needs root (running as uid 1000)"},
		{"linux not root overlay", host{"linux", 1000, pathWith()}, overlay, "needs root"},
		{"darwin", host{"darwin", 0, pathWith("mkfs.ext4")}, block, "needs Linux, this is darwin"},
		{"windows", host{"windows", -1, pathWith()}, overlay, "needs Linux, this is windows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.snapshotterSkip(tt.cfg)
			checkSkip(t, err, tt.wantSkip)
		})
	}
}

func TestDifferSkip(t *testing.T) {
	tests := []struct {
		name     string
		h        host
		wantSkip string
	}{
		{"linux root", host{"linux", 0, pathWith()}, ""},
		// Not root still runs: the diff service needs the differ loaded
		// whenever it is in its default list.
		{"linux not root", host{"linux", 1000, pathWith()}, ""},
		{"freebsd", host{"freebsd", 0, pathWith()}, "needs Linux, this is freebsd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkSkip(t, tt.h.differSkip(), tt.wantSkip)
		})
	}
}

func checkSkip(t *testing.T, err error, wantSkip string) {
	t.Helper()
	if wantSkip == "" {
		if err != nil {
			t.Fatalf("got %v, want no skip", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no skip, want one mentioning %q", wantSkip)
	}
	if !errors.Is(err, plugin.ErrSkipPlugin) {
		t.Errorf("error %q does not wrap plugin.ErrSkipPlugin: containerd would fail the daemon instead of skipping", err)
	}
	if !strings.Contains(err.Error(), wantSkip) {
		t.Errorf("error %q does not mention %q", err, wantSkip)
	}
}

// TestCurrentHost pins what the real machine looks like to the plugin, so a
// broken currentHost cannot make every real daemon skip silently.
func TestCurrentHost(t *testing.T) {
	h := currentHost()
	if h.goos == "" || h.lookPath == nil {
		t.Fatalf("currentHost() = %+v: incomplete", h)
	}
	if h.goos == "linux" && h.euid == 0 {
		if _, err := exec.LookPath("mkfs.ext4"); err == nil {
			if err := h.snapshotterSkip(snapshotter.Config{CommitMode: snapshotter.CommitModeBlock}); err != nil {
				t.Errorf("this Linux root host with mkfs.ext4 skips the snapshotter: %v", err)
			}
		}
	}
}
