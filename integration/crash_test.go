package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// crashStress selects the long crash run (also env EROFS_STRESS=1, which
// `make stress` sets).
var crashStress = flag.Bool("stress", false, "run the long crash-consistency variant (as EROFS_STRESS=1)")

// Crash harness sizes. The default run keeps `make test` short; the stress
// run is what finds rare windows. EROFS_CRASH_ITERATIONS overrides both,
// EROFS_CRASH_SEED replays a run (the seed is logged).
const (
	crashIterations       = 50
	crashStressIterations = 400
)

// crashOps are the operations the daemon is killed in.
const (
	opUnpack = "unpack" // the client's image.Unpack of the 3-layer image (Apply + Commit per layer)
	opCommit = "commit" // Commit of a writable snapshot whose rwlayer holds changes (conversion, fsmeta, VMDK)
	opRemove = "remove" // Remove of every snapshot of the namespace, children first, then GC (erofs-vm's Remove runs there)
	opGC     = "gc"     // image delete with a synchronous GC
	// opFirstUse is a View of a committed snapshot whose merged disk was
	// never built: the build (fsmeta, layers.manifest, VMDK) runs under
	// the kill (docs/design.md §4).
	opFirstUse = "first-use"
)

// crashRun is the state of one harness run.
type crashRun struct {
	t      *testing.T
	d      *Daemon
	c      *client.Client
	rng    *rand.Rand
	oracle []rcTree
	chain  []string
	seq    int // names user snapshots

	// window is how long each operation takes uncrashed; kills land
	// uniformly in [0, 1.25*window) (2*window for unpack).
	window map[string]time.Duration
	// expect holds the trees of committed user snapshots by key.
	expect map[string]rcTree
	// verified: committed snapshot dirs already compared with the oracle
	// (layer files are immutable once committed).
	verified map[string]bool

	// pending is the writable snapshot prepareCommit made for opCommit.
	pending *pendingCommit
	// firstUse is the parent opFirstUse views, chosen before the kill.
	firstUse string

	stats map[string]int
	// step names what the harness is doing, for failure messages;
	// failures are repeated at the very end of the test's output.
	step     string
	failures []string
}

// errorf fails the test with msg, tagged with the current step.
func (r *crashRun) errorf(format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf("%s: %s", r.step, fmt.Sprintf(format, args...))
	r.failures = append(r.failures, msg)
	r.t.Error(msg)
}

// fatalf is errorf, then stops the test.
func (r *crashRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.errorf(format, args...)
	r.t.FailNow()
}

const (
	crashNS      = "crash"
	crashProbeNS = "probe"
	crashLease   = "crash-lease"
	crashProbe   = "docker.io/library/crash-probe:latest"
)

func (r *crashRun) ctx() context.Context { return namespaced(r.d.Context(r.t), crashNS) }

func (r *crashRun) leased() context.Context { return leases.WithLease(r.ctx(), crashLease) }

