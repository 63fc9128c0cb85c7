package guest

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
	"time"
)

// QEMU is the emulator Boot runs.
const QEMU = "qemu-system-x86_64"

// Defaults for Config.
const (
	DefaultTimeout  = 120 * time.Second
	DefaultMemoryMB = 512
)

// Markers hack/guest/init prints around the output of /test.sh.
const (
	markerBegin   = "===GUEST-BEGIN==="
	markerEndPfx  = "===GUEST-END rc="
	markerError   = "===GUEST-ERROR "
	markerNoTest  = "===GUEST-NOTEST==="
	markerSuffix  = "==="
	consoleTail   = 4000    // bytes of console quoted in errors
	maxConsoleLen = 8 << 20 // console bytes kept; a runaway guest must not eat the host's memory
)

// Disk is one virtio-blk disk of the guest; the i-th disk is /dev/vd<'a'+i>.
type Disk struct {
	Path string
	// Format is the qemu drive format, "vmdk" or "raw"; empty means from the
	// extension (.vmdk → vmdk, else raw), as qemubox decides.
	Format   string
	ReadOnly bool
}

// format returns the qemu format of d.
func (d Disk) format() string {
	if d.Format != "" {
		return d.Format
	}
	if strings.EqualFold(filepath.Ext(d.Path), ".vmdk") {
		return "vmdk"
	}
	return "raw"
}

// Config describes one guest run.
type Config struct {
	Disks []Disk
	// Script is the shell script run as /test.sh (busybox sh, stdout and
	// stderr captured). Its exit status becomes Result.ExitCode.
	Script string
	// Timeout bounds the whole run (default DefaultTimeout); qemu is killed
	// when it expires, or when ctx ends.
	Timeout time.Duration
	// MemoryMB is the guest RAM (default DefaultMemoryMB).
	MemoryMB int
	// Assets overrides FindAssets.
	Assets *Assets
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
}

// Result is what a guest run produced.
type Result struct {
	// Output is what /test.sh wrote, CRLF turned into LF.
	Output string
	// ExitCode is /test.sh's exit status.
	ExitCode int
	// Console is the whole serial console (firmware, kernel, init, script).
	Console string
	// Duration is the wall time from qemu start to exit.
	Duration time.Duration
}

// Boot runs a guest with cfg's disks and script and returns its report. A
// script that exits non-zero is not an error (see Result.ExitCode); a guest
// that times out, panics, fails in /init or exits without a report is, and
// the error quotes the end of the console.
func Boot(ctx context.Context, cfg Config) (*Result, error) {
	assets := cfg.Assets
	if assets == nil {
		a, err := FindAssets()
		if err != nil {
			return nil, err
		}
		assets = &a
	}
	if len(cfg.Disks) > MaxDisks {
		return nil, fmt.Errorf("guest: %d disks, at most %d", len(cfg.Disks), MaxDisks)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	mem := cfg.MemoryMB
	if mem <= 0 {
		mem = DefaultMemoryMB
	}

	tmp, err := os.MkdirTemp("", "guest-boot-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initramfs.cpio.gz")
	if err := writeInitramfs(initrd, assets.Initramfs, cfg.Script); err != nil {
		return nil, fmt.Errorf("guest: initramfs: %w", err)
	}

	// no_timer_check: on a loaded host TCG is so slow that the kernel's
	// early check that the IO-APIC timer ticks fails and it panics
	// ("IO-APIC + timer doesn't work!", seen here at load 20 on 2 cores).
	args := []string{
		"-accel", "tcg", "-cpu", "max,-cx16", // docs/design.md §9: no KVM here, no cmpxchg16b
		"-m", fmt.Sprint(mem),
		"-nographic", "-no-reboot",
		"-nic", "none", // no network, and no iPXE option ROM to wait for
		"-kernel", assets.Kernel,
		"-initrd", initrd,
		"-append", strings.Join(append([]string{"console=ttyS0", "quiet", "panic=-1", "no_timer_check"}, cfg.KernelArgs...), " "),
	}
	for i, d := range cfg.Disks {
		if d.Path == "" {
			return nil, fmt.Errorf("guest: disk %d has no path", i)
		}
		if _, err := os.Stat(d.Path); err != nil {
			return nil, fmt.Errorf("guest: disk %d: %w", i, err)
		}
		ro := "off"
		if d.ReadOnly {
			ro = "on"
		}
		// qemu option values escape ',' by doubling it.
		args = append(args, "-drive", fmt.Sprintf("file=%s,format=%s,if=virtio,readonly=%s",
			strings.ReplaceAll(d.Path, ",", ",,"), d.format(), ro))
	}

	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, QEMU, args...)
	console := &boundedBuffer{max: maxConsoleLen}
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Stdin = nil
	// Own process group, killed whole: qemu must not outlive the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	runErr := cmd.Run()
	res := &Result{Console: console.String(), Duration: time.Since(start)}
	if runCtx.Err() != nil {
		why := "timed out after " + timeout.String()
		if ctx.Err() != nil {
			why = "cancelled: " + ctx.Err().Error()
		}
		return res, fmt.Errorf("guest: %s (qemu killed); console tail:\n%s", why, tail(res.Console))
	}
	if runErr != nil {
		return res, fmt.Errorf("guest: qemu: %v; console tail:\n%s", runErr, tail(res.Console))
	}
	out, rc, err := parseReport(res.Console)
	if err != nil {
		return res, fmt.Errorf("guest: %w; console tail:\n%s", err, tail(res.Console))
	}
	res.Output, res.ExitCode = out, rc
	return res, nil
}

