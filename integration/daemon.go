// Package integration holds the tests that drive the real binaries: a
// containerd-erofs daemon on a private root, containerd's client and ctr,
// erofsctl, the kernel and a qemu guest.
//
// This file is the daemon helper every end-to-end test shares:
//
//	d := integration.StartDaemon(t, integration.DaemonOptions{})   // hack/config.toml
//	c := d.Client(t)                                              // containerd client, closed at cleanup
//	ctx := d.Context(t)                                           // namespace "default", cancelled at cleanup
//	out, err := d.Ctr(t, "images", "ls")                          // bin/ctr against this daemon
//	d.Kill(t); d.Restart(t)                                       // crash and come back on the same root
//
// Each daemon gets its own directory (root/, state/, the gRPC, ttrpc and NRI
// sockets, config.toml, containerd.log), so daemons of parallel tests and a
// containerd already running on the host never meet. At cleanup the daemon
// is stopped with SIGTERM (SIGKILL after DaemonStopTimeout), leftover mounts
// under its directory are unmounted, FS_IMMUTABLE_FL is lifted (set_immutable)
// and the directory removed. When the test failed, the last lines of the
// daemon's log are written to the test log and the whole log is copied to
// KeptLogDir; while the test runs it is in the directory (LogPath).
//
// Binaries come from bin/ at the repository root (`make build`) when they
// are newer than every Go source of the module. If one is missing or stale,
// or EROFS_TEST_BUILD=1, it is built once per test process with `go build`
// into _output/testbin/, so `go test ./integration/` works on its own and
// never runs an old daemon.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/pelletier/go-toml/v2"

	"github.com/erofs-vm/containerd-erofs/integration/guest"
)

// Timeouts of the daemon helper. Generous: the test machine has 2 cores
// shared by many jobs, and a timeout here means a broken daemon, not a slow one.
var (
	// DaemonStartTimeout bounds the wait for the gRPC socket to serve.
	DaemonStartTimeout = 90 * time.Second
	// DaemonStopTimeout bounds the wait after SIGTERM before SIGKILL.
	DaemonStopTimeout = 30 * time.Second
)

// DaemonLogTail is how many lines of the daemon's log a failed test prints,
// after dropping the plugin-loading lines every start writes (about 70 of
// them): a CI report shows only the end of the output, and the test's own
// error must stay in it. The whole log is kept on failure (KeptLogDir).
const DaemonLogTail = 30

// KeptLogDir is where the whole log of a daemon whose test failed is
// copied before its directory goes: $EROFS_TEST_LOG_DIR, else
// _output/daemon-logs at the repository root.
func KeptLogDir() string {
	if d := os.Getenv("EROFS_TEST_LOG_DIR"); d != "" {
		return d
	}
	root, err := guest.RepoRoot()
	if err != nil {
		return filepath.Join(os.TempDir(), "containerd-erofs-daemon-logs")
	}
	return filepath.Join(root, "_output", "daemon-logs")
}

// startupNoise reports whether a log line is one of the messages of a
// daemon start that say nothing about a failure: one line per plugin,
// the routine skips of stock plugins, the CRI config dump. A skip of an
// erofs-vm plugin says why it did not load, so it stays.
func startupNoise(line string) bool {
	switch {
	case strings.Contains(line, `msg="loading plugin"`), strings.Contains(line, `msg="starting cri plugin"`):
		return true
	case strings.Contains(line, `msg="skip loading plugin"`):
		return !strings.Contains(line, "erofs-vm")
	}
	return false
}

// Plugin URIs of the erofs-vm plugins, as introspection and ctr name them.
const (
	SnapshotterURI = "io.containerd.snapshotter.v1.erofs-vm"
	DifferURI      = "io.containerd.differ.v1.erofs-vm"
)

// DaemonOptions configures StartDaemon.
type DaemonOptions struct {
	// Config is the daemon's TOML config. Empty means hack/config.toml, the
	// example operator config. Whatever it says, root, state and the socket
	// addresses are set to the daemon's private directory (flags --root,
	// --state, --address) and, unless the config sets it, the NRI socket too.
	Config string
	// LogLevel is passed as --log-level; empty means "info".
	LogLevel string
	// Env is added to the daemon's environment.
	Env []string
}

// Daemon is a running (or stopped) containerd-erofs process.
type Daemon struct {
	t    testing.TB
	opts DaemonOptions
	bin  string

	dir     string // private directory: root/, state/, sockets, config, log
	address string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current process has exited
	waitErr  error         // its exit status, valid once exited is closed
	served   bool          // the current process came up
	stopping bool          // we stopped or killed it: an exit is expected
}

