package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/containerd/v2/version"

	"github.com/erofs-vm/containerd-erofs/differ"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

func TestSnapshotterConfigParse(t *testing.T) {
	const defRoot = "/var/lib/containerd-erofs/io.containerd.snapshotter.v1.erofs-vm"
	mod := func(f func(c *SnapshotterConfig)) *SnapshotterConfig {
		c := DefaultSnapshotterConfig()
		f(c)
		return c
	}
	tests := []struct {
		name     string
		in       *SnapshotterConfig
		wantRoot string
		want     snapshotter.Config
		wantErr  []string // substrings the error must contain; nil: no error
	}{
		{
			name:     "defaults",
			in:       DefaultSnapshotterConfig(),
			wantRoot: defRoot,
			want:     snapshotter.Config{DefaultWritableSize: 1 << 30, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
		},
		{
			name:     "root_path overrides the plugin root",
			in:       mod(func(c *SnapshotterConfig) { c.RootPath = "/srv/erofs//snap/" }),
			wantRoot: "/srv/erofs/snap",
			want:     snapshotter.Config{DefaultWritableSize: 1 << 30, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
		},
		{
			name:     "overlay mode, no immutable, MiB",
			in:       &SnapshotterConfig{DefaultWritableSize: "512MiB", CommitMode: "overlay"},
			wantRoot: defRoot,
			want:     snapshotter.Config{DefaultWritableSize: 512 << 20, CommitMode: snapshotter.CommitModeOverlay},
		},
		{
			name:     "short binary unit",
			in:       mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "2g" }),
			wantRoot: defRoot,
			want:     snapshotter.Config{DefaultWritableSize: 2 << 30, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
		},
		{
			name:     "fraction",
			in:       mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "1.5GiB" }),
			wantRoot: defRoot,
			want:     snapshotter.Config{DefaultWritableSize: 3 << 29, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
		},
		{
			name:     "plain bytes",
			in:       mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "1073741824" }),
			wantRoot: defRoot,
			want:     snapshotter.Config{DefaultWritableSize: 1 << 30, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
		},
		{
			name:    "size is not a size",
			in:      mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "lots" }),
			wantErr: []string{`default_writable_size "lots"`, "not a size"},
		},
		{
			name:    "empty size",
			in:      mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "" }),
			wantErr: []string{`default_writable_size ""`, "empty"},
		},
		{
			name:    "negative size",
			in:      mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "-1GiB" }),
			wantErr: []string{`default_writable_size "-1GiB"`},
		},
		{
			name:    "unit missing: bytes below the minimum",
			in:      mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "1024" }),
			wantErr: []string{`default_writable_size "1024"`, "minimum"},
		},
		{
			name:     "largest",
			in:       mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "8TiB" }),
			wantRoot: defRoot,
			want:     snapshotter.Config{DefaultWritableSize: 8 << 40, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
		},
		{
			name:    "above the maximum",
			in:      mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "9TiB" }),
			wantErr: []string{`default_writable_size "9TiB"`, "maximum"},
		},
		{
			name:    "overflow",
			in:      mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "99999999999TiB" }),
			wantErr: []string{`default_writable_size "99999999999TiB"`, "out of range"},
		},
		{
			name:    "unknown unit",
			in:      mod(func(c *SnapshotterConfig) { c.DefaultWritableSize = "1GB/s" }),
			wantErr: []string{`default_writable_size "1GB/s"`},
		},
		{
			name:    "commit_mode unknown",
			in:      mod(func(c *SnapshotterConfig) { c.CommitMode = "sideways" }),
			wantErr: []string{`commit_mode "sideways"`, `"block"`, `"overlay"`},
		},
		{
			name:    "commit_mode is case sensitive",
			in:      mod(func(c *SnapshotterConfig) { c.CommitMode = "Block" }),
			wantErr: []string{`commit_mode "Block"`},
		},
		{
			name:    "commit_mode empty",
			in:      mod(func(c *SnapshotterConfig) { c.CommitMode = "" }),
			wantErr: []string{`commit_mode ""`},
		},
		{
			name:    "relative root_path",
			in:      mod(func(c *SnapshotterConfig) { c.RootPath = "snapshots" }),
			wantErr: []string{`root_path "snapshots"`, "absolute"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, got, err := tt.in.Parse(defRoot)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Parse(%+v) = %q, %+v; want an error", tt.in, root, got)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%+v): %v", tt.in, err)
			}
			if root != tt.wantRoot {
				t.Errorf("root = %q, want %q", root, tt.wantRoot)
			}
			if got != tt.want {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSnapshotterConfigParseNoRoot(t *testing.T) {
	if _, _, err := DefaultSnapshotterConfig().Parse(""); err == nil || !strings.Contains(err.Error(), "root_path") {
		t.Fatalf("Parse with no root anywhere: err = %v, want a root_path error", err)
	}
}

func TestDifferConfigParse(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "", want: 0},
		{in: "  ", want: 0},
		{in: "0", want: 0},
		{in: "20GiB", want: 20 << 30},
		{in: "512m", want: 512 << 20},
		{in: "huge", wantErr: `max_layer_size "huge"`},
		{in: "-5G", wantErr: `max_layer_size "-5G"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := (&DifferConfig{MaxLayerSize: tt.in}).Parse()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) err = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != (differ.Config{MaxLayerSize: tt.want}) {
				t.Errorf("Parse(%q) = %+v, want MaxLayerSize %d", tt.in, got, tt.want)
			}
		})
	}
}

// TestTOMLThroughContainerd decodes config files with containerd's own
// loader (version migration, strict decode of each plugin table onto the
// registration's default), so the toml tags are checked where they are used.
func TestTOMLThroughContainerd(t *testing.T) {
	tests := []struct {
		name  string
		toml  string
		wantS SnapshotterConfig
		wantD DifferConfig
	}{
		{
			name:  "no tables: defaults",
			toml:  "version = 3\n",
			wantS: *DefaultSnapshotterConfig(),
			wantD: *DefaultDifferConfig(),
		},
		{
			name: "partial table keeps the other defaults",
			toml: `version = 3
[plugins.'io.containerd.snapshotter.v1.erofs-vm']
  commit_mode = 'overlay'
`,
			wantS: SnapshotterConfig{DefaultWritableSize: "1GiB", CommitMode: "overlay", SetImmutable: true},
			wantD: *DefaultDifferConfig(),
		},
		{
			name: "every key",
			toml: `version = 3
[plugins.'io.containerd.snapshotter.v1.erofs-vm']
  root_path = '/srv/erofs'
  default_writable_size = '4GiB'
  commit_mode = 'block'
  set_immutable = false
[plugins.'io.containerd.differ.v1.erofs-vm']
  max_layer_size = '8GiB'
`,
			wantS: SnapshotterConfig{RootPath: "/srv/erofs", DefaultWritableSize: "4GiB", CommitMode: "block"},
			wantD: DifferConfig{MaxLayerSize: "8GiB"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			s, d := decodeWithContainerd(t, path)
			if *s != tt.wantS {
				t.Errorf("snapshotter config = %+v, want %+v", *s, tt.wantS)
			}
			if *d != tt.wantD {
				t.Errorf("differ config = %+v, want %+v", *d, tt.wantD)
			}
		})
	}
}

// TestExampleConfig loads the shipped hack/config.toml the way the daemon
// does and checks it parses and validates: the example must never rot.
func TestExampleConfig(t *testing.T) {
	s, d := decodeWithContainerd(t, filepath.Join("..", "hack", "config.toml"))
	want := SnapshotterConfig{DefaultWritableSize: "1GiB", CommitMode: "block", SetImmutable: true}
	if *s != want {
		t.Errorf("hack/config.toml snapshotter table = %+v, want %+v", *s, want)
	}
	if _, _, err := s.Parse("/var/lib/containerd/io.containerd.snapshotter.v1.erofs-vm"); err != nil {
		t.Errorf("hack/config.toml snapshotter table: %v", err)
	}
	if _, err := d.Parse(); err != nil {
		t.Errorf("hack/config.toml differ table: %v", err)
	}
}

func decodeWithContainerd(t *testing.T, path string) (*SnapshotterConfig, *DifferConfig) {
	t.Helper()
	ctx := context.Background()
	// The daemon starts from a config of the current version and migrates
	// older files (ours says version 3) up to it; do the same.
	cfg := &srvconfig.Config{Version: version.ConfigVersion}
	if err := srvconfig.LoadConfig(ctx, path, cfg); err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	s, err := cfg.Decode(ctx, "io.containerd.snapshotter.v1.erofs-vm", DefaultSnapshotterConfig())
	if err != nil {
		t.Fatalf("decode snapshotter table of %s: %v", path, err)
	}
	d, err := cfg.Decode(ctx, "io.containerd.differ.v1.erofs-vm", DefaultDifferConfig())
	if err != nil {
		t.Fatalf("decode differ table of %s: %v", path, err)
	}
	return s.(*SnapshotterConfig), d.(*DifferConfig)
}
