package integration

import (
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/erofs-vm/containerd-erofs/integration/guest"
	"github.com/erofs-vm/containerd-erofs/vmdk"
)

// TestFSMetaGuestDebian boots a guest kernel with merged.vmdk over
// [fsmeta, layer0, layer1, layer2] of the Debian test image as its only disk,
// exactly as a micro-VM gets it, mounts /dev/vda as erofs (flat
// multi-device: no device= options), and compares its listing and chosen
// files' checksums with the host's overlay oracle.
func TestFSMetaGuestDebian(t *testing.T) {
	fsmetaRequireHost(t, "losetup", "mount")
	assets := guest.RequireAssets(t)
	base := t.TempDir()
	layers := convertDebianLayers(t, base)
	oracle := oracleTree(t, base, layers)
	fsmeta, _ := buildFSMeta(t, base, layers)
	files, err := vmdk.FilesFromPaths(append([]string{fsmeta}, layers...)...)
	fsmetaMust(t, err)
	desc := filepath.Join(base, "merged.vmdk")
	fsmetaMust(t, vmdk.WriteFile(desc, files))

	chosen := fsmetaChooseFiles(oracle)
	if len(chosen) < 6 {
		t.Fatalf("only %d files chosen for checksums", len(chosen))
	}
	var script strings.Builder
	script.WriteString("set -e\nmkdir -p /mnt\nmount -t erofs -o ro /dev/vda /mnt\n")
	script.WriteString("echo LISTING\nfind /mnt -exec stat -c '%n|%f|%u|%g|%s' {} +\n")
	script.WriteString("echo SUMS\nsha256sum")
	for _, p := range chosen {
		script.WriteString(" '/mnt/" + p + "'")
	}
	script.WriteString("\numount /mnt\n")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := guest.Boot(ctx, guest.Config{
		Disks:   []guest.Disk{{Path: desc, Format: "vmdk", ReadOnly: true}},
		Script:  script.String(),
		Timeout: 5 * time.Minute,
		Assets:  &assets,
	})
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("guest script exited %d:\n%s", res.ExitCode, fsmetaTail(res.Output, 3000))
	}
	listing, sums, ok := strings.Cut(res.Output, "SUMS\n")
	_, listing, ok2 := strings.Cut(listing, "LISTING\n")
	if !ok || !ok2 {
		t.Fatalf("guest output without LISTING/SUMS sections:\n%s", fsmetaTail(res.Output, 3000))
	}

	// Listing: type+mode, owner and (for non-dirs) size of every entry.
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Split(l, "|")
		if len(f) != 5 {
			t.Fatalf("bad listing line %q", l)
		}
		mode, err := strconv.ParseUint(f[1], 16, 32)
		fsmetaMust(t, err)
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			f[4] = "-"
		}
		got = append(got, fmt.Sprintf("%s|%o|%s|%s|%s", strings.TrimPrefix(f[0], "/mnt"), mode, f[2], f[3], f[4]))
	}
	var want []string
	for p, e := range oracle.entries {
		size := strconv.FormatInt(e.Size, 10)
		switch e.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			size = "-"
		case syscall.S_IFLNK:
			size = strconv.Itoa(len(e.Target))
		}
		if p == "." {
			p = ""
		} else {
			p = "/" + p
		}
		want = append(want, fmt.Sprintf("%s|%o|%d|%d|%s", p, e.Mode, e.UID, e.GID, size))
	}
	slices.Sort(got)
	slices.Sort(want)
	if d := fsmetaLineDiff(got, want); d != "" {
		t.Fatalf("guest listing (%d entries) differs from the host overlay (%d):\n%s", len(got), len(want), d)
	}

	// Checksums of the chosen files.
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(sums), "\n") {
		sum, p, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("bad sha256sum line %q", l)
		}
		p = strings.TrimPrefix(p, "/mnt/")
		if w := hex.EncodeToString(oracle.entries[p].SHA256[:]); sum != w {
			t.Errorf("%s: guest sha256 %s, host overlay %s", p, sum, w)
		}
		n++
	}
	if n != len(chosen) {
		t.Errorf("guest summed %d files, want %d", n, len(chosen))
	}
	t.Logf("guest saw %d entries and %d matching checksums in %v", len(got), n, res.Duration.Round(time.Second))
}

// fsmetaChooseFiles picks files whose data takes every path through fsmeta: the
// biggest (many chunks into a layer), small ones (inline in their layer,
// so copied whole into fsmeta), ones with a partial last block (a copied
// tail chunk or a partial layer block) and hardlinked ones.
func fsmetaChooseFiles(oracle fsmetaView) []string {
	var regs []string
	for p, e := range oracle.entries {
		if e.Mode&syscall.S_IFMT == syscall.S_IFREG && !strings.ContainsAny(p, "' \\") {
			regs = append(regs, p)
		}
	}
	size := func(p string) int64 { return oracle.entries[p].Size }
	slices.Sort(regs)
	slices.SortStableFunc(regs, func(a, b string) int { return int(size(b) - size(a)) })
	pick := map[string]bool{}
	for _, p := range regs[:min(3, len(regs))] { // biggest
		pick[p] = true
	}
	small, tails, links := 0, 0, 0
	for i := len(regs) - 1; i >= 0; i-- {
		p, e := regs[i], oracle.entries[regs[i]]
		switch {
		case e.Size > 0 && e.Size < 1024 && small < 3:
			pick[p] = true
			small++
		case e.Size > 4096 && e.Size%4096 != 0 && tails < 4:
			pick[p] = true
			tails++
		case e.Links != "" && links < 2:
			pick[p] = true
			links++
		}
	}
	out := make([]string, 0, len(pick))
	for p := range pick {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// fsmetaLineDiff returns the lines only in a or only in b (at most 40), or "".
func fsmetaLineDiff(a, b []string) string {
	inA := map[string]bool{}
	for _, l := range a {
		inA[l] = true
	}
	inB := map[string]bool{}
	for _, l := range b {
		inB[l] = true
	}
	var d []string
	for _, l := range a {
		if !inB[l] && len(d) < 40 {
			d = append(d, "guest only: "+l)
		}
	}
	for _, l := range b {
		if !inA[l] && len(d) < 40 {
			d = append(d, "host only:  "+l)
		}
	}
	return strings.Join(d, "\n")
}

func fsmetaTail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
