package health

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"slices"
	"strconv"
	"time"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

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
			dates := make([]time.Time, 14)
			for i := range dates {
				dates[i] = since.AddDate(0, 0, i)
			}
			c, err := encode("rejections-per-day.png", "Rejected events per day",
				StackedBars("Rejected events per day (UTC), by room", "rejected events", dates, series))
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
			unit, div := "MiB", float64(1<<20)
			if slices.MaxFunc(points, func(a, b store.MetricPoint) int { return cmp.Compare(a.Value, b.Value) }).Value >= 10<<30 {
				unit, div = "GiB", 1<<30
			}
			for i, p := range points {
				xs[i], ys[i] = p.At, p.Value/div
			}
			c, err := encode("database-growth.png", "Database size", Line("Database size", unit, xs, ys))
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

// Series is one named row of values, one per day.
type Series struct {
	Name   string
	Values []float64
}

// The charts are drawn with gonum.org/v1/plot in its bundled Liberation Sans (TrueType), on a
// white card: Element shows an image as it is in both its light and dark themes, and dark text
// on white reads in both.
const (
	chartW, chartH = 6.4 * vg.Inch, 3.6 * vg.Inch
	chartDPI       = 150 // 960×540 pixels
)

var (
	// palette reads on white and stays apart for the common colour-vision deficiencies
	// (Okabe–Ito), with a neutral grey last for "other".
	palette = []color.RGBA{{0x00, 0x72, 0xb2, 0xff}, {0xe6, 0x9f, 0x00, 0xff}, {0x00, 0x9e, 0x73, 0xff},
		{0xd5, 0x5e, 0x00, 0xff}, {0xcc, 0x79, 0xa7, 0xff}, {0x8a, 0x8a, 0x8a, 0xff}}
	ink      = color.RGBA{0x17, 0x19, 0x1c, 0xff} // Element's light-theme text
	softInk  = color.RGBA{0x5c, 0x64, 0x70, 0xff}
	gridInk  = color.RGBA{0xe3, 0xe6, 0xea, 0xff}
	cardFill = color.White
)

// newPlot is a plot with medic's style: sans-serif text, a bold title, a horizontal grid.
func newPlot(title, yLabel string) *plot.Plot {
	p := plot.New()
	sans := font.Font{Typeface: "Liberation", Variant: "Sans"}
	style := func(s *text.Style, size vg.Length, c color.Color) {
		s.Font = font.From(sans, size)
		s.Color = c
	}
	p.BackgroundColor = cardFill
	p.Title.Text = title
	style(&p.Title.TextStyle, 14, ink)
	p.Title.TextStyle.Font.Weight = xfont.WeightBold
	p.Title.Padding = vg.Points(10)
	p.Y.Label.Text = yLabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		style(&a.Label.TextStyle, 11, softInk)
		style(&a.Tick.Label, 10, softInk)
		a.Color, a.Tick.Color = softInk, softInk
		a.LineStyle.Width, a.Tick.LineStyle.Width = vg.Points(0.75), vg.Points(0.75)
	}
	style(&p.Legend.TextStyle, 10, ink)
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0
	grid.Horizontal.Color = gridInk
	grid.Horizontal.Width = vg.Points(0.75)
	p.Add(grid)
	return p
}

// render draws the plot on the card, with its legend entries (if any) in two columns below
// the plot (room IDs are too long to share the plot's area).
func render(p *plot.Plot, legend []legendEntry) image.Image {
	c := vgimg.NewWith(vgimg.UseWH(chartW, chartH), vgimg.UseDPI(chartDPI), vgimg.UseBackgroundColor(cardFill))
	pad := vg.Points(12)
	dc := draw.Crop(draw.New(c), pad, -pad, pad/2, -pad)
	if len(legend) > 0 {
		cols := [2]plot.Legend{plot.NewLegend(), plot.NewLegend()}
		for i, e := range legend {
			cols[i%2].Add(truncate(e.name, 44), e.thumb)
		}
		var h vg.Length
		for i := range cols {
			l := &cols[i]
			l.TextStyle = p.Legend.TextStyle
			l.Top, l.Left = true, true
			l.Padding = vg.Points(3)
			l.ThumbnailWidth = vg.Points(12)
			h = max(h, l.Rectangle(dc).Size().Y)
		}
		area := draw.Crop(dc, 0, 0, 0, h-(dc.Max.Y-dc.Min.Y))
		half := (area.Max.X - area.Min.X) / 2
		cols[0].Draw(draw.Crop(area, 0, -half, 0, 0))
		cols[1].Draw(draw.Crop(area, half, 0, 0, 0))
		dc = draw.Crop(dc, 0, 0, h+pad/2, 0)
	}
	p.Draw(dc)
	return c.Image()
}

type legendEntry struct {
	name  string
	thumb plot.Thumbnailer
}

