package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// Standalone is a containerd-erofs daemon run outside `go test`, for the
// demo: the same private layout as Daemon (root/, state/, sockets,
// config.toml, containerd.log under one directory, the NRI socket moved
// there too) without a testing.TB. Close stops it and removes everything.
type Standalone struct {
	Dir     string // private directory
	Address string // gRPC socket

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Root is containerd's root (--root).
func (s *Standalone) Root() string { return filepath.Join(s.Dir, "root") }

// SnapshotterRoot is the erofs-vm snapshotter's root (root_path empty).
func (s *Standalone) SnapshotterRoot() string { return filepath.Join(s.Root(), SnapshotterURI) }

// ConfigPath is the config the daemon runs with.
func (s *Standalone) ConfigPath() string { return filepath.Join(s.Dir, "config.toml") }

// LogPath is the daemon's log.
func (s *Standalone) LogPath() string { return filepath.Join(s.Dir, "containerd.log") }

// PIDPath holds the daemon's pid while it runs, for a caller's last-resort
// cleanup if this process dies without Close (hack/demo.sh's trap).
func (s *Standalone) PIDPath() string { return filepath.Join(s.Dir, "containerd.pid") }

// StartStandalone starts bin with config (TOML; root, state and address
// are forced into dir, which must exist and be empty enough to own) and
// waits up to DaemonStartTimeout for its gRPC API. On error the daemon is
// stopped; the directory is left for the caller to remove (Close does).
func StartStandalone(ctx context.Context, bin, config, dir string) (*Standalone, error) {
	s := &Standalone{Dir: dir, Address: filepath.Join(dir, "containerd.sock")}
	cfg, err := daemonIsolateConfig(config, dir)
	if err != nil {
		return s, fmt.Errorf("daemon config: %w", err)
	}
	if err := os.WriteFile(s.ConfigPath(), []byte(cfg), 0o644); err != nil {
		return s, err
	}
	logFile, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return s, err
	}
	s.cmd = exec.Command(bin, "--config", s.ConfigPath(), "--root", s.Root(),
		"--state", filepath.Join(dir, "state"), "--address", s.Address, "--log-level", "info")
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Its own process group: ^C reaches the caller, which stops the
	// daemon in order instead of the terminal killing it mid-write.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return s, fmt.Errorf("start %s: %w", bin, err)
	}
	_ = os.WriteFile(s.PIDPath(), []byte(strconv.Itoa(s.cmd.Process.Pid)+"\n"), 0o644)
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	if err := s.waitServing(ctx); err != nil {
		s.stop()
		return s, err
	}
	return s, nil
}

func (s *Standalone) waitServing(ctx context.Context) error {
	deadline := time.Now().Add(DaemonStartTimeout)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("containerd-erofs exited during startup (%v); log: %s", s.waitErr, s.LogPath())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if _, err := os.Stat(s.Address); err == nil {
			if c, err := client.New(s.Address, client.WithTimeout(5*time.Second)); err == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				ok, err := c.IsServing(cctx)
				cancel()
				c.Close()
				if err == nil && ok {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd-erofs not serving on %s after %v; log: %s", s.Address, DaemonStartTimeout, s.LogPath())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LogTail returns the last n lines of the daemon's log.
func (s *Standalone) LogTail(n int) string {
	b, err := os.ReadFile(s.LogPath())
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop sends SIGTERM and waits (SIGKILL after DaemonStopTimeout). It
// returns an error if the daemon had to be killed or exited non-zero.
func (s *Standalone) Stop() error { return s.stop() }

func (s *Standalone) stop() error {
	if s.cmd == nil || s.exited == nil {
		return nil
	}
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-s.exited:
	case <-time.After(DaemonStopTimeout):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		return fmt.Errorf("containerd-erofs did not exit %v after SIGTERM; killed", DaemonStopTimeout)
	}
	_ = os.Remove(s.PIDPath())
	if s.waitErr != nil {
		return fmt.Errorf("containerd-erofs exit after SIGTERM: %w", s.waitErr)
	}
	return nil
}

// Close stops the daemon and removes its directory: whatever is still
// mounted below it is unmounted and FS_IMMUTABLE_FL (set_immutable) lifted
// first, as for the test daemons.
func (s *Standalone) Close() error {
	err := s.stop()
	return errors.Join(err, daemonRemoveAll(s.Dir))
}
