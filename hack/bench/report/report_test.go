package main

import (
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Outputs shaped like the real scripts': unpack.sh with BENCH lines,
// fsmeta.sh with tables only (the fallback), convert.sh failed half-way.
const (
	unpackOut = `
### Unpack of the 3-layer Debian image: erofs-vm vs overlayfs + walking (best of 3, s)

| image | gzip inflater | erofs-vm unpack | overlayfs+walking unpack | ratio |
|---|---|---:|---:|---:|
| debian-3layer.oci.tar | igzip | 1.50 | 2.80 | 0.54× |
| debian-3layer-zstd.oci.tar | n/a (zstd) | 1.20 | 2.10 | 0.57× |
BENCH unpack image=debian-3layer.oci.tar inflater=igzip erofs_vm_s=1.50 overlayfs_s=2.80
BENCH unpack image=debian-3layer-zstd.oci.tar inflater=none erofs_vm_s=1.20 overlayfs_s=2.10

ratio = erofs-vm unpack / overlayfs+walking unpack.
`
	fsmetaOut = `### fsmeta: scaling (synthetic layers; best of 3)

| layers | input entries | merged entries | wall (s) | CPU (s) | peak RSS (MiB) |
|---|---|---|---|---|---|
| 16 | 100000 | 6500 | 0.21 | 0.30 | 14.2 |
| 128 | 100000 | 800 | 0.35 | 0.50 | 20.0 |
| 16 | 1000000 | 65000 | 2.10 | 2.90 | 70.5 |
| 128 | 1000000 | 8000 | 3.40 | 4.10 | 90.0 |
`
	convertOut = "tar->EROFS conversion\n\n| tool | wall s |\n|---|---|\n| ours | 0.3 |\n"
)

func writeResults(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"unpack.md": unpackOut, "fsmeta.md": fsmetaOut, "convert.md": convertOut, "convert.failed": "",
		"fsmeta.note": "rerun alone\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestParseOutput(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		tables      int
		rows        []int
		records     int
		heading     string
		notInMD     string
		recordField [2]string // key, value of the first record
	}{
		{"bench lines leave the markdown", unpackOut, 1, []int{2}, 2, "Unpack of the 3-layer Debian image: erofs-vm vs overlayfs + walking (best of 3, s)", "BENCH", [2]string{"erofs_vm_s", "1.50"}},
		{"tables only", fsmetaOut, 1, []int{4}, 0, "fsmeta: scaling (synthetic layers; best of 3)", "", [2]string{}},
		{"two tables, separated", "| a |\n|---|\n| 1 |\n\n| b | c |\n|---|---|\n| 2 | 3 |\n| 4 | 5 |\n", 2, []int{1, 2}, 0, "", "", [2]string{}},
		{"a BENCH line with a field lacking = stays markdown", "BENCH x novalue\n", 0, nil, 0, "", "", [2]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := parseOutput(tc.in)
			if len(o.Tables) != tc.tables || len(o.Records) != tc.records {
				t.Fatalf("%d tables, %d records; want %d, %d", len(o.Tables), len(o.Records), tc.tables, tc.records)
			}
			for i, n := range tc.rows {
				if len(o.Tables[i].Rows) != n {
					t.Errorf("table %d: %d rows, want %d", i, len(o.Tables[i].Rows), n)
				}
			}
			if tc.tables > 0 && o.Tables[0].Heading != tc.heading {
				t.Errorf("heading %q, want %q", o.Tables[0].Heading, tc.heading)
			}
			if tc.notInMD != "" && strings.Contains(o.Markdown, tc.notInMD) {
				t.Errorf("markdown still has %q:\n%s", tc.notInMD, o.Markdown)
			}
			if tc.records > 0 && o.Records[0].Fields[tc.recordField[0]] != tc.recordField[1] {
				t.Errorf("record %+v", o.Records[0])
			}
		})
	}
}

func TestBuildPlots(t *testing.T) {
	outs, err := readOutputs(writeResults(t))
	if err != nil {
		t.Fatal(err)
	}
	p := buildPlots(outs)
	wantUnpack := []UnpackPoint{{"gzip, igzip", 1.5, 2.8}, {"zstd", 1.2, 2.1}}
	if len(p.Unpack) != len(wantUnpack) {
		t.Fatalf("unpack %+v, want %+v", p.Unpack, wantUnpack)
	}
	for i := range wantUnpack {
		if p.Unpack[i] != wantUnpack[i] {
			t.Errorf("unpack %d = %+v, want %+v", i, p.Unpack[i], wantUnpack[i])
		}
	}
	// fsmeta.sh printed no BENCH lines: its table is the source.
	if len(p.Scaling) != 4 || p.Scaling[2] != (ScalePoint{16, 1000000, 2.1, 2.9, 70.5}) {
		t.Errorf("scaling %+v", p.Scaling)
	}
	// Table fallback for unpack gives the same points as the BENCH lines.
	outs[len(outs)-1].Records = nil
	if fb := unpackFromTables(outs); len(fb) != 2 || fb[0] != wantUnpack[0] || fb[1] != wantUnpack[1] {
		t.Errorf("unpack from tables %+v, want %+v", fb, wantUnpack)
	}
}