// StartDaemon starts a containerd-erofs daemon with opts and waits until its
// gRPC API serves. It fails the test if the daemon does not come up,
// printing the tail of its log. Stopping and cleanup are registered with
// t.Cleanup.
func StartDaemon(t testing.TB, opts DaemonOptions) *Daemon {
	t.Helper()
	d, err := LaunchDaemon(t, opts)
	if err != nil {
		t.Fatalf("containerd-erofs did not start: %v\n%s", err, d.logTailText())
	}
	return d
}

// LaunchDaemon is StartDaemon for tests that expect the daemon to fail: it
// returns the daemon even when it did not come up (err says why: it exited,
// or timed out), so the test can read d.Log(). Cleanup is registered either way.
func LaunchDaemon(t testing.TB, opts DaemonOptions) (*Daemon, error) {
	t.Helper()
	bin := Binary(t, "containerd-erofs")
	dir, err := os.MkdirTemp("", "ced-") // short: a unix socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{t: t, opts: opts, bin: bin, dir: dir, address: filepath.Join(dir, "containerd.sock")}
	t.Cleanup(d.cleanup)

	cfg := opts.Config
	if cfg == "" {
		b, err := os.ReadFile(filepath.Join(RepoRoot(t), "hack", "config.toml"))
		if err != nil {
			t.Fatalf("read the example config: %v", err)
		}
		cfg = string(b)
	}
	cfg, err = daemonIsolateConfig(cfg, dir)
	if err != nil {
		t.Fatalf("daemon config: %v", err)
	}
	if err := os.WriteFile(d.ConfigPath(), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return d, d.start()
}

// daemonIsolateConfig points the paths of cfg that are not under root or
// state, and that no flag sets, into dir. Today that is the NRI socket,
// /var/run/nri/nri.sock by default, which CRI listens on.
func daemonIsolateConfig(cfg, dir string) (string, error) {
	var m map[string]any
	if err := toml.Unmarshal([]byte(cfg), &m); err != nil {
		return "", fmt.Errorf("parse TOML: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	pl, _ := m["plugins"].(map[string]any)
	if pl == nil {
		pl = map[string]any{}
		m["plugins"] = pl
	}
	nri, _ := pl["io.containerd.nri.v1.nri"].(map[string]any)
	if nri == nil {
		nri = map[string]any{}
		pl["io.containerd.nri.v1.nri"] = nri
	}
	if _, set := nri["socket_path"]; !set {
		nri["socket_path"] = filepath.Join(dir, "nri.sock")
	}
	out, err := toml.Marshal(m)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// start launches the process on d's directory and waits until it serves.
func (d *Daemon) start() error {
	level := d.opts.LogLevel
	if level == "" {
		level = "info"
	}
	logFile, err := os.OpenFile(d.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.bin,
		"--config", d.ConfigPath(),
		"--root", d.Root(),
		"--state", d.State(),
		"--address", d.address,
		"--log-level", level,
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), d.opts.Env...)
	// Its own process group: a signal for the test binary (^C) does not
	// reach it before cleanup stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(logFile, "=== integration: %s\n", strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", d.bin, err)
	}
	exited := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.exited, d.waitErr, d.served, d.stopping = cmd, exited, nil, false, false
	d.mu.Unlock()
	go func() {
		err := cmd.Wait()
		d.mu.Lock()
		d.waitErr = err
		d.mu.Unlock()
		logFile.Close()
		close(exited)
	}()
	if err := d.waitServing(exited); err != nil {
		return err
	}
	d.mu.Lock()
	d.served = true
	d.mu.Unlock()
	return nil
}

// waitServing polls the gRPC socket until containerd answers IsServing, the
// process exits, or DaemonStartTimeout passes.
func (d *Daemon) waitServing(exited chan struct{}) error {
	deadline := time.Now().Add(DaemonStartTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("containerd-erofs exited during startup: %v", d.exitErr())
		default:
		}
		if _, err := os.Stat(d.address); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := client.New(d.address, client.WithTimeout(5*time.Second))
			if err == nil {
				ok, err := c.IsServing(ctx)
				c.Close()
				cancel()
				if err == nil && ok {
					return nil
				}
			} else {
				cancel()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd-erofs not serving on %s after %v", d.address, DaemonStartTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *Daemon) exitErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waitErr
}

// Address is the daemon's gRPC socket.
func (d *Daemon) Address() string { return d.address }

// Dir is the daemon's private directory.
func (d *Daemon) Dir() string { return d.dir }

// Root is containerd's root (--root).
func (d *Daemon) Root() string { return filepath.Join(d.dir, "root") }

// State is containerd's state directory (--state).
func (d *Daemon) State() string { return filepath.Join(d.dir, "state") }

// SnapshotterRoot is the erofs-vm snapshotter's root when the config leaves
// root_path empty.
func (d *Daemon) SnapshotterRoot() string { return filepath.Join(d.Root(), SnapshotterURI) }

// ConfigPath is the config file the daemon runs with (DaemonOptions.Config
// plus the isolated paths).
func (d *Daemon) ConfigPath() string { return filepath.Join(d.dir, "config.toml") }

// LogPath is the daemon's log (stdout and stderr, every start appended).
func (d *Daemon) LogPath() string { return filepath.Join(d.dir, "containerd.log") }

// Log returns the daemon's whole log so far.
func (d *Daemon) Log() string {
	b, err := os.ReadFile(d.LogPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Running reports whether the daemon process is alive.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	exited := d.exited
	d.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Client returns a containerd client connected to the daemon, closed at
// cleanup. Calls need a namespace: use d.Context(t).
func (d *Daemon) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(d.address, client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("connect to containerd-erofs at %s: %v", d.address, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Context returns a context in namespace "default", cancelled at cleanup.
func (d *Daemon) Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "default"))
	t.Cleanup(cancel)
	return ctx
}

// Ctr runs bin/ctr against the daemon (namespace "default" unless args set
// one) and returns its combined output.
func (d *Daemon) Ctr(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(Binary(t, "ctr"), append([]string{"--address", d.address}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

// Stop sends SIGTERM and waits for the daemon to exit (SIGKILL after
// DaemonStopTimeout). It fails the test if the daemon had to be killed or
// exited with an error: a clean shutdown is part of what is tested.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if err := d.stop(); err != nil {
		t.Errorf("stop containerd-erofs: %v", err)
	}
}

func (d *Daemon) stop() error {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil // already gone: cleanup reports an exit nobody asked for
	default:
	}
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-exited:
	case <-time.After(DaemonStopTimeout):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("did not exit %v after SIGTERM; killed", DaemonStopTimeout)
	}
	if err := d.exitErr(); err != nil {
		return fmt.Errorf("exit after SIGTERM: %w", err)
	}
	return nil
}

// Kill sends SIGKILL and waits: a crash, for recovery tests. Restart
// brings the daemon back on the same root and state.
func (d *Daemon) Kill(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		t.Fatal("Kill: daemon never started")
	}
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill containerd-erofs: %v", err)
	}
	<-exited
}

// Restart stops the daemon if it runs (SIGTERM) and starts it again with
// the same config, root, state and address, waiting until it serves.
// Clients made before keep working only if they reconnect: make new ones.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	if d.Running() {
		d.Stop(t)
	}
	if err := d.start(); err != nil {
		t.Fatalf("restart containerd-erofs: %v\n%s", err, d.logTailText())
	}
}

