// Command report assembles BENCHMARKS.md and BENCHMARKS.svg from the
// outputs of the hack/bench/*.sh scripts that `make bench` saved (one
// <script>.md per script, <script>.failed beside it when it failed).
// hack/bench/report.sh runs it and documents the convention it reads:
// markdown as the scripts print it, plus optional machine-readable lines
//
//	BENCH <series> key=value key=value ...
//
// which are taken out of the markdown and feed the plots. For a script that
// prints no BENCH lines yet, the plots fall back to its markdown tables,
// found by their column headers.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Output is what one script printed, split into its parts.
type Output struct {
	Script   string   // "unpack" for hack/bench/unpack.sh
	Markdown string   // everything but BENCH lines
	Tables   []Table  // the markdown tables in it
	Records  []Record // its BENCH lines
	Failed   bool     // the script exited non-zero
	Note     string   // <script>.note: how this output came about, if unusual
}

// Table is one markdown table and the heading above it.
type Table struct {
	Heading string
	Header  []string
	Rows    [][]string
}

// Record is one BENCH line: a series name and its key=value fields.
type Record struct {
	Series string
	Fields map[string]string
}

func main() {
	results := flag.String("results", "_output/bench", "directory of <script>.md outputs")
	out := flag.String("out", "BENCHMARKS.md", "markdown report to write")
	svg := flag.String("svg", "BENCHMARKS.svg", "SVG plot to write (linked from the report)")
	command := flag.String("command", "make bench", "the command that produced the results, for the report")
	flag.Parse()

	outs, err := readOutputs(*results)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	plot := buildPlots(outs)
	svgText := plot.SVG()
	md := renderReport(outs, machineInfo(), *command, filepath.Base(*svg), plot.Empty())
	if err := writeAtomic(*svg, []byte(svgText)); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if err := writeAtomic(*out, []byte(md)); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%d scripts) and %s\n", *out, len(outs), *svg)
}

// readOutputs reads every <script>.md of dir, sorted by script name.
func readOutputs(dir string) ([]Output, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no benchmark outputs (*.md) in %s: run `make bench`", dir)
	}
	slices.Sort(paths)
	var outs []Output
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		o := parseOutput(string(b))
		o.Script = strings.TrimSuffix(filepath.Base(p), ".md")
		if _, err := os.Stat(strings.TrimSuffix(p, ".md") + ".failed"); err == nil {
			o.Failed = true
		}
		if b, err := os.ReadFile(strings.TrimSuffix(p, ".md") + ".note"); err == nil {
			o.Note = strings.TrimSpace(string(b))
		}
		outs = append(outs, o)
	}
	return outs, nil
}

// parseOutput splits a script's stdout into markdown, tables and BENCH records.
func parseOutput(text string) Output {
	var o Output
	var md []string
	var cur *Table
	heading := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if r, ok := parseRecord(line); ok {
			o.Records = append(o.Records, r)
			continue
		}
		md = append(md, line)
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "|"):
			cells := splitRow(t)
			if cur == nil {
				o.Tables = append(o.Tables, Table{Heading: heading, Header: cells})
				cur = &o.Tables[len(o.Tables)-1]
			} else if !isSeparator(cells) {
				cur.Rows = append(cur.Rows, cells)
			}
		default:
			cur = nil
			if strings.HasPrefix(t, "#") {
				heading = strings.TrimSpace(strings.TrimLeft(t, "#"))
			}
		}
	}
	o.Markdown = strings.TrimSpace(strings.Join(md, "\n"))
	return o
}

// parseRecord parses "BENCH series k=v ...".
func parseRecord(line string) (Record, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "BENCH" {
		return Record{}, false
	}
	r := Record{Series: f[1], Fields: map[string]string{}}
	for _, kv := range f[2:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Record{}, false
		}
		r.Fields[k] = v
	}
	return r, true
}

func splitRow(t string) []string {
	t = strings.TrimSuffix(strings.TrimPrefix(t, "|"), "|")
	cells := strings.Split(t, "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

func isSeparator(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, ":-") != "" || c == "" {
			return false
		}
	}
	return true
}

