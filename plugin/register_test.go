package plugin

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	bolt "go.etcd.io/bbolt"

	"github.com/erofs-vm/containerd-erofs/differ"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

func registration(t *testing.T, typ plugin.Type) plugin.Registration {
	t.Helper()
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if r.Type == typ && r.ID == ID {
			return r
		}
	}
	t.Fatalf("no %s.%s registered", typ, ID)
	return plugin.Registration{}
}

func TestRegistrations(t *testing.T) {
	s := registration(t, plugins.SnapshotPlugin)
	if s.URI() != "io.containerd.snapshotter.v1.erofs-vm" {
		t.Errorf("snapshotter URI = %q", s.URI())
	}
	if c, ok := s.Config.(*SnapshotterConfig); !ok || *c != *DefaultSnapshotterConfig() {
		t.Errorf("snapshotter default config = %#v, want %#v", s.Config, DefaultSnapshotterConfig())
	}
	d := registration(t, plugins.DiffPlugin)
	if d.URI() != "io.containerd.differ.v1.erofs-vm" {
		t.Errorf("differ URI = %q", d.URI())
	}
	if !slices.Contains(d.Requires, plugins.MetadataPlugin) {
		t.Errorf("differ requires %v, want %s among them", d.Requires, plugins.MetadataPlugin)
	}
	if c, ok := d.Config.(*DifferConfig); !ok || *c != *DefaultDifferConfig() {
		t.Errorf("differ default config = %#v, want %#v", d.Config, DefaultDifferConfig())
	}
}

// fakeHost makes InitFn see h for the duration of the test.
func fakeHost(t *testing.T, h host) {
	orig := currentHost
	currentHost = func() host { return h }
	t.Cleanup(func() { currentHost = orig })
}

// stubSnapshotter records what initSnapshotter passes to snapshotter.New.
type stubSnapshotter struct {
	snapshots.Snapshotter
	root string
	cfg  snapshotter.Config
}

func TestInitSnapshotter(t *testing.T) {
	const propRoot = "/var/lib/containerd/io.containerd.snapshotter.v1.erofs-vm"
	runs := host{"linux", 0, pathWith("mkfs.ext4")}
	tests := []struct {
		name     string
		h        host
		cfg      *SnapshotterConfig
		newErr   error  // what the stubbed snapshotter.New returns
		wantRoot string // root handed to New and exported; "" when New must not be called
		want     snapshotter.Config
		wantErr  string
		wantSkip bool
	}{
		{
			name:     "defaults",
			h:        runs,
			cfg:      DefaultSnapshotterConfig(),
			wantRoot: propRoot,
			want:     snapshotter.Config{DefaultWritableSize: 1 << 30, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
		},
		{
			name:     "root_path and overlay",
			h:        host{"linux", 0, pathWith()},
			cfg:      &SnapshotterConfig{RootPath: "/srv/snap", DefaultWritableSize: "64MiB", CommitMode: "overlay"},
			wantRoot: "/srv/snap",
			want:     snapshotter.Config{DefaultWritableSize: 64 << 20, CommitMode: snapshotter.CommitModeOverlay},
		},
		{
			name:    "bad size is an init error, not a skip",
			h:       runs,
			cfg:     &SnapshotterConfig{DefaultWritableSize: "lots", CommitMode: "block"},
			wantErr: `default_writable_size "lots"`,
		},
		{
			name:    "bad mode is reported even where the plugin would skip",
			h:       host{"linux", 1000, pathWith()},
			cfg:     &SnapshotterConfig{DefaultWritableSize: "1GiB", CommitMode: "sideways"},
			wantErr: `commit_mode "sideways"`,
		},
		{
			name:     "not root skips",
			h:        host{"linux", 1000, pathWith("mkfs.ext4")},
			cfg:      DefaultSnapshotterConfig(),
			wantErr:  "needs root",
			wantSkip: true,
		},
		{
			name:     "block without mkfs.ext4 skips",
			h:        host{"linux", 0, pathWith()},
			cfg:      DefaultSnapshotterConfig(),
			wantErr:  "mkfs.ext4",
			wantSkip: true,
		},
		{
			name:     "snapshotter.New failing is an init error naming the root",
			h:        runs,
			cfg:      DefaultSnapshotterConfig(),
			newErr:   errors.New("metadata.db: permission denied"),
			wantRoot: propRoot,
			want:     snapshotter.Config{DefaultWritableSize: 1 << 30, CommitMode: snapshotter.CommitModeBlock, SetImmutable: true},
			wantErr:  "erofs-vm snapshotter at " + propRoot + ": metadata.db: permission denied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeHost(t, tt.h)
			var called *stubSnapshotter
			orig := newSnapshotter
			newSnapshotter = func(root string, cfg snapshotter.Config) (snapshots.Snapshotter, error) {
				called = &stubSnapshotter{root: root, cfg: cfg}
				if tt.newErr != nil {
					return nil, tt.newErr
				}
				return called, nil
			}
			t.Cleanup(func() { newSnapshotter = orig })

			ic := plugin.NewContext(context.Background(), plugin.NewPluginSet(), map[string]string{plugins.PropertyRootDir: propRoot})
			ic.Config = tt.cfg
			inst, err := registration(t, plugins.SnapshotPlugin).InitFn(ic)

			if tt.wantRoot == "" && called != nil {
				t.Errorf("snapshotter.New called with %q, %+v; want no call", called.root, called.cfg)
			}
			if tt.wantRoot != "" {
				if called == nil {
					t.Fatal("snapshotter.New not called")
				}
				if called.root != tt.wantRoot || called.cfg != tt.want {
					t.Errorf("snapshotter.New(%q, %+v), want (%q, %+v)", called.root, called.cfg, tt.wantRoot, tt.want)
				}
				if got := ic.Meta.Exports[plugins.SnapshotterRootDir]; got != tt.wantRoot {
					t.Errorf("exported root = %q, want %q", got, tt.wantRoot)
				}
				if !slices.Contains(ic.Meta.Capabilities, snapshots.RebaseCap) {
					t.Errorf("capabilities %v lack %q", ic.Meta.Capabilities, snapshots.RebaseCap)
				}
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("InitFn: %v", err)
				}
				if inst != called {
					t.Errorf("InitFn returned %v, not the snapshotter New made", inst)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("InitFn err = %v, want one containing %q", err, tt.wantErr)
			}
			if got := plugin.IsSkipPlugin(err); got != tt.wantSkip {
				t.Errorf("IsSkipPlugin(%q) = %v, want %v", err, got, tt.wantSkip)
			}
		})
	}
}

