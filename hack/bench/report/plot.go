package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The plots: unpack time of erofs-vm vs overlayfs+walking (unpack.sh), and
// fsmeta build time and memory against the number of layers, one line per
// entry count (fsmeta.sh). Hand-written SVG: no plotting dependency.

// Series names of the BENCH lines the plots read, and their fields.
const (
	// SeriesUnpack: image=<archive> inflater=<igzip|go-gzip|none>
	// erofs_vm_s=<s> overlayfs_s=<s> (unpack time, best run).
	SeriesUnpack = "unpack"
	// SeriesFSMetaScaling: layers=<n> entries=<input entries>
	// wall_s=<s> [cpu_s=<s>] rss_mib=<MiB> (one erofsctl merge).
	SeriesFSMetaScaling = "fsmeta-scaling"
)

// UnpackPoint is one image/inflater of the unpack comparison.
type UnpackPoint struct {
	Label            string
	ErofsVM, Overlay float64 // seconds
}

// ScalePoint is one synthetic fsmeta stack. CPUS is 0 when not reported.
type ScalePoint struct {
	Layers, Entries     int
	WallS, CPUS, RSSMiB float64
}

// Plots holds the data of every panel.
type Plots struct {
	Unpack  []UnpackPoint
	Scaling []ScalePoint
}

// Empty reports whether there is nothing to plot.
func (p Plots) Empty() bool { return len(p.Unpack) == 0 && len(p.Scaling) == 0 }

// buildPlots takes BENCH records where a script prints them, else its
// markdown tables (by column header).
func buildPlots(outs []Output) Plots {
	var p Plots
	for _, o := range outs {
		for _, r := range o.Records {
			switch r.Series {
			case SeriesUnpack:
				e, ok1 := number(r.Fields["erofs_vm_s"])
				ov, ok2 := number(r.Fields["overlayfs_s"])
				if ok1 && ok2 {
					p.Unpack = append(p.Unpack, UnpackPoint{unpackLabel(r.Fields["image"], r.Fields["inflater"]), e, ov})
				}
			case SeriesFSMetaScaling:
				l, err1 := strconv.Atoi(r.Fields["layers"])
				n, err2 := strconv.Atoi(r.Fields["entries"])
				w, ok1 := number(r.Fields["wall_s"])
				m, ok2 := number(r.Fields["rss_mib"])
				c, _ := number(r.Fields["cpu_s"])
				if err1 == nil && err2 == nil && ok1 && ok2 {
					p.Scaling = append(p.Scaling, ScalePoint{l, n, w, c, m})
				}
			}
		}
	}
	if len(p.Unpack) == 0 {
		p.Unpack = unpackFromTables(outs)
	}
	if len(p.Scaling) == 0 {
		p.Scaling = scalingFromTables(outs)
	}
	return p
}

func unpackLabel(image, inflater string) string {
	image = strings.TrimSuffix(image, ".oci.tar")
	switch {
	case strings.Contains(image, "zstd"):
		return "zstd"
	case inflater == "" || inflater == "none" || strings.HasPrefix(inflater, "n/a"):
		return image
	default:
		return "gzip, " + inflater
	}
}

func unpackFromTables(outs []Output) []UnpackPoint {
	var pts []UnpackPoint
	for _, o := range outs {
		for _, t := range o.Tables {
			ei, oi := t.Column("erofs-vm unpack"), t.Column("overlayfs+walking unpack")
			ii, fi := t.Column("image"), t.Column("gzip inflater")
			if ei < 0 || oi < 0 {
				continue
			}
			for _, r := range t.Rows {
				e, ok1 := cellNumber(r, ei)
				ov, ok2 := cellNumber(r, oi)
				if !ok1 || !ok2 {
					continue
				}
				pts = append(pts, UnpackPoint{unpackLabel(cell(r, ii), cell(r, fi)), e, ov})
			}
		}
	}
	return pts
}

