// Command timeit runs a command several times and prints how long it took,
// for the benchmark scripts of hack/bench.
//
//	timeit [-n RUNS] [-setup 'SHELL'] -- CMD [ARG...]
//
// It prints one line: "best_wall_s median_wall_s best_cpu_s max_rss_kib
// runs", wall times from Go's monotonic clock (nanosecond resolution) and
// CPU time (user+sys of the child) from getrusage (microseconds), where
// `/usr/bin/time -f %e` reports hundredths of a second: too coarse for
// conversions and merges that take 20 to 60 ms. The setup command runs
// through `sh -c` before every run and is not timed (removing the previous
// run's output, say). The command's stdout is discarded; its stderr is
// passed through, and a failing run fails timeit with the command's status.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"
)

func main() {
	runs := flag.Int("n", 5, "number of timed runs")
	setup := flag.String("setup", "", "shell command run before each run, not timed")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: timeit [-n RUNS] [-setup 'SHELL'] -- CMD [ARG...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || *runs < 1 {
		flag.Usage()
		os.Exit(2)
	}
	line, err := measure(*runs, *setup, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "timeit:", err)
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			os.Exit(ee.ExitCode())
		}
		os.Exit(1)
	}
	fmt.Println(line)
}

// measure runs argv n times and formats the result line.
func measure(n int, setup string, argv []string) (string, error) {
	walls := make([]time.Duration, 0, n)
	var bestCPU time.Duration = -1
	var maxRSS int64
	for i := 0; i < n; i++ {
		if setup != "" {
			c := exec.Command("sh", "-c", setup)
			c.Stdout, c.Stderr = os.Stderr, os.Stderr
			if err := c.Run(); err != nil {
				return "", fmt.Errorf("setup %q: %w", setup, err)
			}
		}
		c := exec.Command(argv[0], argv[1:]...)
		c.Stderr = os.Stderr
		start := time.Now()
		err := c.Run()
		wall := time.Since(start)
		if err != nil {
			return "", fmt.Errorf("%v: %w", argv, err)
		}
		walls = append(walls, wall)
		cpu := c.ProcessState.UserTime() + c.ProcessState.SystemTime()
		if bestCPU < 0 || cpu < bestCPU {
			bestCPU = cpu
		}
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > maxRSS {
			maxRSS = ru.Maxrss // KiB on Linux
		}
	}
	slices.Sort(walls)
	median := walls[len(walls)/2]
	if len(walls)%2 == 0 {
		median = (walls[len(walls)/2-1] + walls[len(walls)/2]) / 2
	}
	return fmt.Sprintf("%.6f %.6f %.6f %d %d", walls[0].Seconds(), median.Seconds(), bestCPU.Seconds(), maxRSS, n), nil
}
