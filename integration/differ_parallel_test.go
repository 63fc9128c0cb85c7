package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/opencontainers/image-spec/identity"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/semaphore"

	"github.com/erofs-vm/containerd-erofs/differ/difftest"
	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDifferParallelUnpack: a pull with an unpack limiter > 1 (what
// max_concurrent_unpacks does) unpacks the layers in parallel on erofs-vm
// (the snapshotter exports the rebase capability, the differ is safe for
// concurrent Apply) through the client's unpacker and the transfer
// service, and gives the same stack as a sequential import.
func TestDifferParallelUnpack(t *testing.T) {
	differRequireRoot(t)
	archive := differAsset(t, "debian-3layer.oci.tar")
	host := startRegistry(t, archive, "erofs-test").Host
	ref := host + "/erofs-test:3layer"

	cfg, err := os.ReadFile(filepath.Join(RepoRoot(t), "hack", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	config := string(cfg) + "\n[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_unpacks = 3\n"
	// A TOML table cannot be opened twice: splice the key into the
	// example's own transfer table if it has one.
	if strings.Contains(string(cfg), "[plugins.'io.containerd.transfer.v1.local']") {
		config = strings.Replace(string(cfg), "[plugins.'io.containerd.transfer.v1.local']", "[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_unpacks = 3", 1)
	}
	d := StartDaemon(t, DaemonOptions{Config: config, LogLevel: "debug"})
	c := d.Client(t)

	// Sequential reference: import (never parallel).
	if out, err := d.Ctr(t, "-n", "seq", "images", "import", "--snapshotter", "erofs-vm", archive); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}

	t.Run("client pull", func(t *testing.T) {
		var logs syncBuffer
		old, oldLevel := log.L.Logger.Out, log.L.Logger.Level
		log.L.Logger.SetOutput(&logs)
		log.L.Logger.SetLevel(logrus.DebugLevel)
		defer func() { log.L.Logger.SetOutput(old); log.L.Logger.SetLevel(oldLevel) }()
		ctx := namespaced(d.Context(t), "client")
		resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts))})
		_, err := c.Pull(ctx, ref, client.WithPullUnpack, client.WithPullSnapshotter("erofs-vm"), client.WithResolver(resolver),
			client.WithUnpackOpts([]client.UnpackOpt{client.WithUnpackLimiter(semaphore.NewWeighted(3))}))
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		if !strings.Contains(logs.String(), "parallel=true") {
			t.Errorf("the client's unpacker did not unpack in parallel; its log:\n%s", grepLines(logs.String(), "unpack"))
		}
	})
	t.Run("transfer pull", func(t *testing.T) {
		if out, err := d.Ctr(t, "-n", "transfer", "images", "pull", "--plain-http", "--snapshotter", "erofs-vm", ref); err != nil {
			t.Fatalf("pull: %v\n%s", err, out)
		}
		if l := grepLines(d.Log(), "image unpacked"); !strings.Contains(l, "parallel=true") {
			t.Errorf("the transfer service did not unpack in parallel:\n%s", l)
		}
	})

	// Every namespace holds the same committed stack: same layer order,
	// and the top snapshot mounts to the same tree.
	_, diffIDs := imageLayers(t, namespaced(d.Context(t), "seq"), c, "docker.io/library/erofs-test:3layer")
	top := identity.ChainID(diffIDs).String()
	var want map[string]difftest.Entry
	var wantOrder string
	for _, ns := range []string{"seq", "client", "transfer"} {
		ctx := namespaced(d.Context(t), ns)
		snaps := snapshotsByName(t, ctx, c)
		info, ok := snaps[top]
		if !ok {
			t.Errorf("%s: no snapshot %s; have %v", ns, top, snaps)
			continue
		}
		order := info.Labels[snapshotter.LabelLayerOrder]
		m, err := c.SnapshotService("erofs-vm").View(ctx, "view-"+ns, top)
		if err != nil {
			t.Fatal(err)
		}
		tree := differTree(t, differMountSnapshot(t, m), difftest.Options{})
		if want == nil {
			want, wantOrder = tree, order
			continue
		}
		if order != wantOrder {
			t.Errorf("%s: layer order %s, sequential import has %s", ns, order, wantOrder)
		}
		if diff := difftest.Diff(want, tree); len(diff) > 0 {
			t.Errorf("%s: tree differs from the sequential import:\n%s", ns, strings.Join(diff, "\n"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// namespaced returns ctx in namespace ns.
func namespaced(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}
