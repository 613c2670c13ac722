package health

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"slices"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/synapse-medic/medic/store"
)

// Chart is a PNG image to attach to a report.
type Chart struct {
	Name  string
	Title string
	PNG   []byte
	W, H  int
}

// Charts draws the trends worth a picture: rejected events per day per room over two weeks
// (from Synapse's database) and the database's size over the stored reports (with this one).
// A chart with nothing to show is left out.
func (rn *Runner) Charts(ctx context.Context, rep *Report) ([]Chart, error) {
	var out []Chart
	// While the database is down the report says so once (the database check): no chart of
	// it, and no second error.
	if rn.DB != nil && !rep.DBDown() {
		since := rep.At.UTC().Truncate(24*time.Hour).AddDate(0, 0, -13)
		days, err := rn.DB.RejectionsPerDay(ctx, since)
		if err != nil {
			return nil, err
		}
		if len(days) > 0 {
			var series []Series
			idx := map[string]int{}
			for _, d := range days {
				i, ok := idx[d.RoomID]
				if !ok {
					i = len(series)
					idx[d.RoomID] = i
					series = append(series, Series{Name: d.RoomID, Values: make([]float64, 14)})
				}
				if k := int(d.Day.Sub(since).Hours() / 24); k >= 0 && k < 14 {
					series[i].Values[k] += float64(d.Count)
				}
			}
			labels := make([]string, 14)
			for i := range labels {
				labels[i] = since.AddDate(0, 0, i).Format("01-02")
			}
			img := StackedBars("Rejected events per day (UTC) by room", labels, series)
			c, err := encode("rejections-per-day.png", "Rejected events per day", img)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	if rn.Store != nil {
		points, err := rn.Store.HealthMetric(ctx, "size", "database_bytes", rep.At.AddDate(0, 0, -90))
		if err != nil {
			return nil, err
		}
		for _, r := range rep.Results {
			if v, ok := r.Metrics["database_bytes"]; ok && r.Check == "size" {
				points = append(points, store.MetricPoint{At: rep.At, Value: v})
			}
		}
		if len(points) >= 2 {
			xs := make([]time.Time, len(points))
			ys := make([]float64, len(points))
			for i, p := range points {
				xs[i], ys[i] = p.At, p.Value/(1<<20)
			}
			c, err := encode("database-growth.png", "Database size", Line("Database size (MiB)", xs, ys))
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	return out, nil
}

func encode(name, title string, img image.Image) (Chart, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return Chart{}, fmt.Errorf("encode %s: %w", name, err)
	}
	b := img.Bounds()
	return Chart{Name: name, Title: title, PNG: buf.Bytes(), W: b.Dx(), H: b.Dy()}, nil
}

// Series is one named row of values, one per label.
type Series struct {
	Name   string
	Values []float64
}

var (
	palette = []color.RGBA{{0x1e, 0x88, 0xe5, 0xff}, {0xe5, 0x39, 0x35, 0xff}, {0x43, 0xa0, 0x47, 0xff},
		{0xfb, 0x8c, 0x00, 0xff}, {0x8e, 0x24, 0xaa, 0xff}, {0x75, 0x75, 0x75, 0xff}}
	ink   = color.RGBA{0x21, 0x21, 0x21, 0xff}
	grid  = color.RGBA{0xe0, 0xe0, 0xe0, 0xff}
	paper = color.RGBA{0xff, 0xff, 0xff, 0xff}
)

const (
	chartW, chartH = 720, 400
	left, right    = 60, 20
	top, bottom    = 40, 60
)

// StackedBars draws one stacked bar per label; more than five series fold into "other".
func StackedBars(title string, labels []string, series []Series) *image.RGBA {
	slices.SortStableFunc(series, func(a, b Series) int { return int(sum(b.Values) - sum(a.Values)) })
	if len(series) > 5 {
		other := Series{Name: fmt.Sprintf("%d other rooms", len(series)-5), Values: make([]float64, len(labels))}
		for _, s := range series[5:] {
			for i, v := range s.Values {
				other.Values[i] += v
			}
		}
		series = append(series[:5], other)
	}
	maxY := 1.0
	for i := range labels {
		t := 0.0
		for _, s := range series {
			t += s.Values[i]
		}
		maxY = max(maxY, t)
	}
	img, plotH := canvas(title, maxY, len(series))
	slot := (chartW - left - right) / max(len(labels), 1)
	for i, l := range labels {
		x0 := left + i*slot + slot/6
		x1 := left + (i+1)*slot - slot/6
		y := float64(chartH - bottom)
		for k, s := range series {
			h := s.Values[i] / maxY * float64(plotH)
			fill(img, x0, int(y-h), x1, int(y), palette[k%len(palette)])
			y -= h
		}
		text(img, left+i*slot+2, chartH-bottom+14, l, ink)
	}
	for k, s := range series {
		ly := chartH - bottom + 30 + (k/2)*12
		lx := left + (k%2)*330
		fill(img, lx, ly-8, lx+8, ly, palette[k%len(palette)])
		text(img, lx+12, ly, truncate(s.Name, 50), ink)
	}
	return img
}

// Line draws values over time.
func Line(title string, xs []time.Time, ys []float64) *image.RGBA {
	maxY := 1.0
	for _, y := range ys {
		maxY = max(maxY, y)
	}
	img, plotH := canvas(title, maxY, 0)
	t0, t1 := xs[0], xs[len(xs)-1]
	span := max(t1.Sub(t0).Seconds(), 1)
	px := func(i int) (int, int) {
		x := left + int(xs[i].Sub(t0).Seconds()/span*float64(chartW-left-right))
		y := chartH - bottom - int(ys[i]/maxY*float64(plotH))
		return x, y
	}
	for i := 1; i < len(xs); i++ {
		x0, y0 := px(i - 1)
		x1, y1 := px(i)
		lineSeg(img, x0, y0, x1, y1, palette[0])
	}
	for i := range xs {
		x, y := px(i)
		fill(img, x-2, y-2, x+3, y+3, palette[0])
	}
	text(img, left, chartH-bottom+14, t0.UTC().Format("2006-01-02 15:04"), ink)
	end := t1.UTC().Format("2006-01-02 15:04")
	text(img, chartW-right-7*len(end), chartH-bottom+14, end, ink)
	return img
}

// canvas draws the background, title, axes and y grid; it returns the plot height.
func canvas(title string, maxY float64, _ int) (*image.RGBA, int) {
	img := image.NewRGBA(image.Rect(0, 0, chartW, chartH))
	draw.Draw(img, img.Bounds(), &image.Uniform{paper}, image.Point{}, draw.Src)
	text(img, left, 24, title, ink)
	plotH := chartH - top - bottom
	for k := 0; k <= 4; k++ {
		y := chartH - bottom - k*plotH/4
		fill(img, left, y, chartW-right, y+1, grid)
		text(img, 4, y+4, short(maxY*float64(k)/4), ink)
	}
	fill(img, left, top, left+1, chartH-bottom, ink)
	fill(img, left, chartH-bottom, chartW-right, chartH-bottom+1, ink)
	return img, plotH
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), &image.Uniform{c}, image.Point{}, draw.Src)
}

func lineSeg(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	steps := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= steps; i++ {
		x := x0 + (x1-x0)*i/steps
		y := y0 + (y1-y0)*i/steps
		fill(img, x-1, y-1, x+1, y+1, c)
	}
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func short(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v == float64(int64(v)):
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
