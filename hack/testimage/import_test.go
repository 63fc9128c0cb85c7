package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// daemonBinaries returns the containerd and ctr to import with: $EROFS_CONTAINERD
// and $EROFS_CTR when set (e.g. a stock containerd), else the repo's bin/.
func daemonBinaries(t *testing.T) (string, string) {
	t.Helper()
	root := repoRoot(t)
	daemon, ctr := os.Getenv("EROFS_CONTAINERD"), os.Getenv("EROFS_CTR")
	if daemon == "" {
		daemon = filepath.Join(root, "bin/containerd-erofs")
	}
	if ctr == "" {
		ctr = filepath.Join(root, "bin/ctr")
	}
	for _, b := range []string{daemon, ctr} {
		if _, err := os.Stat(b); err != nil {
			msg := "daemon binaries not built: run `make build` (or set EROFS_CONTAINERD/EROFS_CTR): " + err.Error()
			if os.Getenv("EROFS_REQUIRE_ASSETS") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return daemon, ctr
}

// TestImportWithContainerd imports both archives into a private containerd
// with `ctr images import --snapshotter overlayfs` (containerd's own
// unpacker and walking differ) and checks the names and the unpacked
// snapshot chain: the archives work for the real consumer, not only for our
// verifier.
func TestImportWithContainerd(t *testing.T) {
	requireRoot(t)
	dir := imageAssets(t)
	daemon, ctrBin := daemonBinaries(t)

	tmp := t.TempDir()
	sock := filepath.Join(tmp, "sock")
	cfg := filepath.Join(tmp, "config.toml")
	must(t, "config", os.WriteFile(cfg, []byte(`version = 3
root = "`+tmp+`/root"
state = "`+tmp+`/state"
[grpc]
  address = "`+sock+`"
`), 0o644))
	logf, err := os.Create(filepath.Join(tmp, "daemon.log"))
	must(t, "log", err)
	cmd := exec.Command(daemon, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, "start "+daemon, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		unmountUnder(t, tmp)
		logf.Close()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 300 {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not create %s in 30 s:\n%s", sock, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctr := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ctrBin, append([]string{"-a", sock}, args...)...).CombinedOutput()
		if err != nil {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("ctr %v: %v\n%s\ndaemon log:\n%s", args, err, out, log)
		}
		return string(out)
	}
	ctr("images", "import", "--snapshotter", "overlayfs", filepath.Join(dir, "debian-3layer.oci.tar"))
	ctr("images", "import", "--snapshotter", "overlayfs", filepath.Join(dir, "debian-3layer-zstd.oci.tar"))
	names := ctr("images", "ls", "-q")
	for _, want := range []string{"docker.io/library/erofs-test:3layer", "docker.io/library/erofs-test:3layer-zstd"} {
		if !strings.Contains("\n"+names, "\n"+want+"\n") {
			t.Errorf("ctr images ls -q lacks %s:\n%s", want, names)
		}
	}
	// Both archives carry the same diff IDs: one chain of 3 committed snapshots.
	committed := 0
	sc := bufio.NewScanner(strings.NewReader(ctr("snapshots", "--snapshotter", "overlayfs", "ls")))
	for sc.Scan() {
		if strings.HasSuffix(strings.TrimSpace(sc.Text()), "Committed") {
			committed++
		}
	}
	if committed != 3 {
		t.Errorf("%d committed overlayfs snapshots, want 3", committed)
	}
}

// unmountUnder unmounts whatever the daemon left mounted below dir, deepest
// first, so t.TempDir's removal never walks into a mount.
func unmountUnder(t *testing.T, dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("mountinfo: %v", err)
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mounts[i], err)
		}
	}
}
