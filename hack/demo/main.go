// Command demo walks a new user through containerd-erofs in about a
// minute: a private daemon with the example config, the 3-layer Debian
// test image imported and unpacked into EROFS snapshots, their labels and
// raw mounts, a micro-VM booted from a container's mounts exactly as
// qemubox would attach them, the container's write found on the host,
// diffed into a layer and committed. hack/demo.sh builds what it needs and
// runs it (`make demo`).
//
// Every step is a function of package integration that TestE2E runs too,
// so the demo shows what the test proves. Everything it makes lives under
// --workdir and is removed at the end, also on failure or ^C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"

	"github.com/erofs-vm/containerd-erofs/integration"
	"github.com/erofs-vm/containerd-erofs/integration/guest"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// Names the demo gives what it makes.
const (
	containerKey = "demo-container"
	committedKey = "demo-committed"
	guestText    = "hello from the micro-VM"
	guestTimeout = 5 * time.Minute
)

func main() {
	repo := flag.String("repo", ".", "repository root (bin/, hack/config.toml, _output/)")
	work := flag.String("workdir", "", "empty directory for the daemon's root, state and sockets (removed at the end)")
	flag.Parse()
	if *work == "" {
		fmt.Fprintln(os.Stderr, "demo: --workdir is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{repo: *repo, work: *work, out: os.Stdout, start: time.Now(), tty: isTTY(os.Stdout)}
	err := d.run(ctx)
	if err != nil {
		if ctx.Err() != nil {
			d.fail(errors.New("interrupted: stopping the guest and the daemon, removing what was made"), false)
		} else {
			d.fail(err, true)
		}
	}
	if cerr := d.cleanup(); cerr != nil {
		fmt.Fprintf(os.Stderr, "demo: cleanup: %v\n", cerr)
		err = errors.Join(err, cerr)
	}
	if err != nil {
		os.Exit(1)
	}
	d.say("\n%sDone in %.0f s.%s Everything the demo made is gone (%s removed).\n", d.bold(), time.Since(d.start).Seconds(), d.reset(), d.work)
}

// demo is one run: where things are, what to clean up, how to print.
type demo struct {
	repo, work string
	out        io.Writer
	start      time.Time
	tty        bool

	daemon *integration.Standalone
	client *client.Client
	lease  func(context.Context) error
	leased context.Context
	step   int
	short  string // shown as $SN in details
}

const steps = 7

func (d *demo) run(ctx context.Context) error {
	d.say("%scontainerd-erofs demo%s: an OCI image becomes EROFS layers, one flat VMDK, and the root\n", d.bold(), d.reset())
	d.say("filesystem of a micro-VM; the container's change becomes a layer again.\n")

	// 1. The daemon.
	d.begin("Start containerd-erofs on a temporary root (config: hack/config.toml)")
	cfg, err := os.ReadFile(filepath.Join(d.repo, "hack", "config.toml"))
	if err != nil {
		return err
	}
	dir := filepath.Join(d.work, "d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d.daemon, err = integration.StartStandalone(ctx, filepath.Join(d.repo, "bin", "containerd-erofs"), string(cfg), dir)
	if err != nil {
		if d.daemon != nil {
			d.detail("%s", d.daemon.LogTail(20))
		}
		return err
	}
	if d.client, err = client.New(d.daemon.Address, client.WithTimeout(10*time.Second)); err != nil {
		return err
	}
	ver, err := d.client.Version(ctx)
	if err != nil {
		return err
	}
	// ctr and erofsctl below read the socket from the environment.
	os.Setenv("CONTAINERD_ADDRESS", d.daemon.Address)
	d.done("serving: containerd %s", ver.Version)
	d.detail("$ export CONTAINERD_ADDRESS=%s", d.daemon.Address)
	// Paths below are shown relative to the snapshotter's root.
	d.short = d.daemon.SnapshotterRoot()
	d.detail("$ SN=%s   # the erofs-vm snapshotter's root, as paths below show it", d.short)

	nsCtx := namespaces.WithNamespace(ctx, namespaces.Default)
	// A lease holds what the demo makes by hand: containerd's GC removes
	// snapshots nothing references (docs/design.md §4).
	if d.leased, d.lease, err = d.client.WithLease(nsCtx); err != nil {
		return err
	}
	ctx = d.leased

	// 2. Import and unpack.
	archive, err := integration.ImageArchive(d.repo, integration.E2EArchive)
	if err != nil {
		return err
	}
	d.begin("Import %s and unpack it with the erofs-vm snapshotter and differ", integration.E2EArchive)
	t0 := time.Now()
	stopSpin := d.spin("layers → EROFS, one per layer")
	layers, err := integration.ImportAndUnpack(ctx, d.client, archive, integration.E2EImage, integration.E2ESnapshotter)
	stopSpin()
	if err != nil {
		return err
	}
	ss := d.client.SnapshotService(integration.E2ESnapshotter)
	infos, err := integration.LayerSnapshots(ctx, ss, layers, true)
	if err != nil {
		return fmt.Errorf("the snapshots are not what docs/design.md §5 says:\n%w", err)
	}
	d.done("%s: %d layers → %d committed EROFS snapshots in %.1f s (labels checked)", layers.Name, len(layers.ChainIDs), len(infos), time.Since(t0).Seconds())
	if err := d.cmd("ctr", "snapshots", "--snapshotter", integration.E2ESnapshotter, "ls"); err != nil {
		return err
	}
	top := infos[len(infos)-1]
	d.detail("")
	d.detail("labels of the top layer (ctr snapshots --snapshotter %s info KEY shows them too):", integration.E2ESnapshotter)
	for _, k := range slices.Sorted(maps.Keys(top.Labels)) {
		if strings.HasPrefix(k, snapshotter.LabelPrefix) {
			d.detail("  %-28s %s", k, top.Labels[k])
		}
	}

	// 3. The container's snapshot and its raw mounts.
	d.begin("Prepare a writable snapshot %q on the image and print its raw mounts", containerKey)
	mounts, err := ss.Prepare(ctx, containerKey, top.Name)
	if err != nil {
		return err
	}
	if err := integration.CheckMounts(mounts, integration.LayerPaths(infos), true, writableSize(ctx, d, containerKey)); err != nil {
		return fmt.Errorf("mounts are not what docs/design.md §4 says: %w", err)
	}
	d.done("one EROFS mount over all %d layers (its fsmeta + merged.vmdk built now, at this first use) + one ext4 writable layer; nothing is mounted on the host", len(infos))
	if err := d.cmd("erofsctl", "snapshot-mounts", containerKey); err != nil {
		return err
	}
	d.detail("")
	d.detail("(`ctr snapshots mounts` would loop-mount the erofs part on the host first and print only the rest)")
	disks, plan, err := guest.DisksFromMounts(mounts)
	if err != nil {
		return err
	}
	d.detail("")
	d.detail("what qemubox attaches to the VM (merged.vmdk = fsmeta.erofs + every layer.erofs, one flat disk):")
	for i, dk := range disks {
		ro := "read-write"
		if dk.ReadOnly {
			ro = "read-only"
		}
		d.detail("  %s  ←  %s  (%s, %s, mounted as %s)", guest.DeviceName(i), filepath.Base(dk.Path), formatOf(dk), ro, plan.Mounts[i].Type)
	}

	// 4. The guest.
	d.begin("Boot a micro-VM from those disks (qemu-system-x86_64 -accel tcg -cpu max,-cx16)")
	assets, err := guest.FindAssets()
	if err != nil {
		return err
	}
	stopSpin = d.spin("guest boots, mounts erofs + ext4 + overlay, runs the image")
	rep, res, err := integration.BootContainer(ctx, mounts, false, guestText, guest.Config{Assets: &assets, Timeout: guestTimeout})
	stopSpin()
	if err != nil {
		return err
	}
	if err := integration.CheckContainerReport(rep, guestText); err != nil {
		return err
	}
	d.done("the guest ran the image and powered off after %.1f s", res.Duration.Seconds())
	d.detail("guest$ chroot /mnt/root python3 -c 'print(6*7)'")
	d.detail("%s", rep.Python)
	d.detail("guest$ chroot /mnt/root cat /etc/os-release | head -3")
	for _, l := range firstLines(rep.OSRelease, 3) {
		d.detail("%s", l)
	}
	d.detail("guest$ echo %q > /%s", guestText, integration.E2EGuestFile)

	// 5. The write, on the host.
	d.begin("Find the guest's write on the host, inside the writable layer")
	got, err := integration.ReadRWLayerFile(ctx, mounts[1].Source, integration.E2EGuestFile)
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != guestText {
		return fmt.Errorf("rwlayer.img has %q, the guest wrote %q", got, guestText)
	}
	d.done("upper/%s in %s", integration.E2EGuestFile, filepath.Base(mounts[1].Source))
	d.detail("$ debugfs -R 'cat /upper/%s' %s", integration.E2EGuestFile, mounts[1].Source)
	d.detail("%s", strings.TrimSpace(got))

	// 6. Diff and commit.
	d.begin("Diff the container into an OCI layer (erofs-vm Compare), then Commit it")
	desc, err := integration.DiffActive(ctx, d.client, integration.E2ESnapshotter, containerKey, top.Name)
	if err != nil {
		return err
	}
	entries, err := integration.LayerTar(ctx, d.client.ContentStore(), desc)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Header.Name)
	}
	if !slices.Contains(names, integration.E2EGuestFile) {
		return fmt.Errorf("the diff layer lacks %s: %q", integration.E2EGuestFile, names)
	}
	if err := ss.Commit(ctx, committedKey, containerKey); err != nil {
		return err
	}
	ci, err := ss.Stat(ctx, committedKey)
	if err != nil {
		return err
	}
	d.done("layer %s (%d bytes gzip): %s", shortDigest(desc.Digest.String()), desc.Size, strings.Join(names, ", "))
	d.detail("committed as %q, a 4th EROFS layer (its merged disk is built when something first uses it):", committedKey)
	for _, k := range []string{snapshotter.LabelMountType, snapshotter.LabelLayerOrder} {
		d.detail("  %-28s %s", k, ci.Labels[k])
	}

	// 7. Stop and clean up (cleanup does it; this is the progress line).
	d.begin("Stop the daemon and remove its root, state and sockets")
	return nil
}

// writableSize is the writable-size label of key, 0 if unreadable (then
// CheckMounts reports the mismatch).
func writableSize(ctx context.Context, d *demo, key string) int64 {
	info, err := d.client.SnapshotService(integration.E2ESnapshotter).Stat(ctx, key)
	if err != nil {
		return 0
	}
	var n int64
	fmt.Sscan(info.Labels[snapshotter.LabelWritableSize], &n)
	return n
}

// cleanup releases the lease, stops the daemon and removes the workdir's
// contents. Safe to call whatever state run stopped in.
func (d *demo) cleanup() error {
	var errs []error
	if d.lease != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(d.leased), 30*time.Second)
		if err := d.lease(ctx); err != nil {
			errs = append(errs, fmt.Errorf("release lease: %w", err))
		}
		cancel()
	}
	if d.client != nil {
		d.client.Close()
	}
	if d.daemon != nil {
		if err := d.daemon.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(d.work); err != nil {
		errs = append(errs, err)
	}
	if d.step == steps {
		d.done("stopped cleanly")
	}
	return errors.Join(errs...)
}

