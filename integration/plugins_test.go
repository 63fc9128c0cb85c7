package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/services/introspection/v1"
	"github.com/pelletier/go-toml/v2"
	"golang.org/x/mod/modfile"
)

// The daemon tests need root for what the daemon itself does at startup
// (overlayfs checks, mount manager, CRI) and the snapshotter needs it too.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd-erofs daemon tests need root")
	}
}

// introspect returns the daemon's plugins by URI.
func introspect(t *testing.T, d *Daemon) map[string]*introspection.Plugin {
	t.Helper()
	resp, err := d.Client(t).IntrospectionService().Plugins(d.Context(t))
	if err != nil {
		t.Fatalf("introspection Plugins: %v", err)
	}
	m := map[string]*introspection.Plugin{}
	for _, p := range resp.Plugins {
		m[p.Type+"."+p.ID] = p
	}
	return m
}

// initErr is p's init error message, "" when it loaded ("skip plugin" in
// it when it skipped).
func initErr(p *introspection.Plugin) string {
	return p.GetInitErr().GetMessage()
}

// TestDaemonLoadsPlugins starts the daemon with the example operator config
// (hack/config.toml) and checks through the API that both erofs-vm plugins
// loaded next to the stock ones the example config relies on, that the
// services built on top of them (diff service with default
// ['erofs-vm', 'walking'], transfer with an erofs-vm unpack_config, CRI)
// loaded too, and what the snapshotter exports.
func TestDaemonLoadsPlugins(t *testing.T) {
	requireRoot(t)
	d := StartDaemon(t, DaemonOptions{})
	plugins := introspect(t, d)

	for _, uri := range []string{
		SnapshotterURI,
		DifferURI,
		"io.containerd.snapshotter.v1.overlayfs",
		"io.containerd.differ.v1.walking",
		"io.containerd.metadata.v1.bolt",
		"io.containerd.service.v1.diff-service",
		"io.containerd.transfer.v1.local",
		"io.containerd.grpc.v1.cri",
	} {
		p, ok := plugins[uri]
		if !ok {
			t.Errorf("%s: not registered", uri)
			continue
		}
		if e := initErr(p); e != "" {
			t.Errorf("%s: init error: %s", uri, e)
		}
	}

	if sn, ok := plugins[SnapshotterURI]; ok && initErr(sn) == "" {
		if !slices.Contains(sn.Capabilities, "rebase") {
			t.Errorf("%s capabilities = %v, want rebase among them", SnapshotterURI, sn.Capabilities)
		}
		if got := sn.Exports["root"]; got != d.SnapshotterRoot() {
			t.Errorf("%s exports root = %q, want %q", SnapshotterURI, got, d.SnapshotterRoot())
		}
	}

	// The operator's view: ctr (containerd's, at the go.mod version) sees
	// both plugins loaded.
	out, err := d.Ctr(t, "plugins", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"io.containerd.snapshotter.v1", "io.containerd.differ.v1"} {
		if !ctrPluginOK(out, typ, "erofs-vm") {
			t.Errorf("ctr plugins ls: no %s erofs-vm with status ok in:\n%s", typ, out)
		}
	}
}

// ctrPluginOK finds the line "TYPE ID PLATFORMS STATUS" of `ctr plugins ls`.
func ctrPluginOK(out, typ, id string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == typ && f[1] == id && f[len(f)-1] == "ok" {
			return true
		}
	}
	return false
}

// exampleConfig returns hack/config.toml with each old replaced by new.
func exampleConfig(t *testing.T, oldnew ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "hack", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(oldnew); i += 2 {
		if !strings.Contains(s, oldnew[i]) {
			t.Fatalf("hack/config.toml has no %q to replace", oldnew[i])
		}
		s = strings.Replace(s, oldnew[i], oldnew[i+1], 1)
	}
	return s
}