// TestCrashConsistency kills the daemon (SIGKILL) at seeded random points
// while it unpacks, commits a writable snapshot with changes, removes
// snapshots and garbage-collects a deleted image, and after every restart
// checks: the snapshotter's metastore and its files agree (rcCheckStore),
// every committed snapshot reads back (our reader, a rotating sample of
// file contents, all metadata) equal to the oracle computed from the layer
// tars, or for a container layer to the oracle plus the changes written;
// a commit cut by the crash succeeds when retried; a fresh unpack
// succeeds; every 10th iteration a kernel mount of a committed snapshot
// equals the oracle in full. At the end a GC over everything leaves only
// what is still referenced.
func TestCrashConsistency(t *testing.T) {
	differRequireRoot(t)
	iterations := crashIterations
	if *crashStress || os.Getenv("EROFS_STRESS") == "1" {
		iterations = crashStressIterations
	}
	if v := os.Getenv("EROFS_CRASH_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("EROFS_CRASH_ITERATIONS=%q: %v", v, err)
		}
		iterations = n
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("EROFS_CRASH_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("EROFS_CRASH_SEED=%q: %v", v, err)
		}
		seed = n
	}
	// The seed fixes the operations and the kill delays; where a kill
	// lands in the daemon's work still depends on the machine's load.
	t.Logf("crash harness: %d iterations, seed %d (replay with EROFS_CRASH_SEED=%d)", iterations, seed, seed)

	archive := differAsset(t, "debian-3layer.oci.tar")
	r := &crashRun{
		t: t, rng: rand.New(rand.NewSource(seed)),
		oracle:   rcOracle(t, rcLayerTars(t)),
		window:   map[string]time.Duration{},
		expect:   map[string]rcTree{},
		verified: map[string]bool{},
		stats:    map[string]int{},
		step:     "setup",
	}
	// Registered before the daemon's cleanup, so it runs after it: the
	// failures come last, below the daemon's log tail, where a CI report
	// that keeps only the end of the output still shows them.
	t.Cleanup(func() {
		if len(r.failures) > 0 {
			t.Logf("crash harness failures (seed %d):\n  %s", seed, strings.Join(r.failures, "\n  "))
		}
	})
	r.d = StartDaemon(t, DaemonOptions{})
	r.c = r.d.Client(t)
	if _, err := r.c.LeasesService().Create(r.ctx(), leases.WithID(crashLease)); err != nil {
		r.fatalf("create lease %s: %v", crashLease, err)
	}
	rcImport(t, r.ctx(), r.c, archive)
	rcImport(t, namespaced(r.d.Context(t), crashProbeNS), r.c, crashProbeArchive(t))
	r.chain = rcChain(t, r.ctx(), r.c, rcImage)

	// Calibrate: each operation once, uncrashed.
	for _, op := range []string{opUnpack, opCommit, opCommit, opFirstUse, opRemove, opUnpack, opGC} {
		r.step = "calibration " + op
		if op == opUnpack && r.imageMissing() {
			rcImport(t, r.ctx(), r.c, archive)
		}
		if op == opCommit {
			r.prepareCommit()
		}
		if op == opFirstUse && !r.prepareFirstUse() {
			r.fatalf("calibration: no committed snapshot left whose merged disk was never built")
		}
		start := time.Now()
		if err := r.run(op); err != nil {
			r.fatalf("calibration %s: %v", op, err)
		}
		r.window[op] = time.Since(start)
		r.after(op, nil)
	}
	t.Logf("operation times uncrashed: unpack %v, commit %v, first use %v, remove %v, gc %v",
		r.window[opUnpack].Round(time.Millisecond), r.window[opCommit].Round(time.Millisecond),
		r.window[opFirstUse].Round(time.Millisecond),
		r.window[opRemove].Round(time.Millisecond), r.window[opGC].Round(time.Millisecond))

	start := time.Now()
	for i := 0; i < iterations && !t.Failed(); i++ {
		if r.imageMissing() {
			rcImport(t, r.ctx(), r.c, archive)
		}
		op := r.choose()
		// Up to 1.25x the uncrashed time, so some kills land just after
		// the operation; 2x for unpack: a cut unpack is retried, and the
		// other operations only run once one completes.
		span := r.window[op] * 5 / 4
		if op == opUnpack {
			span = r.window[op] * 2
		}
		delay := time.Duration(r.rng.Int63n(int64(span) + 1))
		done := make(chan error, 1)
		if op == opCommit {
			r.prepareCommit()
		}
		if op == opFirstUse && !r.prepareFirstUse() {
			op = opCommit // nothing left to use for the first time
			span = r.window[op] * 5 / 4
			delay = time.Duration(r.rng.Int63n(int64(span) + 1))
			r.prepareCommit()
		}
		go func() { done <- r.run(op) }()
		time.Sleep(delay)
		r.d.Kill(t)
		opErr := <-done
		r.d.Restart(t)
		r.c.Close() // its connection would reconnect to the new daemon and stay
		r.c = r.d.Client(t)
		outcome := "completed"
		if opErr != nil {
			outcome = "cut"
		}
		r.stats[op+" "+outcome]++
		r.step = fmt.Sprintf("iteration %d: SIGKILL %v into %s (%v uncrashed): %s", i+1, delay.Round(time.Millisecond), op, r.window[op].Round(time.Millisecond), outcome)
		if opErr != nil {
			r.step += fmt.Sprintf(" (%v)", opErr)
		}
		t.Log(r.step)
		r.after(op, opErr)
		if (i+1)%10 == 0 {
			r.kernelSample()
		}
	}
	elapsed := time.Since(start)
	var st []string
	for k, v := range r.stats {
		st = append(st, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(st)
	t.Logf("%d iterations in %v (%v each); %s", iterations, elapsed.Round(time.Second), (elapsed / time.Duration(max(iterations, 1))).Round(time.Millisecond), strings.Join(st, ", "))
	if t.Failed() {
		return
	}
	r.step = "final"
	r.kernelSample()
	r.final()
}

// choose picks the next operation: unpack while the image is not fully
// unpacked, else a commit, a remove or a GC.
func (r *crashRun) choose() string {
	if !r.unpacked() {
		return opUnpack
	}
	switch n := r.rng.Intn(20); {
	case n < 8:
		return opCommit
	case n < 11:
		return opFirstUse
	case n < 16:
		return opRemove
	default:
		return opGC
	}
}

// unpacked reports whether every layer of the image is a committed
// snapshot of the namespace.
func (r *crashRun) unpacked() bool {
	infos, err := rcSnapshots(r.ctx(), r.c)
	if err != nil {
		r.fatalf("walk snapshots: %v", err)
	}
	for _, id := range r.chain {
		if i, ok := infos[id]; !ok || i.Kind != snapshots.KindCommitted {
			return false
		}
	}
	return true
}

func (r *crashRun) imageMissing() bool {
	_, err := r.c.ImageService().Get(r.ctx(), rcImage)
	if errdefs.IsNotFound(err) {
		return true
	}
	if err != nil {
		r.fatalf("get image: %v", err)
	}
	return false
}

// pendingCommit is the writable snapshot prepareCommit made for opCommit.
type pendingCommit struct {
	key, name string
	tree      rcTree
}

// prepareCommit prepares a writable snapshot over the image's top layer
// (or the last container layer) and writes changes into its rwlayer: two
// files and a whiteout of a file of the image. Not under the crash.
func (r *crashRun) prepareCommit() {
	r.seq++
	// On the image's top layer, or on a container layer committed before.
	parents := []string{r.chain[len(r.chain)-1]}
	for _, k := range keys(r.expect) {
		if info, err := r.c.SnapshotService("erofs-vm").Stat(r.ctx(), k); err == nil && info.Kind == snapshots.KindCommitted {
			parents = append(parents, k)
		}
	}
	parent := parents[r.rng.Intn(len(parents))]
	base := r.oracle[len(r.chain)-1]
	if tree, ok := r.expect[parent]; ok {
		base = tree
	}
	key, name := fmt.Sprintf("rw-%d", r.seq), fmt.Sprintf("layer-%d", r.seq)
	ms, err := r.c.SnapshotService("erofs-vm").Prepare(r.leased(), key, parent)
	if err != nil {
		r.fatalf("prepare %s on %s: %v", key, parent, err)
	}
	var victims []string
	for p, e := range base {
		if e.Type == 'f' && strings.HasPrefix(p, "usr/share/doc/") {
			victims = append(victims, p)
		}
	}
	sort.Strings(victims)
	files := map[string]string{
		fmt.Sprintf("crash/%d/small", r.seq): fmt.Sprintf("iteration %d\n", r.seq),
		fmt.Sprintf("crash/%d/big", r.seq):   strings.Repeat(fmt.Sprintf("block %d ", r.seq), 40000),
	}
	if len(victims) > 0 {
		files[victims[r.rng.Intn(len(victims))]] = rcWhiteout
	}
	rcWriteRWLayer(r.t, rcRWLayer(r.t, ms), files)
	want := make(rcTree, len(base))
	for p, e := range base {
		want[p] = e
	}
	for p, content := range files {
		if content == rcWhiteout {
			delete(want, p)
			continue
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := want[d]; !ok {
				want[d] = rcEntry{Type: 'd', Perm: 0o755}
			}
		}
		want[p] = rcEntry{Type: 'f', Perm: 0o644, Size: int64(len(content)), SHA: sha256Hex(content), Mtime: rcMtime.Unix()}
	}
	r.pending = &pendingCommit{key: key, name: name, tree: want}
}

// run performs op once; under the crash it returns the error of the cut call.
func (r *crashRun) run(op string) error {
	ctx := r.ctx()
	sn := r.c.SnapshotService("erofs-vm")
	switch op {
	case opUnpack:
		return rcUnpack(ctx, r.c, rcImage)
	case opCommit:
		if r.pending == nil {
			r.prepareCommit()
		}
		return sn.Commit(r.leased(), r.pending.name, r.pending.key)
	case opRemove:
		// containerd's Remove only drops its own record; erofs-vm's
		// Remove runs in the GC that follows, so run one now.
		if err := r.removeAll(ctx); err != nil {
			return err
		}
		return rcGC(ctx, r.c)
	case opGC:
		return rcDeleteImage(ctx, r.c, rcImage)
	case opFirstUse:
		_, err := sn.View(r.leased(), crashFirstUseView, r.firstUse)
		return err
	}
	return fmt.Errorf("unknown op %q", op)
}

// crashFirstUseView is the key of opFirstUse's View.
const crashFirstUseView = "first-use-view"

// prepareFirstUse picks a committed snapshot with parents whose merged disk
// was never built (a container layer no one used since its Commit, or an
// image layer after a fresh unpack) for opFirstUse; false if none.
func (r *crashRun) prepareFirstUse() bool {
	infos, err := rcSnapshots(r.ctx(), r.c)
	if err != nil {
		r.fatalf("walk snapshots: %v", err)
	}
	var cands []string
	for n, i := range infos {
		if i.Kind == snapshots.KindCommitted && i.Parent != "" && i.Labels[snapshotter.LabelFSMetaReady] == "" {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return false
	}
	sort.Strings(cands)
	r.firstUse = cands[r.rng.Intn(len(cands))]
	return true
}

// removeAll removes every snapshot of the namespace, children first.
func (r *crashRun) removeAll(ctx context.Context) error {
	// A listing can be stale by the time it is acted on: a client-side
	// unpack cut by an earlier kill may still prepare a snapshot after
	// the daemon came back, so a parent removed from an old listing can
	// have a child it never saw ("cannot remove snapshot with child").
	// Pass again over a fresh listing until the namespace is empty; give
	// up only when a whole pass removes nothing.
	var lastErr error
	for pass := 0; pass < 10; pass++ {
		infos, err := rcSnapshots(ctx, r.c)
		if err != nil {
			return err
		}
		if len(infos) == 0 {
			return nil
		}
		depth := func(n string) int {
			d := 0
			for i, ok := infos[n]; ok && i.Parent != ""; i, ok = infos[i.Parent] {
				d++
			}
			return d
		}
		names := keys(infos)
		sort.SliceStable(names, func(a, b int) bool { return depth(names[a]) > depth(names[b]) })
		removed := 0
		lastErr = nil
		for _, n := range names {
			// NotFound: a GC running meanwhile (the one 100 ms after
			// startup, or one a mutation scheduled) took it once its
			// child was gone.
			err := r.c.SnapshotService("erofs-vm").Remove(ctx, n)
			switch {
			case err == nil:
				removed++
			case errdefs.IsNotFound(err):
			case errdefs.IsFailedPrecondition(err):
				lastErr = fmt.Errorf("remove %s: %w", n, err)
			default:
				return fmt.Errorf("remove %s: %w", n, err)
			}
		}
		if lastErr == nil {
			return nil
		}
		if removed == 0 && pass > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return lastErr
}

// after restores what an operation cut by a crash left for the next one,
// then runs the checks of one iteration.
func (r *crashRun) after(op string, opErr error) {
	ctx := r.ctx()
	sn := r.c.SnapshotService("erofs-vm")
	// Leases of unpacks the crash cut hold their snapshots for a day, so
	// the next unpack resumes from the layers they committed. Once the
	// image is whole (and holds its layers), they go, and GC takes the
	// extract snapshots they held.
	if r.unpacked() {
		ls, err := r.c.LeasesService().List(ctx)
		if err != nil {
			r.fatalf("list leases: %v", err)
		}
		for _, l := range ls {
			if l.ID != crashLease {
				if err := r.c.LeasesService().Delete(ctx, l, leases.SynchronousDelete); err != nil {
					r.fatalf("delete lease %s: %v", l.ID, err)
				}
				r.stats["stale unpack leases dropped"]++
			}
		}
	}
	if c, ok := sn.(snapshots.Cleaner); ok {
		if err := c.Cleanup(ctx); err != nil && !errdefs.IsNotImplemented(err) {
			r.errorf("Cleanup through the snapshots API: %v", err)
		} else if err != nil {
			r.stats["api Cleanup not implemented"] = 1
		}
	}
	if op == opCommit && r.pending != nil {
		p := r.pending
		info, err := sn.Stat(r.leased(), p.name)
		switch {
		case err == nil && info.Kind == snapshots.KindCommitted:
		case errdefs.IsNotFound(err):
			// Cut before the record: the active snapshot is whole and a
			// retried Commit must succeed.
			err := sn.Commit(r.leased(), p.name, p.key)
			switch {
			case err == nil:
				r.stats["commit retried"]++
			case errdefs.IsNotFound(err) && r.backingCommitted(p.name):
				// containerd's window, not ours: the metadata layer runs
				// the backing Commit inside its own bolt transaction, and
				// the kill landed after erofs-vm committed and before that
				// transaction did. containerd then holds an active
				// snapshot whose backing key is gone ("uncommittable
				// snapshot ... should be removed"); the committed backing
				// snapshot is whole (checked below like any other) and
				// GC takes it.
				r.stats["commit lost by containerd's metadata (backing committed)"]++
				if err := sn.Remove(r.leased(), p.key); err != nil {
					r.errorf("remove uncommittable %s: %v", p.key, err)
				}
			default:
				r.errorf("commit %s retried after the crash: %v", p.key, err)
			}
		default:
			r.errorf("after a crash in commit: stat %s: %+v, %v", p.name, info, err)
		}
		r.expect[p.name] = p.tree
		r.pending = nil
	}
	if op == opFirstUse {
		// Cut or not, a View now must get the whole disk: the next use
		// rebuilds what the kill cut short. Then read the parent again
		// through the disk it has now.
		if _, err := sn.Stat(r.leased(), crashFirstUseView); errdefs.IsNotFound(err) {
			if _, err := sn.View(r.leased(), crashFirstUseView, r.firstUse); err != nil {
				r.errorf("View of %s after a crash in its first use: %v", r.firstUse, err)
			}
		}
		if info, err := sn.Stat(r.leased(), r.firstUse); err != nil || info.Labels[snapshotter.LabelFSMetaReady] != "true" {
			r.errorf("%s after its first use: fsmeta-ready %q, %v", r.firstUse, info.Labels[snapshotter.LabelFSMetaReady], err)
		}
		if err := sn.Remove(r.leased(), crashFirstUseView); err != nil && !errdefs.IsNotFound(err) {
			r.errorf("remove %s: %v", crashFirstUseView, err)
		}
		for k := range r.verified {
			if strings.HasSuffix(k, "/"+r.firstUse) {
				delete(r.verified, k)
			}
		}
	}
	if op == opRemove {
		for k := range r.expect {
			if _, err := sn.Stat(ctx, k); errdefs.IsNotFound(err) {
				delete(r.expect, k)
			}
		}
	}

	if err := rcGC(ctx, r.c); err != nil {
		r.fatalf("gc: %v", err)
	}
	store, bad := rcCheckStore(r.d.SnapshotterRoot())
	if len(bad) > 0 {
		r.errorf("after %s (%v): store and files disagree:\n%s", op, opErr, strings.Join(bad, "\n"))
	}
	r.checkCommitted(store)
	r.probe()
}

// backingCommitted reports whether erofs-vm's own store holds a committed
// snapshot of the crash namespace named key.
func (r *crashRun) backingCommitted(key string) bool {
	store, err := rcReadStore(r.d.SnapshotterRoot())
	if err != nil {
		r.fatalf("read the store: %v", err)
	}
	for _, s := range store {
		if ns, k := rcBackingKey(s.Name); ns == crashNS && k == key && s.Kind == snapshots.KindCommitted {
			return true
		}
	}
	return false
}

// checkCommitted compares every committed snapshot of the crash
// namespace not compared before with what it must hold.
func (r *crashRun) checkCommitted(store map[string]rcSnap) {
	salt := r.rng.Uint32()
	sample := func(p string) bool {
		h := fnv.New32a()
		h.Write([]byte(p))
		return (h.Sum32()^salt)%8 == 0
	}
	for _, s := range store {
		ns, key := rcBackingKey(s.Name)
		if ns != crashNS || s.Kind != snapshots.KindCommitted || r.verified[s.ID+" "+s.Name] {
			continue
		}
		want := r.want(key)
		if want == nil {
			r.errorf("committed snapshot %s: nothing to compare it with", s.Name)
			continue
		}
		got, err := rcSnapshotReaderTree(r.d.SnapshotterRoot(), store, s, sample)
		if err != nil {
			r.errorf("read committed %s: %v", s.Name, err)
			continue
		}
		if diff := rcDiff(rcUnsample(want, sample), got); len(diff) > 0 {
			r.errorf("committed %s != oracle:\n%s", s.Name, strings.Join(diff, "\n"))
		}
		r.verified[s.ID+" "+s.Name] = true
		r.stats["committed snapshots verified"]++
	}
}

// want is the tree committed snapshot key must show, nil if unknown.
func (r *crashRun) want(key string) rcTree {
	for i, id := range r.chain {
		if key == id {
			return r.oracle[i]
		}
	}
	return r.expect[key]
}

// probe unpacks a small image into its own namespace from scratch: the
// daemon that just came back can unpack.
func (r *crashRun) probe() {
	ctx := namespaced(r.d.Context(r.t), crashProbeNS)
	if err := r.removeAll(ctx); err != nil {
		r.errorf("probe: clear: %v", err)
	}
	if err := rcUnpack(ctx, r.c, crashProbe); err != nil {
		r.errorf("fresh unpack after restart: %v", err)
		return
	}
	infos, err := rcSnapshots(ctx, r.c)
	if err != nil || len(infos) != 2 {
		r.errorf("probe image unpacked into %v, %v; want 2 snapshots", infos, err)
	}
}

// kernelSample mounts one committed snapshot of the namespace with the
// kernel and compares all of it with its oracle.
func (r *crashRun) kernelSample() {
	infos, err := rcSnapshots(r.ctx(), r.c)
	if err != nil {
		r.fatalf("walk snapshots: %v", err)
	}
	var cands []string
	for n, i := range infos {
		if i.Kind == snapshots.KindCommitted && r.want(n) != nil {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return
	}
	sort.Strings(cands)
	n := cands[r.rng.Intn(len(cands))]
	want := r.want(n)
	failed := r.t.Failed()
	rcKernelCheck(r.t, r.leased(), r.c, n, want)
	if !failed && r.t.Failed() {
		// The subtest said how; the summary at the end says where.
		r.failures = append(r.failures, fmt.Sprintf("%s: kernel mount of %s: see the subtest's failure above", r.step, n))
	}
	r.stats["kernel mounts"]++
}

// final deletes the image and every lease with a synchronous GC: the
// store must then hold exactly the probe image's snapshots, however many
// crashes left backing snapshots containerd no longer knew.
func (r *crashRun) final() {
	ctx := r.ctx()
	if err := r.removeAll(r.leased()); err != nil {
		r.errorf("final remove: %v", err)
	}
	if !r.imageMissing() {
		if err := rcDeleteImage(ctx, r.c, rcImage); err != nil {
			r.fatalf("final image delete: %v", err)
		}
	}
	l, err := r.c.LeasesService().List(ctx)
	if err != nil {
		r.fatalf("final lease list: %v", err)
	}
	for _, x := range l {
		if err := r.c.LeasesService().Delete(ctx, x, leases.SynchronousDelete); err != nil {
			r.fatalf("final delete lease %s: %v", x.ID, err)
		}
	}
	if err := rcGC(ctx, r.c); err != nil {
		r.fatalf("final gc: %v", err)
	}
	store, bad := rcCheckStore(r.d.SnapshotterRoot())
	if len(bad) > 0 {
		r.errorf("final: store and files disagree:\n%s", strings.Join(bad, "\n"))
	}
	for name := range store {
		if ns, _ := rcBackingKey(name); ns != crashProbeNS {
			r.errorf("final: %s left in the snapshotter after GC", name)
		}
	}
}

// crashProbeArchive builds a 2-layer gzip image of a few small files.
func crashProbeArchive(t *testing.T) string {
	t.Helper()
	layer := func(files ...string) ociLayer {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, f := range files {
			if strings.HasSuffix(f, "/") {
				tw.WriteHeader(&tar.Header{Name: f, Typeflag: tar.TypeDir, Mode: 0o755})
				continue
			}
			data := []byte("probe " + f + "\n")
			tw.WriteHeader(&tar.Header{Name: f, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
			tw.Write(data)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(b.Bytes())
		zw.Close()
		return ociLayer{Blob: z.Bytes(), MediaType: ocispec.MediaTypeImageLayerGzip, DiffID: digest.FromBytes(b.Bytes())}
	}
	return ociArchive(t, crashProbe, []ociLayer{layer("etc/", "etc/probe"), layer("etc/", "etc/probe2", "usr/", "usr/x")})
}

func sha256Hex(s string) string { return digest.FromString(s).Encoded() }
