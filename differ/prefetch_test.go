package differ

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// TestPrefetchReader: what comes out is what went in, in order, across
// chunk boundaries and chunk reuse; the hash covers exactly those bytes;
// the source's error comes through; Close of an abandoned reader returns.
func TestPrefetchReader(t *testing.T) {
	data := make([]byte, 5*prefetchChunk+12345)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	tests := []struct {
		name string
		src  io.Reader
		read int // bytes per Read call
		want error
	}{
		{"big reads", bytes.NewReader(data), 3 << 20, nil},
		{"odd reads", bytes.NewReader(data), 4097, nil},
		{"one byte source", iotest.OneByteReader(bytes.NewReader(data[:70000])), 1000, nil},
		{"source error", io.MultiReader(bytes.NewReader(data[:prefetchChunk+1]), iotest.ErrReader(errors.New("boom"))), 65536, errors.New("boom")},
		{"empty", bytes.NewReader(nil), 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := sha256.New()
			p := newPrefetchReader(tc.src, h)
			var got bytes.Buffer
			buf := make([]byte, tc.read)
			var err error
			for {
				var n int
				n, err = p.Read(buf)
				got.Write(buf[:n])
				if err != nil {
					break
				}
			}
			p.Close()
			if tc.want != nil {
				if err == nil || err.Error() != tc.want.Error() {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				return
			}
			if err != io.EOF {
				t.Fatalf("err = %v, want io.EOF", err)
			}
			want := data[:got.Len()]
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatal("bytes differ")
			}
			sum := sha256.Sum256(want)
			if !bytes.Equal(h.Sum(nil), sum[:]) {
				t.Error("hash does not cover exactly the bytes read")
			}
		})
	}
	t.Run("abandoned", func(t *testing.T) {
		p := newPrefetchReader(bytes.NewReader(data), sha256.New())
		if _, err := p.Read(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		p.Close() // must return although the producer has more to give
	})
}