// TestSVG: the plot is well-formed XML with a bar per snapshotter and
// image and a line per entry count; empty data says so instead.
func TestSVG(t *testing.T) {
	outs, err := readOutputs(writeResults(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		plots        Plots
		rects, lines int
		mustHave     []string
		mustNotHave  []string
	}{
		{"full", buildPlots(outs), 2 * 2, 2 * 2, []string{"0.54×", "100k entries", "1M entries", "erofs-vm", "CPU s (user+sys)"}, []string{"no data"}},
		{"empty", Plots{}, 0, 0, []string{"no data (hack/bench/unpack.sh)", "no data (hack/bench/fsmeta.sh)"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svg := tc.plots.SVG()
			dec := xml.NewDecoder(strings.NewReader(svg))
			rects, lines := 0, 0
			for {
				tok, err := dec.Token()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
				}
				if se, ok := tok.(xml.StartElement); ok {
					switch se.Name.Local {
					case "rect":
						for _, a := range se.Attr {
							if a.Name.Local == "fill" && (a.Value == colorOurs || a.Value == colorOther) {
								rects++
							}
						}
					case "polyline":
						lines++
					}
				}
			}
			// Legends add one swatch per entry (2 unpack + 2 per scaling panel).
			legendSwatches := 0
			if !tc.plots.Empty() {
				legendSwatches = 2
			}
			if rects-legendSwatches != tc.rects || lines != tc.lines {
				t.Errorf("%d bars, %d lines; want %d bars, %d lines", rects-legendSwatches, lines, tc.rects, tc.lines)
			}
			for _, s := range tc.mustHave {
				if !strings.Contains(svg, s) {
					t.Errorf("SVG lacks %q", s)
				}
			}
			for _, s := range tc.mustNotHave {
				if strings.Contains(svg, s) {
					t.Errorf("SVG has %q", s)
				}
			}
		})
	}
}

func TestRenderReport(t *testing.T) {
	outs, err := readOutputs(writeResults(t))
	if err != nil {
		t.Fatal(err)
	}
	md := renderReport(outs, Machine{CPUs: 2, CPU: "Test CPU", Kernel: "6.18.0", MemGiB: 7.8, Date: "2026-11-23 08:00 UTC"}, "make bench", "BENCHMARKS.svg", false)
	for _, s := range []string{
		"| CPUs (`nproc`) | 2 |", "| CPU | Test CPU |", "| kernel | 6.18.0 |", "| memory | 7.8 GiB |",
		"| command | `make bench` |", "![unpack time and fsmeta scaling](BENCHMARKS.svg)",
		"## convert.sh", "**FAILED**", "## fsmeta.sh", "## unpack.sh",
		"### fsmeta: scaling", "| debian-3layer.oci.tar | igzip | 1.50 | 2.80 | 0.54× |",
		"[unpack.sh](#unpacksh)", "## fsmeta.sh\n\n`hack/bench/fsmeta.sh`\n\n> rerun alone\n\n###",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q:\n%s", s, md)
		}
	}
	if strings.Contains(md, "BENCH unpack") {
		t.Error("report has BENCH lines")
	}
	if strings.Index(md, "## convert.sh") > strings.Index(md, "## unpack.sh") {
		t.Error("scripts not in name order")
	}
	if _, err := readOutputs(t.TempDir()); err == nil || !strings.Contains(err.Error(), "make bench") {
		t.Errorf("empty results dir: %v, want an error naming make bench", err)
	}
}

func TestAxis(t *testing.T) {
	for _, tc := range []struct{ in, top, step float64 }{
		{0, 1, 0.2}, {0.7, 0.8, 0.2}, {1, 1, 0.2}, {3.92, 4, 1}, {5.97, 6, 1}, {7, 8, 2}, {12, 12, 2}, {450, 500, 100}, {643, 800, 200},
	} {
		top, step := axis(tc.in)
		if math.Abs(top-tc.top) > 1e-9 || math.Abs(step-tc.step) > 1e-9 {
			t.Errorf("axis(%v) = %v, %v; want %v, %v", tc.in, top, step, tc.top, tc.step)
		}
		if n := len(ticks(top, step)); n < 2 || n > 8 {
			t.Errorf("axis(%v): %d ticks", tc.in, n)
		}
	}
}
