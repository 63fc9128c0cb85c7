// Package commitgate is the lock a VM runtime and erofs-vm share over a
// container's writable layer, rwlayer.img (docs/design.md §11).
//
// A running VM owns that file: QEMU opened it with file.locking=on and holds
// byte-range OFD locks on it for as long as it runs, paused included. Reading
// it then would read an ext4 the guest is still writing: a layer committed
// torn. So before erofs-vm reads it (Commit, Compare of an active snapshot)
// it takes Lock, and holds it for the whole read; a held lock means "the
// container is still running", which is the caller's precondition to fix.
//
// A runtime that paused the VM after freezing the guest's ext4 (FIFREEZE:
// journal flushed, no write in flight) says so with the label Quiesced
// names; the caller then reads without the gate, and never stores the label.
package commitgate

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// QuiescedLabel on a Commit (snapshots.WithLabels) or a Compare
// (diff.WithLabels), with the value "true", says the VM is paused and its
// ext4 frozen: read without the gate. It is an instruction for that one
// call and is never stored on the snapshot or the content it makes.
const QuiescedLabel = "containerd.io/snapshot/erofs.quiesced"

// Quiesced reports whether labels carry QuiescedLabel=true.
func Quiesced(labels map[string]string) bool { return labels[QuiescedLabel] == "true" }

// Lock takes the gate on path: flock(LOCK_EX|LOCK_NB) and an OFD write lock
// over the whole file (F_OFD_SETLK, F_WRLCK, start 0, length 0). The OFD
// lock is what sees QEMU: its locks are byte-range OFD locks, which flock
// does not conflict with; flock covers runtimes that use it. If either is
// held elsewhere the error wraps errdefs.ErrFailedPrecondition and says
// the container is still running. unlock releases both; it must be called.
func Lock(path string) (unlock func(), err error) {
	// O_RDWR: a write lock needs a descriptor open for writing. Nothing is
	// ever written through it.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("commit gate: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, running(path, "flock")
		}
		return nil, fmt.Errorf("commit gate: flock %s: %w", path, err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close() // drops the flock too
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, running(path, "OFD lock")
		}
		return nil, fmt.Errorf("commit gate: OFD lock on %s: %w", path, err)
	}
	// Closing the only descriptor releases the flock and the OFD lock.
	return func() { f.Close() }, nil
}

func running(path, what string) error {
	return fmt.Errorf("container is still running: stop it before committing (%s is locked by the VM: %s held), or pause it with its ext4 frozen and pass %s=true: %w",
		path, what, QuiescedLabel, errdefs.ErrFailedPrecondition)
}
