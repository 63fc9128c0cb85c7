package commitgate

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// holder is something else holding a lock on the file, the way a VM
// runtime would.
type holder func(t *testing.T, path string) (release func())

func ofdRangeLock(kind int16) holder {
	return func(t *testing.T, path string) func() {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// QEMU's file.locking locks single bytes at offsets above 100.
		lk := unix.Flock_t{Type: kind, Whence: 0, Start: 201, Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
		return func() { f.Close() }
	}
}

func flockHolder(t *testing.T, path string) func() {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

func TestLock(t *testing.T) {
	cases := []struct {
		name string
		hold holder // nil: nobody else holds anything
		want string // substring of the error; "" for success
	}{
		{"free", nil, ""},
		{"ofd-read-byte", ofdRangeLock(unix.F_RDLCK), "OFD lock"},
		{"ofd-write-byte", ofdRangeLock(unix.F_WRLCK), "OFD lock"},
		{"flock", flockHolder, "flock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rwlayer.img")
			if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.hold != nil {
				release := tc.hold(t, path)
				defer release()
			}
			unlock, err := Lock(path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Lock on a free file: %v", err)
				}
				// Held now: a second taker is refused, then admitted
				// once the first unlocks.
				if _, err := Lock(path); !errdefs.IsFailedPrecondition(err) {
					t.Fatalf("second Lock while held: %v, want FailedPrecondition", err)
				}
				unlock()
				again, err := Lock(path)
				if err != nil {
					t.Fatalf("Lock after unlock: %v", err)
				}
				again()
				return
			}
			if err == nil {
				unlock()
				t.Fatal("Lock succeeded while another holder had the file")
			}
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "container is still running") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want FailedPrecondition naming %q", err, tc.want)
			}
		})
	}
}

// TestLockAgainstQEMU starts a real QEMU (stopped before the first
// instruction, no guest) with the file as a drive with file.locking=on, the
// way spinbox attaches a container's writable layer, and checks the gate
// refuses while QEMU runs and opens once it exited.
func TestLockAgainstQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (hack/install-deps.sh installs it)")
	}
	path := filepath.Join(t.TempDir(), "rwlayer.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(qemu, "-accel", "tcg", "-machine", "none", "-S", "-display", "none", "-nodefaults",
		"-drive", "file="+path+",format=raw,if=none,id=rw,file.locking=on")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := sync.OnceFunc(func() {
		cmd.Process.Kill()
		<-exited
	})
	defer stop()
	// QEMU takes its locks while it opens the drive: wait for them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		unlock, err := Lock(path)
		if err != nil {
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "OFD lock") {
				t.Fatalf("against QEMU: %v, want FailedPrecondition from its OFD locks", err)
			}
			break
		}
		unlock()
		select {
		case err := <-exited:
			t.Fatalf("QEMU exited before locking the drive: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("QEMU never locked the drive")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	unlock, err := Lock(path)
	if err != nil {
		t.Fatalf("Lock after QEMU exited: %v", err)
	}
	unlock()
}

func TestQuiesced(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{QuiescedLabel: "true"}, true},
		{map[string]string{QuiescedLabel: "false"}, false},
		{map[string]string{QuiescedLabel: "yes"}, false},
		{map[string]string{"other": "true"}, false},
		{nil, false},
	} {
		if got := Quiesced(tc.labels); got != tc.want {
			t.Errorf("Quiesced(%v) = %v, want %v", tc.labels, got, tc.want)
		}
	}
}
