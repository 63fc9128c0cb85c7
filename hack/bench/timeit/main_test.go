package main

import (
	"strconv"
	"strings"
	"testing"
)

// TestMeasure: the reported best wall time is at least what the command
// slept and far below the old 10 ms resolution in its digits, the CPU time
// of a sleeping command is small, and a failing command (or setup) fails.
func TestMeasure(t *testing.T) {
	line, err := measure(3, "true", []string{"sleep", "0.02"})
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(line)
	if len(f) != 5 || f[4] != "3" {
		t.Fatalf("line %q: want best median cpu rss runs", line)
	}
	best, _ := strconv.ParseFloat(f[0], 64)
	median, _ := strconv.ParseFloat(f[1], 64)
	cpu, _ := strconv.ParseFloat(f[2], 64)
	if best < 0.02 || median < best || best > 1 {
		t.Errorf("best %v median %v: want 0.02 <= best <= median", best, median)
	}
	if cpu > best {
		t.Errorf("cpu %v above the wall time %v of a sleep", cpu, best)
	}
	if len(strings.SplitN(f[0], ".", 2)[1]) != 6 {
		t.Errorf("best %q: want microsecond digits", f[0])
	}
	if _, err := measure(1, "", []string{"false"}); err == nil {
		t.Error("a failing command measured fine")
	}
	if _, err := measure(1, "exit 3", []string{"true"}); err == nil {
		t.Error("a failing setup measured fine")
	}
}
