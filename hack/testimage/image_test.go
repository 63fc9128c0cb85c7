package main

import (
	"archive/tar"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// repoRoot walks up from the test's directory to the one holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	must(t, "getwd", err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// imageAssets returns _output/images, skipping (or failing under
// EROFS_REQUIRE_ASSETS=1) when it has not been built.
func imageAssets(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "_output", "images")
	for _, f := range []string{"layers/1-rootfs.tar", "layers/2-packages.tar", "layers/3-changes.tar",
		"debian-3layer.oci.tar", "debian-3layer-zstd.oci.tar"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			msg := "test image not built: run `make test-image` (hack/build-test-image.sh): " + err.Error()
			if os.Getenv("EROFS_REQUIRE_ASSETS") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

func builtLayers(dir string) []string {
	return []string{
		filepath.Join(dir, "layers/1-rootfs.tar"),
		filepath.Join(dir, "layers/2-packages.tar"),
		filepath.Join(dir, "layers/3-changes.tar"),
	}
}

// TestBuiltArchives checks both archives of _output/images against the
// layer tars next to them.
func TestBuiltArchives(t *testing.T) {
	dir := imageAssets(t)
	layers := builtLayers(dir)
	var diffIDs [2][]string
	for i, tc := range []struct{ file, name, mediaType string }{
		{"debian-3layer.oci.tar", "docker.io/library/erofs-test:3layer", "application/vnd.oci.image.layer.v1.tar+gzip"},
		{"debian-3layer-zstd.oci.tar", "docker.io/library/erofs-test:3layer-zstd", "application/vnd.oci.image.layer.v1.tar+zstd"},
	} {
		rep, err := verifyArchive(filepath.Join(dir, tc.file), layers)
		must(t, "verify "+tc.file, err)
		if rep.Name != tc.name {
			t.Errorf("%s: image name %q, want %q", tc.file, rep.Name, tc.name)
		}
		for _, l := range rep.Layers {
			if l.MediaType != tc.mediaType {
				t.Errorf("%s: layer media type %s", tc.file, l.MediaType)
			}
			diffIDs[i] = append(diffIDs[i], l.DiffID.String())
		}
	}
	if !slices.Equal(diffIDs[0], diffIDs[1]) {
		t.Errorf("gzip and zstd archives carry different layers: %v vs %v", diffIDs[0], diffIDs[1])
	}
}

// TestBuiltLayerEntries pins what layers 2 and 3 promise their users: each
// kind of entry, in OCI form.
func TestBuiltLayerEntries(t *testing.T) {
	dir := imageAssets(t)
	layers := builtLayers(dir)
	type want struct {
		typ   byte
		mode  int64 // checked when non-zero
		check func(h *tar.Header) string
	}
	xattr := func(name, val string) func(h *tar.Header) string {
		return func(h *tar.Header) string {
			if got := h.PAXRecords[paxXattr+name]; got != val {
				return "xattr " + name + " = " + got + ", want " + val
			}
			return ""
		}
	}
	hasCap := func(h *tar.Header) string {
		if len(h.PAXRecords[paxXattr+"security.capability"]) < 20 {
			return "no security.capability"
		}
		return ""
	}
	cases := []struct {
		layer int
		wants map[string]want
	}{
		{1, map[string]want{
			"usr/local/bin/netraw-true":   {typ: tar.TypeReg, check: hasCap},
			"usr/bin/python3.11":          {typ: tar.TypeReg},
			"etc/python3.11/.wh..wh..opq": {typ: tar.TypeReg}, // dpkg's new dirs are opaque in overlay form
		}},
		{2, map[string]want{
			"etc/apt/apt.conf.d/.wh..wh..opq":                    {typ: tar.TypeReg},
			"etc/.wh.issue.net":                                  {typ: tar.TypeReg},
			"usr/bin/.wh.rgrep":                                  {typ: tar.TypeReg},
			"usr/share/.wh.common-licenses":                      {typ: tar.TypeReg},
			"usr/sbin/.wh.getpcaps":                              {typ: tar.TypeReg},
			"etc/apt/preferences.d":                              {typ: tar.TypeReg},
			"etc/host.conf/":                                     {typ: tar.TypeDir},
			"etc/issue":                                          {typ: tar.TypeSymlink},
			"usr/sbin/rmt":                                       {typ: tar.TypeReg},
			"usr/local/bin/netraw-true":                          {typ: tar.TypeReg, check: hasCap},
			"opt/erofs-test/fifo":                                {typ: tar.TypeFifo},
			"opt/erofs-test/null":                                {typ: tar.TypeChar, check: dev(1, 3)},
			"opt/erofs-test/loop7":                               {typ: tar.TypeBlock, check: dev(7, 7)},
			"opt/erofs-test/suid-true":                           {typ: tar.TypeReg, mode: 0o4755},
			"opt/erofs-test/setgid-dir/":                         {typ: tar.TypeDir, mode: 0o2775},
			"opt/erofs-test/sticky-dir/":                         {typ: tar.TypeDir, mode: 0o1777},
			"opt/erofs-test/data.bin":                            {typ: tar.TypeLink},
			"opt/erofs-test/sub/data-link2":                      {typ: tar.TypeLink},
			"usr/bin/dash":                                       {typ: tar.TypeLink},
			"opt/erofs-test/xattr-file":                          {typ: tar.TypeReg, check: xattr("user.erofs.test", "hello")},
			"opt/erofs-test/sub/":                                {typ: tar.TypeDir, check: xattr("user.erofs.dir", "on-a-dir")},
			"opt/erofs-test/dangling-link":                       {typ: tar.TypeSymlink},
			"opt/erofs-test/acl-file":                            {typ: tar.TypeReg, check: hasXattr("system.posix_acl_access")},
			"opt/erofs-test/acl-dir/":                            {typ: tar.TypeDir, check: hasXattr("system.posix_acl_default")},
			"opt/erofs-test/naïve café ✓":                        {typ: tar.TypeReg},
			"opt/erofs-test/empty-dir/":                          {typ: tar.TypeDir},
			"opt/erofs-test/owned-1000":                          {typ: tar.TypeReg, check: owner(1000)},
			"opt/erofs-test/sparse":                              {typ: tar.TypeReg, check: size(1<<20 + 4)},
			"opt/erofs-test/subsecond":                           {typ: tar.TypeReg, check: nanos(123456789)},
			"opt/erofs-test/" + strings.Repeat("long-name-", 20): {typ: tar.TypeReg},
		}},
	}
	for _, tc := range cases {
		f, err := os.Open(layers[tc.layer])
		must(t, "open", err)
		seen := map[string]bool{}
		tr := tar.NewReader(f)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, layers[tc.layer], err)
			w, ok := tc.wants[h.Name]
			if !ok {
				continue
			}
			seen[h.Name] = true
			if h.Typeflag != w.typ {
				t.Errorf("layer %d %s: type %q, want %q", tc.layer+1, h.Name, h.Typeflag, w.typ)
			}
			if w.mode != 0 && h.Mode != w.mode {
				t.Errorf("layer %d %s: mode %#o, want %#o", tc.layer+1, h.Name, h.Mode, w.mode)
			}
			if w.check != nil {
				if msg := w.check(h); msg != "" {
					t.Errorf("layer %d %s: %s", tc.layer+1, h.Name, msg)
				}
			}
		}
		f.Close()
		for name := range tc.wants {
			if !seen[name] {
				t.Errorf("layer %d lacks %s", tc.layer+1, name)
			}
		}
	}
}