// Column returns the index of the first header cell equal to name
// (case-insensitive), or -1.
func (t Table) Column(name string) int {
	for i, h := range t.Header {
		if strings.EqualFold(h, name) {
			return i
		}
	}
	return -1
}

// number parses a table cell or field value: "2.80", "0.97×", "1.2x", "12 %".
func number(s string) (float64, bool) {
	s = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(s), "×x% s"))
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// Machine describes where the benchmarks ran.
type Machine struct {
	CPUs    int
	CPU     string
	Kernel  string
	MemGiB  float64
	Load    string
	Go      string
	Erofs   string
	Date    string
	Distro  string
	Summary string
}

func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.MemGiB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.Load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.Distro = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "erofs-utils").Output(); err == nil {
		m.Erofs = strings.TrimSpace(string(out))
	}
	if n, err := strconv.Atoi(strings.TrimSpace(runOut("nproc"))); err == nil {
		m.CPUs = n // the CPUs this process may use, as the scripts see them
	}
	return m
}

func runOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// renderReport writes BENCHMARKS.md: the machine, the command, the plot,
// then each script's output as it printed it.
func renderReport(outs []Output, m Machine, command, svgName string, noPlot bool) string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Generated by `hack/bench/report.sh` from the output of every `hack/bench/*.sh`; do not edit by hand,\n")
	fmt.Fprintf(&b, "run `%s` again. Each script runs ours and the comparator side by side in one run.\n\n", command)
	b.WriteString("| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| date | %s |\n", m.Date)
	fmt.Fprintf(&b, "| command | `%s` |\n", command)
	fmt.Fprintf(&b, "| CPUs (`nproc`) | %d |\n", m.CPUs)
	fmt.Fprintf(&b, "| CPU | %s |\n", orUnknown(m.CPU))
	fmt.Fprintf(&b, "| memory | %.1f GiB |\n", m.MemGiB)
	fmt.Fprintf(&b, "| kernel | %s |\n", orUnknown(m.Kernel))
	fmt.Fprintf(&b, "| userland | %s |\n", orUnknown(m.Distro))
	fmt.Fprintf(&b, "| Go | %s |\n", m.Go)
	fmt.Fprintf(&b, "| erofs-utils (comparator) | %s |\n", orUnknown(m.Erofs))
	fmt.Fprintf(&b, "| load average when the report was written | %s |\n\n", orUnknown(m.Load))
	b.WriteString("The machine is shared: wall times swing with the load; where a script reports CPU time\n")
	b.WriteString("(user+sys) beside wall time, CPU time is the steadier number.\n\n")
	if !noPlot {
		fmt.Fprintf(&b, "![unpack time and fsmeta scaling](%s)\n\n", svgName)
	}
	b.WriteString("Contents:")
	for _, o := range outs {
		fmt.Fprintf(&b, " [%s.sh](#%s)", o.Script, anchor(o.Script+".sh"))
	}
	b.WriteString("\n")
	for _, o := range outs {
		fmt.Fprintf(&b, "\n## %s.sh\n\n", o.Script)
		fmt.Fprintf(&b, "`hack/bench/%s.sh`", o.Script)
		if o.Failed {
			b.WriteString(" **FAILED** (non-zero exit; what it printed before is below)")
		}
		b.WriteString("\n\n")
		if o.Note != "" {
			fmt.Fprintf(&b, "> %s\n\n", o.Note)
		}
		if o.Markdown == "" {
			b.WriteString("(no output)\n")
			continue
		}
		// The scripts' own headings go one level below the script's.
		for _, l := range strings.Split(o.Markdown, "\n") {
			if strings.HasPrefix(l, "#") {
				l = "### " + strings.TrimSpace(strings.TrimLeft(l, "#"))
			}
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// anchor is the fragment GitHub gives a heading: lower case, spaces to
// dashes, other punctuation dropped.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// writeAtomic writes path through a temp file in the same dir and a rename.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