func scalingFromTables(outs []Output) []ScalePoint {
	var pts []ScalePoint
	for _, o := range outs {
		for _, t := range o.Tables {
			li, ni := t.Column("layers"), t.Column("input entries")
			wi, mi := t.Column("wall (s)"), t.Column("peak RSS (MiB)")
			ci := t.Column("CPU (s)")
			if li < 0 || ni < 0 || wi < 0 || mi < 0 {
				continue
			}
			for _, r := range t.Rows {
				l, ok1 := cellNumber(r, li)
				n, ok2 := cellNumber(r, ni)
				w, ok3 := cellNumber(r, wi)
				m, ok4 := cellNumber(r, mi)
				c, _ := cellNumber(r, ci)
				if ok1 && ok2 && ok3 && ok4 {
					pts = append(pts, ScalePoint{int(l), int(n), w, c, m})
				}
			}
		}
	}
	return pts
}

func cell(r []string, i int) string {
	if i < 0 || i >= len(r) {
		return ""
	}
	return r[i]
}

func cellNumber(r []string, i int) (float64, bool) { return number(cell(r, i)) }

// Geometry of the SVG: three panels side by side.
const (
	panelW, panelH = 320.0, 300.0
	marginL        = 56.0
	marginR        = 14.0
	marginT        = 40.0
	marginB        = 62.0
	colorOurs      = "#1f6feb"
	colorOther     = "#e36209"
)

var lineColors = []string{"#6639ba", "#1a7f37", "#bf3989", "#9a6700"}

// SVG renders the three panels.
func (p Plots) SVG() string {
	var b strings.Builder
	w := 3 * panelW
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif" font-size="11">`+"\n", w, panelH, w, panelH)
	fmt.Fprintf(&b, `<rect width="%.0f" height="%.0f" fill="white"/>`+"\n", w, panelH)
	p.unpackPanel(&b, 0)
	// CPU time when the script reports it: on a shared machine the wall
	// time of a sub-second merge mostly measures the load.
	if p.scalingHasCPU() {
		p.scalingPanel(&b, panelW, "fsmeta build CPU time vs layers", "CPU s (user+sys)", func(s ScalePoint) float64 { return s.CPUS })
	} else {
		p.scalingPanel(&b, panelW, "fsmeta build time vs layers", "wall s", func(s ScalePoint) float64 { return s.WallS })
	}
	p.scalingPanel(&b, 2*panelW, "fsmeta peak memory vs layers", "peak RSS MiB", func(s ScalePoint) float64 { return s.RSSMiB })
	b.WriteString("</svg>\n")
	return b.String()
}

func (p Plots) scalingHasCPU() bool {
	for _, s := range p.Scaling {
		if s.CPUS <= 0 {
			return false
		}
	}
	return len(p.Scaling) > 0
}