// parseReport extracts the script output and exit code from the console.
func parseReport(console string) (string, int, error) {
	c := strings.ReplaceAll(console, "\r\n", "\n")
	if i := strings.Index(c, markerError); i >= 0 {
		msg, _, _ := strings.Cut(c[i+len(markerError):], markerSuffix)
		return "", 0, fmt.Errorf("guest init failed: %s", msg)
	}
	if strings.Contains(c, "Kernel panic") {
		return "", 0, errors.New("guest kernel panicked")
	}
	if strings.Contains(c, markerNoTest) {
		return "", 0, errors.New("guest found no /test.sh")
	}
	b := strings.Index(c, markerBegin+"\n")
	if b < 0 {
		return "", 0, errors.New("guest printed no report (no begin marker)")
	}
	body := c[b+len(markerBegin)+1:]
	e := strings.LastIndex(body, markerEndPfx)
	if e < 0 || (e > 0 && body[e-1] != '\n') {
		return "", 0, errors.New("guest report has no end marker (script hung or guest died)")
	}
	var rc int
	if _, err := fmt.Sscanf(body[e+len(markerEndPfx):], "%d"+markerSuffix, &rc); err != nil {
		return "", 0, fmt.Errorf("guest end marker unreadable: %v", err)
	}
	return body[:e], rc, nil
}

func tail(s string) string {
	if len(s) > consoleTail {
		return "..." + s[len(s)-consoleTail:]
	}
	return s
}

// writeInitramfs writes the base initramfs followed by a gzip'd cpio with
// /test.sh: the kernel unpacks concatenated archives in order, so the base
// is reused as is.
func writeInitramfs(dst, base, script string) error {
	b, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	var extra bytes.Buffer
	files := map[string][]byte{}
	if script != "" {
		files["test.sh"] = []byte(script)
	}
	if len(files) > 0 {
		if err := writeCpio(&extra, files); err != nil {
			return err
		}
	}
	return os.WriteFile(dst, append(b, extra.Bytes()...), 0o600)
}

// boundedBuffer keeps the first max bytes written to it; qemu writes from
// two pipes (stdout, stderr) so it is locked.
type boundedBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room < len(p) {
		b.buf.Write(p[:max(room, 0)])
		b.truncated = true
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.truncated {
		return b.buf.String() + "\n[console truncated]\n"
	}
	return b.buf.String()
}
