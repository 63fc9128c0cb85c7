package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/erofs-vm/containerd-erofs/snapshotter"
)

// criConfig is hack/config.toml plus CRI's image service on erofs-vm with
// the registry hosts under hostsDir (none when empty), and optionally the transfer
// service's max_concurrent_unpacks (which CRI's pull goes through).
func criConfig(t *testing.T, hostsDir string, maxUnpacks int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "hack", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b) + `
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'erofs-vm'
`
	if hostsDir != "" {
		cfg += fmt.Sprintf("[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '%s'\n", hostsDir)
	}
	if maxUnpacks > 0 {
		const tbl = "[plugins.'io.containerd.transfer.v1.local']"
		if strings.Contains(cfg, tbl+"\n") {
			cfg = strings.Replace(cfg, tbl+"\n", fmt.Sprintf("%s\n  max_concurrent_unpacks = %d\n", tbl, maxUnpacks), 1)
		} else {
			cfg += fmt.Sprintf("%s\n  max_concurrent_unpacks = %d\n", tbl, maxUnpacks)
		}
	}
	return cfg
}

// criHostsDir writes <dir>/<host>/hosts.toml sending pulls of host to the
// plain-HTTP registry, the way an operator configures a registry mirror.
func criHostsDir(t *testing.T, host string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, host), 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", host, host)
	if err := os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// criImageClient dials the daemon's CRI image service (the same socket as
// containerd's own API).
func criImageClient(t *testing.T, d *Daemon) runtime.ImageServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+d.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtime.NewImageServiceClient(conn)
}