// logTailText is the last DaemonLogTail lines of the log that are not
// startup noise, framed for a test log.
func (d *Daemon) logTailText() string {
	if d == nil {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(d.Log(), "\n"), "\n") {
		if !startupNoise(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) > DaemonLogTail {
		lines = lines[len(lines)-DaemonLogTail:]
	}
	return fmt.Sprintf("--- last %d lines of %s (plugin loading left out) ---\n%s\n--- end of log ---", len(lines), d.LogPath(), strings.Join(lines, "\n"))
}

// keepLog copies the whole log into KeptLogDir and returns the copy's path.
func (d *Daemon) keepLog() (string, error) {
	dir := KeptLogDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(d.t.Name()) + "-" + filepath.Base(d.dir) + ".log"
	dst := filepath.Join(dir, name)
	return dst, os.WriteFile(dst, []byte(d.Log()), 0o644)
}

// cleanup stops the daemon, prints its log tail if the test failed, and
// removes its directory (unmounting and lifting immutable flags first).
func (d *Daemon) cleanup() {
	d.mu.Lock()
	crashed := d.served && !d.stopping && d.exited != nil
	exited := d.exited
	d.mu.Unlock()
	if crashed {
		select {
		case <-exited:
			// A daemon that dies under a test (panic, fatal error) fails it
			// even if the test's own calls happened to succeed.
			d.t.Errorf("containerd-erofs exited during the test without being stopped: %v", d.exitErr())
		default:
		}
	}
	if err := d.stop(); err != nil {
		d.t.Errorf("stop containerd-erofs at cleanup: %v", err)
	}
	if d.t.Failed() {
		d.t.Log(d.logTailText())
		if p, err := d.keepLog(); err != nil {
			d.t.Logf("keep the daemon log: %v", err)
		} else {
			d.t.Logf("whole daemon log kept in %s", p)
		}
	}
	if err := daemonRemoveAll(d.dir); err != nil {
		d.t.Errorf("remove daemon dir: %v", err)
	}
}

// daemonRemoveAll removes dir after unmounting whatever is still mounted
// below it (containerd's mount manager activates mounts under state/) and
// clearing FS_IMMUTABLE_FL, which set_immutable puts on layer files.
func daemonRemoveAll(dir string) error {
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var mps []string
		for _, line := range strings.Split(string(mi), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
				mps = append(mps, f[4])
			}
		}
		for i := len(mps) - 1; i >= 0; i-- { // deepest (latest) first
			syscall.Unmount(mps[i], syscall.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	// chattr -R exits non-zero on entries without flag support (symlinks,
	// devices) even when it cleared every flag: only the retry decides.
	_ = exec.Command("chattr", "-R", "-f", "-i", dir).Run()
	return os.RemoveAll(dir)
}

var (
	repoRootOnce sync.Once
	repoRoot     string
	repoRootErr  error
)

// RepoRoot returns the repository root: the first directory upwards from
// the working directory that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	repoRootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			repoRootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				repoRoot = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				repoRootErr = errors.New("no go.mod above the working directory")
				return
			}
			dir = parent
		}
	})
	if repoRootErr != nil {
		t.Fatalf("repository root: %v", repoRootErr)
	}
	return repoRoot
}

