package health

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/synapse-medic/medic/store"
)

func rep(results ...*Result) *Report {
	return &Report{At: time.Now(), Server: "example.org", Results: results}
}

// TestShouldPost: health.post = changed / worsened compared with the last posted report.
func TestShouldPost(t *testing.T) {
	last := &store.HealthRecord{Results: map[string]store.HealthResult{
		"destinations": {Status: int(Warn), Items: []string{"a.example"}},
		"disk":         {Status: int(OK)},
	}}
	same := rep(&Result{Check: "destinations", Status: Warn, Items: []string{"a.example"}}, &Result{Check: "disk", Status: OK})
	newItem := rep(&Result{Check: "destinations", Status: Warn, Items: []string{"a.example", "b.example"}}, &Result{Check: "disk", Status: OK})
	better := rep(&Result{Check: "destinations", Status: OK}, &Result{Check: "disk", Status: OK})
	worse := rep(&Result{Check: "destinations", Status: Warn, Items: []string{"a.example"}}, &Result{Check: "disk", Status: Critical, Items: []string{"media"}})
	for _, c := range []struct {
		mode string
		rep  *Report
		want bool
	}{
		{"always", same, true}, {"changed", same, false}, {"worsened", same, false},
		{"changed", newItem, true}, {"worsened", newItem, true},
		{"changed", better, true}, {"worsened", better, false},
		{"changed", worse, true}, {"worsened", worse, true},
	} {
		if got := ShouldPost(c.mode, c.rep, last); got != c.want {
			t.Errorf("%s: got %v, want %v", c.mode, got, c.want)
		}
	}
	if !ShouldPost("worsened", same, nil) {
		t.Error("the first report must be posted")
	}
}

// TestChartsArePNG: both chart kinds encode to PNGs that decode at their stated size, drawn
// on an opaque card (they read the same on Element's light and dark themes), with the series'
// colours in them.
func TestChartsArePNG(t *testing.T) {
	days := make([]time.Time, 14)
	for i := range days {
		days[i] = time.Date(2026, 11, 9+i, 0, 0, 0, 0, time.UTC)
	}
	values := func(vs ...float64) []float64 { return append(vs, make([]float64, 14-len(vs))...) }
	bars := StackedBars("t", "events", days, []Series{
		{Name: "!a:x", Values: values(1, 0, 5)}, {Name: "!b:x", Values: values(0, 2, 3)},
	})
	now := time.Now()
	line := Line("t", "MiB", []time.Time{now.Add(-time.Hour), now}, []float64{10, 12})
	for name, img := range map[string]image.Image{"bars": bars, "line": line} {
		ch, err := encode(name+".png", name, img)
		if err != nil {
			t.Fatal(err)
		}
		pic, err := png.Decode(bytes.NewReader(ch.PNG))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if pic.Bounds().Dx() != ch.W || pic.Bounds().Dy() != ch.H || ch.W != 960 || ch.H != 540 {
			t.Errorf("%s: %v vs %dx%d", name, pic.Bounds(), ch.W, ch.H)
		}
		seen := map[color.RGBA]int{}
		for y := range ch.H {
			for x := range ch.W {
				r, g, b, a := pic.At(x, y).RGBA()
				if a != 0xffff {
					t.Fatalf("%s: pixel %d,%d is not opaque", name, x, y)
				}
				seen[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), 0xff}]++
			}
		}
		if seen[palette[0]] < 100 {
			t.Errorf("%s: the first series' colour covers %d pixels", name, seen[palette[0]])
		}
		if name == "bars" && seen[palette[1]] < 100 {
			t.Errorf("bars: the second series' colour covers %d pixels", seen[palette[1]])
		}
	}
}

// TestDateTicks: date axes label whole calendar steps in UTC, a handful of them.
func TestDateTicks(t *testing.T) {
	at := func(s string) float64 { return unixSeconds(mustParse(t, s)) }
	for _, c := range []struct {
		from, to string
		want     []string
	}{
		{"2026-11-21T09:05:00Z", "2026-11-21T10:05:00Z", []string{"09:15", "09:30", "09:45", "10:00"}},
		{"2026-11-08T10:00:00Z", "2026-11-21T09:00:00Z", []string{"Nov 9", "Nov 11", "Nov 13", "Nov 15", "Nov 17", "Nov 19", "Nov 21"}},
		{"2026-08-21T00:00:00Z", "2026-11-21T00:00:00Z", []string{"Aug 31", "Sep 14", "Sep 28", "Oct 12", "Oct 26", "Nov 9"}},
		{"2025-11-21T00:00:00Z", "2026-11-21T00:00:00Z", []string{"Jan 2026", "Mar 2026", "May 2026", "Jul 2026", "Sep 2026", "Nov 2026"}},
	} {
		var got []string
		for _, tk := range (dateTicks{}).Ticks(at(c.from), at(c.to)) {
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s – %s: %q, want %q", c.from, c.to, got, c.want)
		}
	}
	for _, tk := range (integerTicks{}).Ticks(0, 1) {
		if tk.Label != "" && tk.Label != "0" && tk.Label != "1" {
			t.Errorf("a count axis labels %q", tk.Label)
		}
	}
}

func mustParse(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRenderMarksNew: findings new since the last report are marked in the detail and counted
// in the summary line.
func TestRenderMarksNew(t *testing.T) {
	r := &Result{Check: "destinations", Title: "Failing destinations", Status: Warn, Summary: "2 failing", Hint: "`!federation reset <server>`",
		Columns: []string{"server"}, Rows: [][]string{{"a.example"}, {"b.example"}}, Keys: []string{"a.example", "b.example"}, Items: []string{"a.example", "b.example"}}
	prev := &store.HealthRecord{At: time.Now().Add(-time.Hour), Results: map[string]store.HealthResult{"destinations": {Status: int(Warn), Items: []string{"a.example"}}}}
	r.compare(prev)
	report := rep(r)
	report.Previous = prev
	if d := r.DetailPlain(report); !strings.Contains(d, "b.example 🆕") || strings.Contains(d, "a.example 🆕") {
		t.Errorf("detail:\n%s", d)
	}
	if p := report.Plain("!"); !strings.Contains(p, "1 new since last report") || !strings.Contains(p, "fix: `!federation reset") {
		t.Errorf("plain:\n%s", p)
	}
	if h := report.HTML("!"); !strings.Contains(h, "<code>!federation reset &lt;server&gt;</code>") {
		t.Errorf("html:\n%s", h)
	}
}