// frame draws a panel's title and y axis with ticks every step up to ymax, and
// returns the plot area (x0, y0 top-left, width, height).
func frame(b *strings.Builder, ox float64, title, ylabel string, ymax, step float64) (x0, y0, pw, ph float64) {
	x0, y0 = ox+marginL, marginT
	pw, ph = panelW-marginL-marginR, panelH-marginT-marginB
	fmt.Fprintf(b, `<text x="%.1f" y="20" font-size="13" font-weight="bold">%s</text>`+"\n", ox+marginL-30, esc(title))
	fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle" fill="#555">%s</text>`+"\n", ox+14, y0+ph/2, esc(ylabel))
	for _, t := range ticks(ymax, step) {
		y := y0 + ph - t/ymax*ph
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", x0, y, x0+pw, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x0-5, y+4, fmtNum(t))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, y0+ph, x0+pw, y0+ph)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, y0, x0, y0+ph)
	return x0, y0, pw, ph
}

func noData(b *strings.Builder, ox float64, title, why string) {
	fmt.Fprintf(b, `<text x="%.1f" y="20" font-size="13" font-weight="bold">%s</text>`+"\n", ox+marginL-30, esc(title))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#888">%s</text>`+"\n", ox+panelW/2, panelH/2, esc(why))
}

func (p Plots) unpackPanel(b *strings.Builder, ox float64) {
	const title = "unpack time, 3-layer Debian image"
	if len(p.Unpack) == 0 {
		noData(b, ox, title, "no data (hack/bench/unpack.sh)")
		return
	}
	ymax := 0.0
	for _, u := range p.Unpack {
		ymax = max(ymax, u.ErofsVM, u.Overlay)
	}
	ymax, step := axis(ymax)
	x0, y0, pw, ph := frame(b, ox, title, "seconds (lower is better)", ymax, step)
	group := pw / float64(len(p.Unpack))
	bw := min(group*0.32, 34)
	for i, u := range p.Unpack {
		cx := x0 + group*(float64(i)+0.5)
		for j, v := range []float64{u.ErofsVM, u.Overlay} {
			color := colorOurs
			x := cx - bw - 1
			if j == 1 {
				color, x = colorOther, cx+1
			}
			h := v / ymax * ph
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%.2f s</title></rect>`+"\n", x, y0+ph-h, bw, h, color, v)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%.2f</text>`+"\n", x+bw/2, y0+ph-h-3, v)
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", cx, y0+ph+15, esc(u.Label))
		if u.Overlay > 0 {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%.2f×</text>`+"\n", cx, y0+ph+29, u.ErofsVM/u.Overlay)
		}
	}
	legend(b, x0, panelH-14, []string{"erofs-vm", "overlayfs + walking"}, []string{colorOurs, colorOther})
}

func (p Plots) scalingPanel(b *strings.Builder, ox float64, title, ylabel string, val func(ScalePoint) float64) {
	if len(p.Scaling) == 0 {
		noData(b, ox, title, "no data (hack/bench/fsmeta.sh)")
		return
	}
	var layers, entries []int
	ymax := 0.0
	for _, s := range p.Scaling {
		if !slices.Contains(layers, s.Layers) {
			layers = append(layers, s.Layers)
		}
		if !slices.Contains(entries, s.Entries) {
			entries = append(entries, s.Entries)
		}
		ymax = max(ymax, val(s))
	}
	slices.Sort(layers)
	slices.Sort(entries)
	ymax, step := axis(ymax)
	x0, y0, pw, ph := frame(b, ox, title, ylabel, ymax, step)
	// x: log scale over the layer counts, padded half a step each side.
	lo, hi := math.Log(float64(layers[0])), math.Log(float64(layers[len(layers)-1]))
	if hi == lo {
		lo, hi = lo-1, hi+1
	}
	pad := (hi - lo) * 0.08
	lo, hi = lo-pad, hi+pad
	xpos := func(l int) float64 { return x0 + (math.Log(float64(l))-lo)/(hi-lo)*pw }
	for _, l := range layers {
		x := xpos(l)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x, y0+ph, x, y0+ph+4)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x, y0+ph+16, l)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">layers (log scale)</text>`+"\n", x0+pw/2, y0+ph+31)
	var names, colors []string
	for i, n := range entries {
		color := lineColors[i%len(lineColors)]
		var pts []string
		for _, l := range layers {
			for _, s := range p.Scaling {
				if s.Layers == l && s.Entries == n {
					x, y := xpos(l), y0+ph-val(s)/ymax*ph
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
					fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%d layers, %d entries: %s %s</title></circle>`+"\n", x, y, color, l, n, fmtNum(val(s)), esc(ylabel))
					break
				}
			}
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color)
		names = append(names, humanCount(n)+" entries")
		colors = append(colors, color)
	}
	legend(b, x0, panelH-14, names, colors)
}

func legend(b *strings.Builder, x, y float64, names, colors []string) {
	for i, n := range names {
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="10" height="10" fill="%s"/>`+"\n", x, y-9, colors[i])
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x+14, y, esc(n))
		x += 22 + 6.2*float64(len(n))
	}
}

// axis returns the top of a y axis for values up to v and its tick step:
// the step is 1, 2 or 5 times a power of ten giving at most six ticks
// above 0, the top the first multiple of the step at or above v.
func axis(v float64) (top, step float64) {
	if v <= 0 {
		return 1, 0.2
	}
	p := math.Pow(10, math.Floor(math.Log10(v/6)))
	for _, m := range []float64{1, 2, 5, 10} {
		step = m * p
		if v/step <= 6*1.0000001 {
			break
		}
	}
	top = math.Ceil(v/step*(1-1e-9)) * step
	return top, step
}

// ticks returns 0 and every step up to top.
func ticks(top, step float64) []float64 {
	var t []float64
	for i := 0; float64(i)*step <= top*1.0000001; i++ {
		t = append(t, float64(i)*step)
	}
	return t
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func humanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

func esc(s string) string { return html.EscapeString(s) }