// StackedBars draws one stacked bar per day; more than five series fold into "other".
func StackedBars(title, yLabel string, days []time.Time, series []Series) image.Image {
	series = slices.Clone(series)
	slices.SortStableFunc(series, func(a, b Series) int { return int(sum(b.Values) - sum(a.Values)) })
	if len(series) > 5 {
		other := Series{Name: fmt.Sprintf("%d other rooms", len(series)-5), Values: make([]float64, len(days))}
		for _, s := range series[5:] {
			for i, v := range s.Values {
				other.Values[i] += v
			}
		}
		series = append(series[:5], other)
	}
	p := newPlot(title, yLabel)
	p.Y.Min = 0
	p.Y.Tick.Marker = integerTicks{}
	labels := make([]string, len(days))
	for i, d := range days {
		labels[i] = d.UTC().Format("Jan 2")
		if i%2 == 1 && len(days) > 10 {
			labels[i] = "" // every other day: 14 dates do not fit side by side
		}
	}
	slot := (chartW - 1.2*vg.Inch) / vg.Length(max(len(days), 1))
	var below *plotter.BarChart
	var legend []legendEntry
	for k, s := range series {
		bars, err := plotter.NewBarChart(plotter.Values(s.Values), slot*0.7)
		if err != nil {
			continue // only for a non-positive width
		}
		bars.Color = palette[k%len(palette)]
		bars.LineStyle.Width = 0
		if below != nil {
			bars.StackOn(below)
		}
		p.Add(bars)
		below = bars
		legend = append(legend, legendEntry{s.Name, bars})
	}
	p.NominalX(labels...)
	p.X.Tick.Length = vg.Points(3)
	p.X.Min, p.X.Max = -0.6, float64(len(days))-0.4
	return render(p, legend)
}

// Line draws values over time, on a date axis.
func Line(title, yLabel string, xs []time.Time, ys []float64) image.Image {
	p := newPlot(title, yLabel)
	pts := make(plotter.XYs, len(xs))
	for i := range xs {
		pts[i] = plotter.XY{X: unixSeconds(xs[i]), Y: ys[i]}
	}
	line, dots, err := plotter.NewLinePoints(pts)
	if err == nil {
		line.Color, line.Width = palette[0], vg.Points(2)
		dots.Shape, dots.Color, dots.Radius = draw.CircleGlyph{}, palette[0], vg.Points(2.5)
		p.Add(line, dots)
	}
	p.X.Tick.Marker = dateTicks{}
	lo, hi := unixSeconds(xs[0]), unixSeconds(xs[len(xs)-1])
	margin := max((hi-lo)*0.03, 60)
	p.X.Min, p.X.Max = lo-margin, hi+margin
	return render(p, nil)
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// integerTicks are plot's default ticks on whole numbers only (counts).
type integerTicks struct{}

func (integerTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for _, t := range (plot.DefaultTicks{}).Ticks(lo, max(hi, lo+1)) {
		if t.Value != math.Trunc(t.Value) {
			continue
		}
		if t.Label != "" {
			t.Label = strconv.FormatFloat(t.Value, 'f', -1, 64) // "1", not "1.0"
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// dateTicks label whole calendar steps in UTC (minutes to months), about four to seven of
// them, with minor ticks between.
type dateTicks struct{}

func (dateTicks) Ticks(lo, hi float64) []plot.Tick {
	const day = 24 * time.Hour
	steps := []struct {
		d      time.Duration
		format string
	}{
		{time.Minute, "15:04"}, {5 * time.Minute, "15:04"}, {15 * time.Minute, "15:04"}, {30 * time.Minute, "15:04"},
		{time.Hour, "15:04"}, {3 * time.Hour, "Jan 2 15:04"}, {6 * time.Hour, "Jan 2 15:04"}, {12 * time.Hour, "Jan 2 15:04"},
		{day, "Jan 2"}, {2 * day, "Jan 2"}, {7 * day, "Jan 2"}, {14 * day, "Jan 2"},
	}
	span := time.Duration((hi - lo) * float64(time.Second))
	from, to := time.Unix(0, int64(lo*1e9)).UTC(), time.Unix(0, int64(hi*1e9)).UTC()
	var ticks []plot.Tick
	add := func(t time.Time, label string) {
		if v := unixSeconds(t); v >= lo && v <= hi {
			ticks = append(ticks, plot.Tick{Value: v, Label: label})
		}
	}
	for _, s := range steps {
		if span/s.d > 7 {
			continue
		}
		// Truncate counts from 0001-01-01 UTC, a Monday: days start at midnight, weeks on Monday.
		for t := from.Truncate(s.d); !t.After(to); t = t.Add(s.d) {
			add(t, t.Format(s.format))
			add(t.Add(s.d/2), "")
		}
		return ticks
	}
	// Months (on the 1st), then years.
	months := max(1, int(math.Ceil(span.Hours()/24/30/7)))
	format := "Jan 2006"
	if months > 6 {
		months, format = 12, "2006"
	}
	for t := time.Date(from.Year(), from.Month(), 1, 0, 0, 0, 0, time.UTC); !t.After(to); t = t.AddDate(0, months, 0) {
		add(t, t.Format(format))
	}
	return ticks
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