// TestDaemonBadConfig checks that a bad value in our plugin tables is
// reported where an operator looks, naming the key and the value:
//
//   - by default containerd keeps running with the plugin failed: its
//     init error is in introspection (ctr plugins ls -d) and in the log as
//     "failed to load plugin";
//   - with the plugin in required_plugins the daemon refuses to start and
//     the error is its exit message.
func TestDaemonBadConfig(t *testing.T) {
	requireRoot(t)
	const differTable = "\n[plugins.'io.containerd.differ.v1.erofs-vm']\n  max_layer_size = 'huge'\n"
	tests := []struct {
		name    string
		uri     string
		replace []string // old, new pairs applied to hack/config.toml
		append  string
		want    string
	}{
		{
			name:    "writable size",
			uri:     SnapshotterURI,
			replace: []string{"default_writable_size = '1GiB'", "default_writable_size = 'lots'"},
			want:    `default_writable_size "lots"`,
		},
		{
			name:    "commit mode",
			uri:     SnapshotterURI,
			replace: []string{"commit_mode = 'block'", "commit_mode = 'sideways'"},
			want:    `commit_mode "sideways": must be "block" or "overlay"`,
		},
		{
			name:    "relative root",
			uri:     SnapshotterURI,
			replace: []string{"root_path = ''", "root_path = 'snapshots'"},
			want:    `root_path "snapshots": must be an absolute path`,
		},
		{
			name:   "differ size cap",
			uri:    DifferURI,
			append: differTable,
			want:   `max_layer_size "huge"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := exampleConfig(t, tt.replace...) + tt.append

			t.Run("plugin fails", func(t *testing.T) {
				d := StartDaemon(t, DaemonOptions{Config: cfg})
				p, ok := introspect(t, d)[tt.uri]
				if !ok {
					t.Fatalf("%s not registered", tt.uri)
				}
				if e := initErr(p); !strings.Contains(e, tt.want) {
					t.Errorf("%s init error = %q, want it to contain %q", tt.uri, e, tt.want)
				}
				if log := d.Log(); !daemonLogHas(log, "failed to load plugin", tt.uri, tt.want) {
					t.Errorf("daemon log has no 'failed to load plugin' line for %s containing %q", tt.uri, tt.want)
				}
			})

			t.Run("required plugin stops the daemon", func(t *testing.T) {
				req := strings.Replace(cfg, "version = 3\n",
					"version = 3\nrequired_plugins = ['"+tt.uri+"']\n", 1)
				d, err := LaunchDaemon(t, DaemonOptions{Config: req})
				if err == nil {
					t.Fatalf("daemon started with a bad %s config and %s required", tt.name, tt.uri)
				}
				if d.Running() {
					t.Fatalf("daemon did not come up but runs: %v", err)
				}
				want := "load required plugin " + tt.uri + ": "
				if log := d.Log(); !daemonLogHas(log, "containerd-erofs: ", want, tt.want) {
					t.Errorf("daemon exit message lacks %q ... %q:\n%s", want, tt.want, d.logTailText())
				}
			})
		})
	}
}

// daemonLogHas reports whether one line of log contains every part.
func daemonLogHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			// logrus quotes the error field: its quotes come escaped.
			if !strings.Contains(line, p) && !strings.Contains(line, strings.ReplaceAll(p, `"`, `\"`)) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// TestDaemonConfigDefault checks that `containerd-erofs config default`
// shows both plugin tables with their defaults: what operators start from.
func TestDaemonConfigDefault(t *testing.T) {
	out, err := exec.Command(Binary(t, "containerd-erofs"), "config", "default").Output()
	if err != nil {
		t.Fatalf("containerd-erofs config default: %v", err)
	}
	var cfg struct {
		Plugins map[string]map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("config default is not TOML: %v\n%s", err, out)
	}
	want := map[string]map[string]any{
		SnapshotterURI: {"root_path": "", "default_writable_size": "1GiB", "commit_mode": "block", "set_immutable": true},
		DifferURI:      {"max_layer_size": ""},
	}
	for uri, keys := range want {
		got, ok := cfg.Plugins[uri]
		if !ok {
			t.Errorf("config default has no [plugins.'%s'] table", uri)
			continue
		}
		for k, v := range keys {
			if got[k] != v {
				t.Errorf("config default [plugins.'%s'] %s = %#v, want %#v", uri, k, got[k], v)
			}
		}
	}
	// containerd's own erofs plugins are still there under their ID.
	if _, ok := cfg.Plugins["io.containerd.snapshotter.v1.erofs"]; !ok {
		t.Errorf("config default lost containerd's own erofs snapshotter table")
	}
}

// TestDaemonVersion checks --version: our program name always, and with
// binaries from `make build` our module and the embedded containerd
// version read from go.mod (the Makefile stamps both).
func TestDaemonVersion(t *testing.T) {
	bin := Binary(t, "containerd-erofs")
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	got := strings.TrimSpace(string(out))
	if !strings.HasPrefix(got, "containerd-erofs ") {
		t.Errorf("--version = %q, want it to start with the program name", got)
	}
	if filepath.Base(filepath.Dir(bin)) != "bin" {
		return // built by the test helper, without the Makefile's stamps
	}
	gomod, err := os.ReadFile(filepath.Join(RepoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.ParseLax("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cdVersion string
	for _, r := range mf.Require {
		if r.Mod.Path == "github.com/containerd/containerd/v2" {
			cdVersion = r.Mod.Version
		}
	}
	if cdVersion == "" {
		t.Fatal("go.mod requires no github.com/containerd/containerd/v2")
	}
	for _, want := range []string{"github.com/erofs-vm/containerd-erofs", "(containerd " + cdVersion + ")"} {
		if !strings.Contains(got, want) {
			t.Errorf("--version = %q, want it to contain %q", got, want)
		}
	}
}

// TestDaemonSkipsWithoutMkfsExt4 runs the daemon with a PATH that has no
// mkfs.ext4. In block mode the snapshotter must skip (not fail: a failing
// snapshotter takes the metadata plugin and nearly every service down with
// it), so metadata and the differ still load; in overlay mode, which never
// runs mkfs.ext4, it loads.
func TestDaemonSkipsWithoutMkfsExt4(t *testing.T) {
	requireRoot(t)
	if p, err := exec.LookPath("mkfs.ext4"); err == nil && !strings.HasPrefix(p, "/usr/sbin/") && !strings.HasPrefix(p, "/sbin/") {
		t.Skipf("mkfs.ext4 is at %s, which a PATH of /usr/bin:/bin may reach", p)
	}
	// The transfer service's unpack_config names erofs-vm; without the
	// snapshotter it would fail, which is not what this test is about.
	noTransfer := func(cfg string) string {
		i := strings.Index(cfg, "[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]")
		if i < 0 {
			t.Fatal("hack/config.toml has no unpack_config")
		}
		return cfg[:i]
	}
	tests := []struct {
		name     string
		cfg      string
		wantSkip bool
	}{
		{"block mode skips", noTransfer(exampleConfig(t)), true},
		{"overlay mode loads", noTransfer(exampleConfig(t, "commit_mode = 'block'", "commit_mode = 'overlay'")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := StartDaemon(t, DaemonOptions{Config: tt.cfg, Env: []string{"PATH=/usr/bin:/bin"}})
			plugins := introspect(t, d)
			for _, uri := range []string{SnapshotterURI, DifferURI} {
				if plugins[uri] == nil {
					t.Fatalf("%s not registered", uri)
				}
			}
			sn := initErr(plugins[SnapshotterURI])
			if tt.wantSkip {
				if !strings.Contains(sn, "mkfs.ext4") || !strings.Contains(sn, "skip plugin") {
					t.Errorf("%s init error = %q, want a skip naming mkfs.ext4", SnapshotterURI, sn)
				}
			} else if sn != "" {
				t.Errorf("%s init error = %q, want none", SnapshotterURI, sn)
			}
			for _, uri := range []string{"io.containerd.metadata.v1.bolt", DifferURI, "io.containerd.service.v1.diff-service", "io.containerd.snapshotter.v1.overlayfs"} {
				if e := initErr(plugins[uri]); e != "" {
					t.Errorf("%s init error: %s", uri, e)
				}
			}
		})
	}
}