// cmd runs one of bin/ (ctr, erofsctl) and prints the command as a user
// would type it, then its output, indented. Its stderr (ctr warns about
// cgroup v1 on every call here) is shown only when it fails.
func (d *demo) cmd(name string, args ...string) error {
	d.detail("")
	d.detail("$ %s %s", name, strings.Join(args, " "))
	c := exec.Command(filepath.Join(d.repo, "bin", name), args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		d.detail("%s", strings.TrimRight(l, " "))
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Printing: one line per step with the elapsed time, details indented
// under it, a live timer on a terminal while a long step runs.

func (d *demo) stamp() string { return fmt.Sprintf("[%5.1fs]", time.Since(d.start).Seconds()) }

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.out, format, a...) }

func (d *demo) begin(format string, a ...any) {
	d.step++
	d.say("\n%s %s%d/%d %s%s\n", d.stamp(), d.bold(), d.step, steps, fmt.Sprintf(format, a...), d.reset())
}

func (d *demo) done(format string, a ...any) {
	d.say("%s   %s✓%s %s\n", d.stamp(), d.green(), d.reset(), fmt.Sprintf(format, a...))
}

// fail reports err; withLog adds the end of the daemon's log (not for ^C:
// the log says nothing about it).
func (d *demo) fail(err error, withLog bool) {
	d.say("\n%s   %s✗ %v%s\n", d.stamp(), d.red(), err, d.reset())
	if withLog && d.daemon != nil {
		d.say("daemon log (last lines of %s):\n%s\n", d.daemon.LogPath(), d.daemon.LogTail(15))
	}
}