// metadataSet returns a plugin set holding a real metadata DB (bolt +
// local content store), as containerd's metadata plugin provides it.
func metadataSet(t *testing.T) (*plugin.Set, *metadata.DB) {
	t.Helper()
	dir := t.TempDir()
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bdb.Close() })
	db := metadata.NewDB(bdb, cs, nil)
	if err := db.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	set := plugin.NewPluginSet()
	r := plugin.Registration{
		Type:   plugins.MetadataPlugin,
		ID:     "bolt",
		InitFn: func(*plugin.InitContext) (any, error) { return db, nil },
	}
	if err := set.Add(r.Init(plugin.NewContext(context.Background(), set, nil))); err != nil {
		t.Fatal(err)
	}
	return set, db
}

func TestInitDiffer(t *testing.T) {
	set, db := metadataSet(t)
	tests := []struct {
		name     string
		h        host
		set      *plugin.Set
		cfg      *DifferConfig
		want     differ.Config
		wantErr  string
		wantSkip bool
	}{
		{name: "defaults", h: host{"linux", 0, pathWith()}, set: set, cfg: DefaultDifferConfig()},
		{name: "cap", h: host{"linux", 0, pathWith()}, set: set, cfg: &DifferConfig{MaxLayerSize: "10GiB"}, want: differ.Config{MaxLayerSize: 10 << 30}},
		{name: "not root still loads", h: host{"linux", 1000, pathWith()}, set: set, cfg: DefaultDifferConfig()},
		{name: "bad cap", h: host{"linux", 0, pathWith()}, set: set, cfg: &DifferConfig{MaxLayerSize: "big"}, wantErr: `max_layer_size "big"`},
		{name: "not linux skips", h: host{"darwin", 0, pathWith()}, set: set, cfg: DefaultDifferConfig(), wantErr: "needs Linux", wantSkip: true},
		{name: "no metadata plugin", h: host{"linux", 0, pathWith()}, set: plugin.NewPluginSet(), cfg: DefaultDifferConfig(), wantErr: "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeHost(t, tt.h)
			var gotStore content.Store
			var gotCfg differ.Config
			orig := newDiffer
			newDiffer = func(store content.Store, cfg differ.Config) *differ.Differ {
				gotStore, gotCfg = store, cfg
				return orig(store, cfg)
			}
			t.Cleanup(func() { newDiffer = orig })

			ic := plugin.NewContext(context.Background(), tt.set, nil)
			ic.Config = tt.cfg
			inst, err := registration(t, plugins.DiffPlugin).InitFn(ic)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("InitFn err = %v, want one containing %q", err, tt.wantErr)
				}
				if got := plugin.IsSkipPlugin(err); got != tt.wantSkip {
					t.Errorf("IsSkipPlugin(%q) = %v, want %v", err, got, tt.wantSkip)
				}
				return
			}
			if err != nil {
				t.Fatalf("InitFn: %v", err)
			}
			if _, ok := inst.(*differ.Differ); !ok {
				t.Fatalf("InitFn returned %T, want *differ.Differ", inst)
			}
			// The differ must use the namespaced, lease-aware store of the
			// metadata DB, not the raw content plugin.
			if gotStore != db.ContentStore() {
				t.Errorf("differ got store %T %p, want the metadata DB's content store", gotStore, gotStore)
			}
			if gotCfg != tt.want {
				t.Errorf("differ config = %+v, want %+v", gotCfg, tt.want)
			}
		})
	}
}