// TestCRIPullErofsVM: with CRI's image service configured to use
// erofs-vm, a kubelet-style PullImage over the CRI API (no crictl) pulls
// the 3-layer image from a plain-HTTP registry and unpacks it into
// erofs-vm in namespace k8s.io: ImageStatus reports it, ImageFsInfo names
// erofs-vm's root, every layer is a committed erofs-vm snapshot with its
// §5 labels, none landed in overlayfs, and the top layer mounts (kernel)
// to the oracle. With max_concurrent_unpacks = 3 the transfer service
// unpacks the layers in parallel (rebasing on erofs-vm) and the result is
// the same. Without a hosts.toml, containerd reaches a registry on
// 127.0.0.1:PORT over plain HTTP by itself.
func TestCRIPullErofsVM(t *testing.T) {
	differRequireRoot(t)
	archive := differAsset(t, "debian-3layer.oci.tar")
	oracle := rcOracle(t, rcLayerTars(t))
	for _, tc := range []struct {
		name       string
		maxUnpacks int
		hostsToml  bool
	}{
		{"sequential", 0, true},
		{"max_concurrent_unpacks=3", 3, true},
		// containerd's resolver tries HTTPS then falls back to plain HTTP
		// for localhost with a port when no hosts.toml says otherwise.
		{"localhost without hosts.toml", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := startRegistry(t, archive, "erofs/test")
			ref := reg.Host + "/erofs/test:3layer"
			hosts := ""
			if tc.hostsToml {
				hosts = criHostsDir(t, reg.Host)
			}
			d := StartDaemon(t, DaemonOptions{Config: criConfig(t, hosts, tc.maxUnpacks), LogLevel: "debug"})
			cri := criImageClient(t, d)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()

			pulled, err := cri.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: ref}})
			if err != nil {
				t.Fatalf("CRI PullImage %s: %v\nregistry saw: %v", ref, err, reg.Requests())
			}
			st, err := cri.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: ref}})
			if err != nil {
				t.Fatal(err)
			}
			if st.Image == nil || st.Image.Id != pulled.ImageRef || !contains(st.Image.RepoTags, ref) {
				t.Fatalf("ImageStatus %s = %+v; PullImage returned %s", ref, st.Image, pulled.ImageRef)
			}
			t.Logf("CRI pulled %s: id %s, %d bytes", ref, st.Image.Id, st.Image.Size)
			blobGets := 0
			for _, r := range reg.Requests() {
				if strings.HasPrefix(r, "GET ") && strings.Contains(r, "/blobs/") && strings.HasSuffix(r, " 200") {
					blobGets++
				}
			}
			if blobGets < 4 { // config + 3 layers
				t.Errorf("the registry served %d blobs, want the config and 3 layers: %v", blobGets, reg.Requests())
			}
			fs, err := cri.ImageFsInfo(ctx, &runtime.ImageFsInfoRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(fs.ImageFilesystems) == 0 || fs.ImageFilesystems[0].FsId.GetMountpoint() != d.SnapshotterRoot() {
				t.Errorf("ImageFsInfo = %v, want erofs-vm's root %s", fs.ImageFilesystems, d.SnapshotterRoot())
			}

			c := d.Client(t)
			kctx := namespaced(d.Context(t), "k8s.io")
			chain := rcChain(t, kctx, c, ref)
			infos, err := rcSnapshots(kctx, c)
			if err != nil {
				t.Fatal(err)
			}
			for i, id := range chain {
				info, ok := infos[id]
				if !ok || info.Kind != snapshots.KindCommitted {
					t.Errorf("layer %d: no committed erofs-vm snapshot %s in k8s.io: %v", i+1, id, keys(infos))
					continue
				}
				if info.Labels[snapshotter.LabelLayerDigest] == "" || info.Labels[snapshotter.LabelLayerBlobPath] == "" {
					t.Errorf("layer %d: labels %v", i+1, info.Labels)
				}
				if i > 0 && info.Labels[snapshotter.LabelLayerOrder] == "" {
					t.Errorf("layer %d: no layer order: %v", i+1, info.Labels)
				}
			}
			if err := c.SnapshotService("overlayfs").Walk(kctx, func(_ context.Context, i snapshots.Info) error {
				t.Errorf("snapshot %s landed in overlayfs", i.Name)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			lctx, _ := rcLease(t, kctx, c)
			rcKernelCheck(t, lctx, c, chain[len(chain)-1], oracle[len(chain)-1])

			log := d.Log()
			unpacked := grepLines(log, "image unpacked")
			t.Logf("daemon log, unpack:\n%s", unpacked)
			if rb := grepLines(log, "rebase"); rb != "" {
				t.Logf("daemon log, rebase:\n%s", rb)
			}
			wantParallel := fmt.Sprintf("parallel=%v", tc.maxUnpacks > 1)
			if !strings.Contains(unpacked, wantParallel) {
				t.Errorf("max_concurrent_unpacks=%d: want %s in the unpack log:\n%s", tc.maxUnpacks, wantParallel, unpacked)
			}
			if strings.Contains(log, "does not support rebase capability") {
				t.Errorf("containerd did not see erofs-vm's rebase capability")
			}
			// In parallel mode each layer was prepared without a parent
			// and rebased at Commit: the top's fsmeta must still stack
			// the three layers in image order.
			_, diffIDs := imageLayers(t, kctx, c, ref)
			var wantOrder []string
			for _, d := range diffIDs {
				wantOrder = append(wantOrder, d.String())
			}
			// The top's merged disk was built by the content check's View
			// above (its first use): read the labels again.
			infos, err = rcSnapshots(kctx, c)
			if err != nil {
				t.Fatal(err)
			}
			top := infos[chain[len(chain)-1]]
			order, err := snapshotter.DecodeLayerOrder(top.Labels[snapshotter.LabelLayerOrder])
			if err != nil || strings.Join(order, ",") != strings.Join(wantOrder, ",") || top.Labels[snapshotter.LabelFSMetaLayers] != "3" {
				t.Errorf("top layer: layer order %v (%v), fsmeta-layers %q; want %v, 3", order, err, top.Labels[snapshotter.LabelFSMetaLayers], diffIDs)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