func (d *demo) detail(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	if d.short != "" && !strings.HasPrefix(s, "$ SN=") {
		s = strings.ReplaceAll(s, d.short, "$SN")
	}
	for _, l := range strings.Split(s, "\n") {
		if l == "" {
			d.say("\n")
			continue
		}
		d.say("           %s%s%s\n", d.dim(), l, d.reset())
	}
}

// spin shows what is going on and the seconds so far on one rewritten line
// while a long step runs; the returned func clears it. Not on a pipe.
func (d *demo) spin(what string) func() {
	if !d.tty {
		d.detail("%s …", what)
		return func() {}
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(stopped)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			// One terminal line (a wrapped line cannot be rewritten with
			// \r): what is cut to fit, the seconds counter always shows.
			prefix := d.stamp() + "   "
			suffix := fmt.Sprintf(" … %.0f s", time.Since(t0).Seconds())
			if room := termWidth() - 1 - len([]rune(prefix)) - len([]rune(suffix)); len([]rune(what)) > room {
				suffix = fmt.Sprintf(" %.0f s", time.Since(t0).Seconds())
			}
			text := []rune(what)
			if room := termWidth() - 1 - len([]rune(prefix)) - len([]rune(suffix)); len(text) > room {
				text = append(text[:max(room-1, 0)], '…')
			}
			d.say("\r\033[K%s%s%s%s%s", d.dim(), prefix, string(text), suffix, d.reset())
			select {
			case <-stop:
				d.say("\r\033[K")
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(stop); <-stopped }
}

func (d *demo) esc(code string) string {
	if !d.tty {
		return ""
	}
	return "\033[" + code + "m"
}
func (d *demo) bold() string  { return d.esc("1") }
func (d *demo) dim() string   { return d.esc("2") }
func (d *demo) green() string { return d.esc("32") }
func (d *demo) red() string   { return d.esc("31") }
func (d *demo) reset() string { return d.esc("0") }

// termWidth is the width of the terminal on stdout, 80 if unknown.
func termWidth() int {
	ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col < 20 {
		return 80
	}
	return int(ws.Col)
}

func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func formatOf(dk guest.Disk) string {
	if dk.Format != "" {
		return dk.Format
	}
	return "raw"
}

func firstLines(s string, n int) []string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[:min(n, len(lines))]
}

func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}
