package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
)

// fakeSnapshots is a containerd snapshots gRPC service holding canned
// mounts per (namespace, snapshotter, key). It records what it was asked,
// so the test sees that namespace and snapshotter really travel over the
// wire the way containerd's proxy sends them.
type fakeSnapshots struct {
	snapshotsapi.UnimplementedSnapshotsServer
	mounts map[string][]*types.Mount // "ns/snapshotter/key"

	mu    sync.Mutex
	asked []string
}

func (f *fakeSnapshots) Mounts(ctx context.Context, req *snapshotsapi.MountsRequest) (*snapshotsapi.MountsResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	k := ns + "/" + req.Snapshotter + "/" + req.Key
	f.mu.Lock()
	f.asked = append(f.asked, k)
	f.mu.Unlock()
	m, ok := f.mounts[k]
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "snapshot %s does not exist", req.Key)
	}
	return &snapshotsapi.MountsResponse{Mounts: m}, nil
}

// serveFake serves f on a unix socket in a temp dir and returns its path.
func serveFake(t *testing.T, f *fakeSnapshots) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "erofsctl-sn-") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

func TestSnapshotMounts(t *testing.T) {
	const dir = "/var/lib/ced/snapshots"
	stack := []*types.Mount{
		{Type: "format/erofs", Source: dir + "/3/fsmeta.erofs", Options: []string{"ro", "device=" + dir + "/1/layer.erofs", "device=" + dir + "/2/layer.erofs", "device=" + dir + "/3/layer.erofs"}},
		{Type: "ext4", Source: dir + "/4/rwlayer.img", Options: []string{"rw"}},
	}
	f := &fakeSnapshots{mounts: map[string][]*types.Mount{
		"default/erofs-vm/c1":     stack,
		"k8s.io/erofs-vm/c1":      {{Type: "erofs", Source: dir + "/9/layer.erofs", Options: []string{"ro"}}},
		"default/overlayfs/c1":    {{Type: "bind", Source: "/x", Target: "sub", Options: nil}},
		"default/erofs-vm/noopts": {{Type: "bind", Source: dir + "/5"}},
	}}
	sock := serveFake(t, f)

	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantRC   int
		wantOut  []string // lines, whitespace-collapsed
		wantJSON []jsonMount
		wantErr  string
	}{
		{
			name: "text, defaults",
			args: []string{"c1"},
			wantOut: []string{
				"format/erofs " + dir + "/3/fsmeta.erofs ro,device=" + dir + "/1/layer.erofs,device=" + dir + "/2/layer.erofs,device=" + dir + "/3/layer.erofs",
				"ext4 " + dir + "/4/rwlayer.img rw",
			},
		},
		{
			name:    "namespace flag",
			args:    []string{"--namespace", "k8s.io", "c1"},
			wantOut: []string{"erofs " + dir + "/9/layer.erofs ro"},
		},
		{
			name:    "namespace and snapshotter from the environment, as ctr reads them",
			args:    []string{"c1"},
			env:     map[string]string{"CONTAINERD_NAMESPACE": "default", "CONTAINERD_SNAPSHOTTER": "overlayfs"},
			wantOut: []string{"bind /x -"},
		},
		{
			name:    "no options print a dash",
			args:    []string{"noopts"},
			wantOut: []string{"bind " + dir + "/5 -"},
		},
		{
			name: "json",
			args: []string{"--json", "c1"},
			wantJSON: []jsonMount{
				{Type: "format/erofs", Source: dir + "/3/fsmeta.erofs", Options: stack[0].Options},
				{Type: "ext4", Source: dir + "/4/rwlayer.img", Options: []string{"rw"}},
			},
		},
		{
			name:     "json keeps target and gives [] options",
			args:     []string{"--json", "--snapshotter", "overlayfs", "c1"},
			wantJSON: []jsonMount{{Type: "bind", Source: "/x", Target: "sub", Options: []string{}}},
		},
		{
			name:    "unknown key names key and snapshotter",
			args:    []string{"missing"},
			wantRC:  1,
			wantErr: `snapshotter erofs-vm: mounts of "missing"`,
		},
		{
			name:    "no key",
			args:    nil,
			wantRC:  1,
			wantErr: "want exactly one snapshot KEY",
		},
		{
			name:    "no daemon",
			args:    []string{"--address", filepath.Join(t.TempDir(), "none.sock"), "c1"},
			wantRC:  1,
			wantErr: "no containerd socket at",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER", "CONTAINERD_ADDRESS"} {
				t.Setenv(k, tc.env[k])
			}
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--address") {
				args = append([]string{"--address", sock}, args...)
			}
			var out, errOut bytes.Buffer
			rc := run(append([]string{"snapshot-mounts"}, args...), &out, &errOut)
			if rc != tc.wantRC {
				t.Fatalf("exit %d, want %d; stderr: %s", rc, tc.wantRC, errOut.String())
			}
			if tc.wantErr != "" && !strings.Contains(errOut.String(), tc.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tc.wantErr)
			}
			if tc.wantOut != nil {
				var got []string
				for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
					got = append(got, strings.Join(strings.Fields(l), " "))
				}
				if strings.Join(got, "\n") != strings.Join(tc.wantOut, "\n") {
					t.Errorf("output:\n%s\nwant:\n%s", out.String(), strings.Join(tc.wantOut, "\n"))
				}
			}
			if tc.wantJSON != nil {
				var got []jsonMount
				if err := json.Unmarshal(out.Bytes(), &got); err != nil {
					t.Fatalf("json: %v\n%s", err, out.String())
				}
				gb, _ := json.Marshal(got)
				wb, _ := json.Marshal(tc.wantJSON)
				if !bytes.Equal(gb, wb) {
					t.Errorf("json %s, want %s", gb, wb)
				}
			}
		})
	}
	// The text columns are aligned: the source of every line starts at the
	// same offset.
	var out bytes.Buffer
	if rc := run([]string{"snapshot-mounts", "--address", sock, "c1"}, &out, &out); rc != 0 {
		t.Fatal(out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if strings.Index(lines[0], dir) != strings.Index(lines[1], dir) {
		t.Errorf("columns not aligned:\n%s", out.String())
	}
}