// binarySources maps the binaries tests use to their Go packages.
var binarySources = map[string]string{
	"containerd-erofs": "./cmd/containerd-erofs",
	"ctr":              "github.com/containerd/containerd/v2/cmd/ctr",
	"erofsctl":         "./cmd/erofsctl",
}

var (
	buildMu   sync.Mutex
	builtBins = map[string]string{}
)

// Binary returns the path of one of our binaries ("containerd-erofs",
// "ctr", "erofsctl"): bin/<name> at the repository root when `make build`
// made it after the last change to the module's Go files (so `make test`
// runs exactly what it built and stamped); otherwise, or with
// EROFS_TEST_BUILD=1, it is built once per test process into
// _output/testbin/ (go build is incremental: cheap when nothing changed). A
// stale bin/ is never used: a test of code you just changed must not
// silently run yesterday's daemon.
func Binary(t testing.TB, name string) string {
	t.Helper()
	pkg, ok := binarySources[name]
	if !ok {
		t.Fatalf("Binary: unknown binary %q", name)
	}
	root := RepoRoot(t)
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builtBins[name]; ok {
		return p
	}
	p := filepath.Join(root, "bin", name)
	why := "EROFS_TEST_BUILD=1"
	if os.Getenv("EROFS_TEST_BUILD") != "1" {
		why = binaryStale(root, p)
		if why == "" {
			builtBins[name] = p
			return p
		}
	}
	out := filepath.Join(root, "_output", "testbin", name)
	t.Logf("building %s into %s (%s)", pkg, out, why)
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	builtBins[name] = out
	return out
}

// binaryStale says why bin is not usable: missing, or older than a Go
// source, go.mod or go.sum of the module (outside _output/ and hidden
// dirs). "" means bin is current.
func binaryStale(root, bin string) string {
	st, err := os.Stat(bin)
	if err != nil {
		return "no " + bin + " from `make build`"
	}
	var newer string
	_ = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if newer != "" {
			return filepath.SkipAll
		}
		if err != nil {
			return nil // unreadable: not ours to judge
		}
		if e.IsDir() {
			if n := e.Name(); p != root && (strings.HasPrefix(n, ".") || n == "_output" || n == "bin" || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") || n == "go.mod" || n == "go.sum" {
			if info, err := e.Info(); err == nil && info.ModTime().After(st.ModTime()) {
				newer = p
			}
		}
		return nil
	})
	if newer != "" {
		return bin + " is older than " + newer
	}
	return ""
}
