package decompress

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// inflaters are the gzip decoders decompressWith can use here: "" is the
// in-process one; igzip and unpigz are tested where installed (hack/
// install-deps.sh installs both).
func inflaters(t *testing.T) []string {
	t.Helper()
	list := []string{""}
	for _, name := range []string{"igzip", "unpigz"} {
		p, err := exec.LookPath(name)
		if err != nil {
			if os.Getenv("EROFS_REQUIRE_ASSETS") == "1" {
				t.Fatalf("%s not on PATH (hack/install-deps.sh installs it)", name)
			}
			t.Logf("%s not on PATH: not tested", name)
			continue
		}
		list = append(list, p)
	}
	return list
}

func inflaterName(p string) string {
	if p == "" {
		return "go"
	}
	return p[strings.LastIndex(p, "/")+1:]
}

func gzipBytes(t *testing.T, members ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, m := range members {
		zw := gzip.NewWriter(&out)
		if _, err := zw.Write(m); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func zstdBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// randomBytes is incompressible data: n bytes of it make n bytes of
// output, so sizes in the tests are what the pipes carry.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readAllFrom(ctx context.Context, t *testing.T, blob io.Reader, inflater string) ([]byte, error) {
	t.Helper()
	rc, err := decompressWith(ctx, bufio.NewReaderSize(blob, 1<<20), inflater)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestDecompressRoundTrip(t *testing.T) {
	// 3 MiB: more than the pipes and the feeder's buffer hold, so the
	// inflater blocks on both sides during the test.
	big := randomBytes(3<<20, 1)
	small := []byte("a layer that is not a tar, which decompress does not care about\n")
	cases := []struct {
		name string
		blob []byte
		want []byte
	}{
		{"gzip", gzipBytes(t, big), big},
		{"gzip two members", gzipBytes(t, small, big), append(append([]byte{}, small...), big...)},
		{"gzip empty", gzipBytes(t, nil), nil},
		{"zstd", zstdBytes(t, big), big},
		{"plain", small, small},
		{"empty blob", nil, nil},
	}
	for _, inf := range inflaters(t) {
		for _, tc := range cases {
			t.Run(inflaterName(inf)+"/"+tc.name, func(t *testing.T) {
				got, err := readAllFrom(t.Context(), t, bytes.NewReader(tc.blob), inf)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("got %d bytes, want %d (equal: false)", len(got), len(tc.want))
				}
			})
		}
	}
}

func readerOf(b []byte) func() io.Reader {
	return func() io.Reader { return bytes.NewReader(b) }
}

// failingAfter reads b and then fails with err instead of io.EOF.
func failingAfter(b []byte, err error) func() io.Reader {
	return func() io.Reader { return &failingReader{r: bytes.NewReader(b), err: err} }
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestDecompressErrors(t *testing.T) {
	big := randomBytes(1<<20, 2)
	whole := gzipBytes(t, big)
	first := gzipBytes(t, []byte("first member\n"))
	errStore := errors.New("content store: read failed")
	cases := []struct {
		name   string
		blob   func() io.Reader
		wantIs error // when set, the error must wrap it
	}{
		// Every inflater must report a cut stream, whatever its wording.
		{name: "truncated gzip", blob: readerOf(whole[:len(whole)/2])},
		{name: "gzip with a bad CRC", blob: readerOf(append(whole[:len(whole)-8:len(whole)-8], 0, 0, 0, 0, 0, 0, 0x10, 0))},
		// A failed read of the blob that happens to end at a gzip member
		// boundary still leaves a valid, shorter stream: the read error
		// must come out, not a clean end.
		{name: "blob read error at a member boundary", blob: failingAfter(first, errStore), wantIs: errStore},
		{name: "blob read error mid-member", blob: failingAfter(whole[:len(whole)/2], errStore)},
	}
	for _, inf := range inflaters(t) {
		for _, tc := range cases {
			t.Run(inflaterName(inf)+"/"+tc.name, func(t *testing.T) {
				_, err := readAllFrom(t.Context(), t, tc.blob(), inf)
				if err == nil {
					t.Fatal("no error")
				}
				t.Logf("error: %v", err)
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("error %q does not wrap %q", err, tc.wantIs)
				}
			})
		}
	}
}

// TestInflaterStops: an abandoned or cancelled stream reaps the inflater
// promptly, with its input and output pipes still full.
func TestInflaterStops(t *testing.T) {
	path, err := exec.LookPath("igzip")
	if err != nil {
		t.Skip("igzip not on PATH")
	}
	blob := gzipBytes(t, randomBytes(8<<20, 3))
	for _, cancel := range []bool{false, true} {
		name := map[bool]string{false: "close early", true: "cancel"}[cancel]
		t.Run(name, func(t *testing.T) {
			ctx, stop := context.WithCancel(t.Context())
			defer stop()
			z, err := startInflater(ctx, path, bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(z, make([]byte, 1<<20)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // let both pipes fill up
			done := make(chan error, 1)
			if cancel {
				stop()
				go func() {
					_, err := io.Copy(io.Discard, z)
					done <- err
				}()
			} else {
				go func() { done <- z.Close() }()
			}
			select {
			case err := <-done:
				if cancel && err == nil {
					t.Fatal("a cancelled stream ended without an error")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the inflater did not stop within 10s")
			}
			z.Close()
			if z.cmd.ProcessState == nil {
				t.Fatal("the inflater was not reaped")
			}
		})
	}
}

func TestChooseInflater(t *testing.T) {
	all := map[string]string{"igzip": "/usr/bin/igzip", "unpigz": "/usr/bin/unpigz"}
	cases := []struct {
		name string
		env  map[string]string
		have map[string]string
		want string
	}{
		{"igzip first", nil, all, "/usr/bin/igzip"},
		{"igzip disabled", map[string]string{"CONTAINERD_DISABLE_IGZIP": "1"}, all, "/usr/bin/unpigz"},
		{"both disabled", map[string]string{"CONTAINERD_DISABLE_IGZIP": "true", "CONTAINERD_DISABLE_PIGZ": "1"}, all, ""},
		{"explicitly enabled", map[string]string{"CONTAINERD_DISABLE_IGZIP": "false"}, all, "/usr/bin/igzip"},
		{"unparsable means enabled, as in containerd", map[string]string{"CONTAINERD_DISABLE_IGZIP": "maybe"}, all, "/usr/bin/igzip"},
		{"only unpigz installed", nil, map[string]string{"unpigz": "/usr/bin/unpigz"}, "/usr/bin/unpigz"},
		{"none installed", nil, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseInflater(
				func(k string) string { return tc.env[k] },
				func(name string) (string, error) {
					if p, ok := tc.have[name]; ok {
						return p, nil
					}
					return "", exec.ErrNotFound
				})
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
