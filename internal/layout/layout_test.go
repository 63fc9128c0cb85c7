package layout

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFileAtomicFunc pins the crash-safety contract the snapshotter and
// the differ rely on: success replaces path with the new content and mode;
// a failing writer leaves path as it was and no temp file behind.
func TestWriteFileAtomicFunc(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		old     string // content before, "" = no file
		write   func(*os.File) error
		wantErr error
		want    string // content after, "" = no file
	}{
		{
			name:  "new file",
			write: func(f *os.File) error { _, err := f.WriteString("new"); return err },
			want:  "new",
		},
		{
			name:  "replace",
			old:   "old",
			write: func(f *os.File) error { _, err := f.WriteString("new"); return err },
			want:  "new",
		},
		{
			name:    "writer fails, no file before",
			write:   func(f *os.File) error { f.WriteString("partial"); return boom },
			wantErr: boom,
		},
		{
			name:    "writer fails, old file kept",
			old:     "old",
			write:   func(f *os.File) error { f.WriteString("partial"); return boom },
			wantErr: boom,
			want:    "old",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, LayerFile)
			if tc.old != "" {
				if err := os.WriteFile(path, []byte(tc.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := WriteFileAtomicFunc(path, 0o644, tc.write)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			b, rerr := os.ReadFile(path)
			switch {
			case tc.want == "" && !errors.Is(rerr, os.ErrNotExist):
				t.Fatalf("%s exists after a failed first write (%q, %v)", path, b, rerr)
			case tc.want != "" && (rerr != nil || string(b) != tc.want):
				t.Fatalf("%s = %q, %v; want %q", path, b, rerr, tc.want)
			}
			if tc.want != "" && err == nil {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o644 {
					t.Errorf("mode %v, want 0644", fi.Mode().Perm())
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() != LayerFile {
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
}
