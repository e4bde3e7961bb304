package main

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// chartBar is one contender in a chart panel: the median as a bar, the
// min–max range as a whisker.
type chartBar struct {
	Label            string
	Median, Min, Max float64
	// Ours marks gvs's own contenders (drawn in a different colour).
	Ours bool
}

// chartPanel is one metric: a horizontal bar chart.
type chartPanel struct {
	Title string
	Unit  string
	// LowerIsBetter is shown in the title ("lower is better").
	LowerIsBetter bool
	Bars          []chartBar
}

// Chart geometry (pixels).
const (
	chartWidth  = 960
	chartLabelW = 170 // contender names
	chartValueW = 150 // the value text right of the longest bar
	chartRowH   = 24
	chartTitleH = 34
	chartGap    = 18
)

// writeSVG draws the panels one below the other as a self-contained SVG
// (no scripts, no external fonts). Bars with a NaN median are skipped.
func writeSVG(w io.Writer, title string, panels []chartPanel) error {
	bw := bufio.NewWriter(w)
	esc := func(s string) string {
		var b strings.Builder
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	height := chartTitleH + 10
	for _, p := range panels {
		height += chartTitleH + len(p.Bars)*chartRowH + chartGap
	}
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", chartWidth, height, chartWidth, height)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(bw, `<text x="10" y="22" font-size="17" font-weight="bold">%s</text>`+"\n", esc(title))
	y := chartTitleH + 10
	plotW := float64(chartWidth - chartLabelW - chartValueW - 20)
	for _, p := range panels {
		sub := p.Unit
		if p.LowerIsBetter {
			sub += ", lower is better"
		} else {
			sub += ", higher is better"
		}
		fmt.Fprintf(bw, `<text x="10" y="%d" font-weight="bold">%s <tspan font-weight="normal" fill="#555">(%s; bar: median, whisker: min–max)</tspan></text>`+"\n", y+18, esc(p.Title), esc(sub))
		y += chartTitleH
		scale := 0.0
		for _, b := range p.Bars {
			for _, v := range []float64{b.Median, b.Max} {
				if !math.IsNaN(v) && !math.IsInf(v, 0) && v > scale {
					scale = v
				}
			}
		}
		if scale == 0 {
			scale = 1
		}
		x0 := float64(chartLabelW)
		for _, b := range p.Bars {
			cy := y + chartRowH/2
			fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", chartLabelW-8, cy+5, esc(b.Label))
			if math.IsNaN(b.Median) {
				fmt.Fprintf(bw, `<text x="%.1f" y="%d" fill="#777">n/a</text>`+"\n", x0+4, cy+5)
				y += chartRowH
				continue
			}
			fill := "#9aa5b1"
			if b.Ours {
				fill = "#1f6fd1"
			}
			bw2 := math.Max(0, b.Median/scale*plotW)
			fmt.Fprintf(bw, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y+4, bw2, chartRowH-8, fill)
			if !math.IsNaN(b.Min) && !math.IsNaN(b.Max) && b.Max > b.Min {
				x1, x2 := x0+math.Max(0, b.Min/scale*plotW), x0+b.Max/scale*plotW
				fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-width="1.5"/>`+"\n", x1, cy, x2, cy)
				for _, x := range []float64{x1, x2} {
					fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-width="1.5"/>`+"\n", x, cy-5, x, cy+5)
				}
			}
			tx := x0 + math.Max(bw2, b.Max/scale*plotW) + 6
			if math.IsNaN(b.Max) {
				tx = x0 + bw2 + 6
			}
			fmt.Fprintf(bw, `<text x="%.1f" y="%d">%s</text>`+"\n", tx, cy+5, esc(formatValue(b.Median)))
			y += chartRowH
		}
		y += chartGap
	}
	bw.WriteString("</svg>\n")
	return bw.Flush()
}

// formatValue prints a value with three significant digits and a k/M
// suffix for large numbers.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "n/a"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', sigDecimals(v/1e6), 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', sigDecimals(v/1e3), 64) + "k"
	default:
		return strconv.FormatFloat(v, 'f', sigDecimals(v), 64)
	}
}

// sigDecimals is the number of decimals that shows three significant
// digits of v (none for |v| >= 100).
func sigDecimals(v float64) int {
	switch a := math.Abs(v); {
	case a >= 100 || a == 0:
		return 0
	case a >= 10:
		return 1
	case a >= 1:
		return 2
	default:
		return 3
	}
}
