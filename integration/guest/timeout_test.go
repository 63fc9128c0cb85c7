package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBootTimeoutKillsQEMU gives a guest far too little time: Boot must
// return a timeout error quoting the console, and no qemu of this run may
// survive it (qemu runs in its own process group, killed whole).
func TestBootTimeoutKillsQEMU(t *testing.T) {
	assets := RequireAssets(t)
	b := make([]byte, 8)
	rand.Read(b)
	token := "guest-timeout-test=" + hex.EncodeToString(b)
	res, err := Boot(context.Background(), Config{
		Script:     "sleep 1000\n",
		Timeout:    time.Second,
		Assets:     &assets,
		KernelArgs: []string{token},
	})
	if err == nil || !strings.Contains(err.Error(), "timed out after 1s") || !strings.Contains(err.Error(), "console tail") {
		t.Fatalf("err = %v, want a timeout with the console tail", err)
	}
	if res == nil {
		t.Fatal("no Result with the console on timeout")
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if cmd, err := os.ReadFile(p); err == nil && bytes.Contains(cmd, []byte(token)) {
			t.Errorf("qemu survived the timeout: %s", p)
		}
	}
}
