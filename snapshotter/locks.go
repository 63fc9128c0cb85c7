package snapshotter

import "github.com/moby/locker"

// idLocks serialises the file work of one snapshot id (Commit, Remove)
// while leaving other ids free. moby/locker (the per-name mutex set
// containerd's own snapshotters and moby use) creates a mutex on demand and
// drops it when nobody holds or waits for it; its zero value is ready.
type idLocks struct {
	l locker.Locker
}

// lock locks id and returns the function that unlocks it.
func (k *idLocks) lock(id string) func() {
	k.l.Lock(id)
	return func() {
		// Unlock fails only for a name that is not locked, which the
		// returned closure cannot be called for.
		_ = k.l.Unlock(id)
	}
}
