package integration

import (
	"fmt"
	"os"

	"github.com/containerd/log"
)

// init quiets containerd's client library in the test process. Its
// unpacker logs every cut unpack at info and warning level straight to
// stderr ("apply failure, attempting cleanup", "extraction snapshot
// removal failed"); the crash and restart tests cut hundreds on purpose,
// and those lines would bury a test's own error at the end of a CI
// report. EROFS_TEST_CLIENT_LOG=info (or debug) brings them back.
func init() {
	level := os.Getenv("EROFS_TEST_CLIENT_LOG")
	if level == "" {
		level = "error"
	}
	if err := log.SetLevel(level); err != nil {
		fmt.Fprintf(os.Stderr, "EROFS_TEST_CLIENT_LOG=%q: %v\n", level, err)
		os.Exit(2)
	}
}
