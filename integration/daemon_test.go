package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDaemonHelper exercises the helper end-to-end tests build on: private
// paths, ctr against the daemon, a crash (SIGKILL) and a restart on the
// same root, a clean SIGTERM stop, and removal of the directory.
func TestDaemonHelper(t *testing.T) {
	requireRoot(t)
	// Registered first, so it runs after the daemon's own cleanup.
	var dir string
	t.Cleanup(func() {
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			t.Errorf("daemon dir %s not removed at cleanup (%v)", dir, err)
		}
	})
	d := StartDaemon(t, DaemonOptions{})
	dir = d.Dir()
	for _, p := range []string{d.Address(), d.Root(), d.State(), d.ConfigPath(), d.LogPath()} {
		if !strings.HasPrefix(p, d.Dir()+"/") {
			t.Errorf("%s is outside the daemon's directory %s", p, d.Dir())
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%v", err)
		}
	}
	cfg, err := os.ReadFile(d.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), d.Dir()+"/nri.sock") {
		t.Errorf("NRI socket not isolated in %s:\n%s", d.ConfigPath(), cfg)
	}

	if out, err := d.Ctr(t, "version"); err != nil || !strings.Contains(out, "Server:") {
		t.Fatalf("ctr version: %v\n%s", err, out)
	}

	d.Kill(t)
	if d.Running() {
		t.Fatal("running after Kill")
	}
	d.Restart(t)
	if !d.Running() {
		t.Fatal("not running after Restart")
	}
	if ok, err := d.Client(t).IsServing(d.Context(t)); err != nil || !ok {
		t.Fatalf("IsServing after restart = %v, %v", ok, err)
	}
	if n := strings.Count(d.Log(), "=== integration: "); n != 2 {
		t.Errorf("log shows %d starts, want 2", n)
	}

	d.Stop(t)
	if d.Running() {
		t.Fatal("running after Stop")
	}
}

// TestDaemonRemoveAllImmutable: set_immutable leaves FS_IMMUTABLE_FL on
// layer files, and a test daemon's cleanup must still remove its
// directory, or every run would leave a root behind.
func TestDaemonRemoveAllImmutable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set FS_IMMUTABLE_FL")
	}
	dir := filepath.Join(t.TempDir(), "daemon")
	layer := filepath.Join(dir, "root", "snapshots", "1")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"layer.erofs", "fsmeta.erofs"} {
		p := filepath.Join(layer, f)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
			t.Fatalf("chattr +i %s: %v %s (the test cannot show anything without the flag)", p, err, out)
		}
	}
	if err := os.Remove(filepath.Join(layer, "layer.erofs")); err == nil {
		t.Fatal("removed an immutable file: the flag did not take")
	}
	if err := daemonRemoveAll(dir); err != nil {
		t.Fatalf("daemonRemoveAll: %v", err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still exists after daemonRemoveAll: %v", dir, err)
	}
}

// TestStartupNoise: the failed-test log tail leaves out the lines every
// daemon start writes, and keeps what can explain a failure.
func TestStartupNoise(t *testing.T) {
	for _, tc := range []struct {
		line  string
		noise bool
	}{
		{`level=info msg="loading plugin" id=io.containerd.grpc.v1.diff type=io.containerd.grpc.v1`, true},
		{`level=info msg="skip loading plugin" error="skip plugin" id=io.containerd.server.v1.debug type=io.containerd.server.v1`, true},
		{`level=info msg="starting cri plugin" config="{...}"`, true},
		{`level=info msg="skip loading plugin" error="erofs-vm: mkfs.ext4 not found" id=io.containerd.snapshotter.v1.erofs-vm`, false},
		{`level=warning msg="snapshot garbage collection failed" error="boom" snapshotter=erofs-vm`, false},
		{`level=info msg="containerd successfully booted in 0.013608s"`, false},
		{`panic: runtime error: index out of range`, false},
	} {
		if got := startupNoise(tc.line); got != tc.noise {
			t.Errorf("startupNoise(%q) = %v, want %v", tc.line, got, tc.noise)
		}
	}
}
