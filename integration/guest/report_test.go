package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseReport(t *testing.T) {
	for _, tc := range []struct {
		name, console, out string
		rc                 int
		err                string
	}{
		{"ok crlf", "SeaBIOS\r\n===GUEST-BEGIN===\r\nhello\r\nworld\r\n===GUEST-END rc=0===\r\n[ 2.6] reboot: Power down\r\n", "hello\nworld\n", 0, ""},
		{"exit code", "===GUEST-BEGIN===\n===GUEST-END rc=42===\n", "", 42, ""},
		{"init error", "===GUEST-ERROR no /dev/vda after 10s===\n", "", 0, "no /dev/vda after 10s"},
		{"panic", "===GUEST-BEGIN===\nKernel panic - not syncing: x\n", "", 0, "panicked"},
		{"no test", "===GUEST-NOTEST===\n", "", 0, "no /test.sh"},
		{"no begin", "reboot: Power down\n", "", 0, "no begin marker"},
		{"no end", "===GUEST-BEGIN===\nhalf\n", "", 0, "no end marker"},
		{"marker inside line", "===GUEST-BEGIN===\nx ===GUEST-END rc=0===\n", "", 0, "no end marker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, rc, err := parseReport(tc.console)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || out != tc.out || rc != tc.rc {
				t.Fatalf("got %q rc=%d err=%v, want %q rc=%d", out, rc, err, tc.out, tc.rc)
			}
		})
	}
}

// TestCpioReadableByGNUCpio checks the appended archive with an independent
// reader: GNU cpio must list and extract /test.sh byte for byte.
func TestCpioReadableByGNUCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	for _, script := range []string{"x", "echo hi\n", strings.Repeat("echo padding test\n", 1000) + "abc"} {
		var b bytes.Buffer
		if err := writeCpio(&b, map[string][]byte{"test.sh": []byte(script), "a": []byte("12345")}); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		arc := filepath.Join(dir, "x.cpio.gz")
		if err := os.WriteFile(arc, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", "gzip -dc x.cpio.gz | cpio -id --quiet && ls -l test.sh")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cpio: %v\n%s", err, out)
		}
		if !strings.HasPrefix(string(out), "-rwxr-xr-x") {
			t.Errorf("mode: %s", out)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "test.sh"))
		a, _ := os.ReadFile(filepath.Join(dir, "a"))
		if string(got) != script || string(a) != "12345" {
			t.Errorf("extracted %d bytes / %q, want %d bytes", len(got), a, len(script))
		}
	}
}