func hasXattr(name string) func(h *tar.Header) string {
	return func(h *tar.Header) string {
		if _, ok := h.PAXRecords[paxXattr+name]; !ok {
			return "no " + name + " xattr"
		}
		return ""
	}
}

func dev(major, minor int64) func(h *tar.Header) string {
	return func(h *tar.Header) string {
		if h.Devmajor != major || h.Devminor != minor {
			return "wrong device numbers"
		}
		return ""
	}
}

func owner(id int) func(h *tar.Header) string {
	return func(h *tar.Header) string {
		if h.Uid != id || h.Gid != id {
			return "wrong owner"
		}
		return ""
	}
}

func size(n int64) func(h *tar.Header) string {
	return func(h *tar.Header) string {
		if h.Size != n {
			return "wrong size"
		}
		return ""
	}
}

func nanos(ns int) func(h *tar.Header) string {
	return func(h *tar.Header) string {
		if h.ModTime.Nanosecond() != ns {
			return "sub-second mtime lost"
		}
		return ""
	}
}

// TestBuiltLayersApply applies the three layers on top of each other with
// containerd's applier and with GNU tar (which ignores whiteouts), and checks
// the result is a Debian bookworm whose python3 runs, with every layer-3
// change in effect in the containerd tree.
func TestBuiltLayersApply(t *testing.T) {
	requireRoot(t)
	dir := imageAssets(t)
	layers := builtLayers(dir)

	gnu := t.TempDir()
	for _, l := range layers {
		out, err := exec.Command("tar", "-xf", l, "-C", gnu, "--xattrs", "--xattrs-include=*", "--numeric-owner").CombinedOutput()
		must(t, "GNU tar -x "+l+": "+string(out), err)
	}
	ctrd := t.TempDir()
	for _, l := range layers {
		data, err := os.ReadFile(l)
		must(t, "read", err)
		applyLayer(t, ctrd, data)
	}

	for _, root := range []string{gnu, ctrd} {
		osr, err := os.ReadFile(filepath.Join(root, "etc/os-release"))
		must(t, "os-release", err)
		if !strings.Contains(string(osr), "VERSION_CODENAME=bookworm") {
			t.Errorf("%s: os-release is not bookworm:\n%s", root, osr)
		}
		out, err := exec.Command("chroot", root, "/usr/bin/python3", "-c", "import sys; print(sys.version_info[0])").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "3" {
			t.Errorf("%s: python3 in a chroot: %v: %s", root, err, out)
		}
	}

	p := func(n string) string { return filepath.Join(ctrd, n) }
	for _, gone := range []string{"usr/bin/rgrep", "etc/issue.net", "usr/share/common-licenses", "usr/sbin/getpcaps",
		"etc/apt/apt.conf.d/70debconf", "usr/bin/.wh.rgrep"} {
		if _, err := os.Lstat(p(gone)); !os.IsNotExist(err) {
			t.Errorf("%s should be gone after layer 3 (lstat: %v)", gone, err)
		}
	}
	if ents, err := os.ReadDir(p("etc/apt/apt.conf.d")); err != nil || len(ents) != 1 || ents[0].Name() != "99erofs-test" {
		t.Errorf("opaque etc/apt/apt.conf.d holds %v (%v), want only 99erofs-test", ents, err)
	}
	typeOf := func(n string) os.FileMode {
		fi, err := os.Lstat(p(n))
		if err != nil {
			t.Errorf("%s: %v", n, err)
			return 0
		}
		return fi.Mode().Type()
	}
	for n, want := range map[string]os.FileMode{
		"etc/host.conf": os.ModeDir, "etc/apt/preferences.d": 0, "etc/issue": os.ModeSymlink,
		"usr/sbin/rmt": 0, "opt/erofs-test/fifo": os.ModeNamedPipe,
		"opt/erofs-test/null": os.ModeDevice | os.ModeCharDevice, "opt/erofs-test/loop7": os.ModeDevice,
	} {
		if got := typeOf(n); got != want {
			t.Errorf("%s: type %v, want %v", n, got, want)
		}
	}
	sameInode := func(a, b string) {
		var sa, sb unix.Stat_t
		must(t, "stat", unix.Lstat(p(a), &sa))
		must(t, "stat", unix.Lstat(p(b), &sb))
		if sa.Ino != sb.Ino {
			t.Errorf("%s and %s are not hardlinked", a, b)
		}
	}
	sameInode("opt/erofs-test/data.bin", "opt/erofs-test/sub/data-link2")
	sameInode("usr/bin/dash", "opt/erofs-test/dash-link")

	// Layer 3 replaced layer 2's cap_net_raw by cap_net_bind_service (bit 10).
	capv, err := getXattr(p("usr/local/bin/netraw-true"), "security.capability")
	must(t, "security.capability", err)
	if len(capv) < 8 || binary.LittleEndian.Uint32(capv[4:]) != 1<<10 {
		t.Errorf("netraw-true capability %x, want cap_net_bind_service", capv)
	}
	if v, err := getXattr(p("opt/erofs-test/xattr-file"), "user.erofs.test"); err != nil || string(v) != "hello" {
		t.Errorf("user.erofs.test = %q (%v)", v, err)
	}
	for _, a := range []struct{ path, name string }{
		{"opt/erofs-test/acl-file", "system.posix_acl_access"},
		{"opt/erofs-test/acl-dir", "system.posix_acl_default"},
	} {
		if v, err := getXattr(p(a.path), a.name); err != nil || len(v) < 4 {
			t.Errorf("%s: %s = %x (%v)", a.path, a.name, v, err)
		}
	}
	var st unix.Stat_t
	must(t, "stat", unix.Lstat(p("opt/erofs-test/suid-true"), &st))
	if st.Mode&0o7777 != 0o4755 {
		t.Errorf("suid-true mode %#o", st.Mode&0o7777)
	}
}
