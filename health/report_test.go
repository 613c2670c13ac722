package health

import (
	"bytes"
	"image"
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

// TestChartsArePNG: both chart kinds encode to PNGs that decode at their stated size.
func TestChartsArePNG(t *testing.T) {
	bars := StackedBars("t", []string{"11-01", "11-02", "11-03"}, []Series{
		{Name: "!a:x", Values: []float64{1, 0, 5}}, {Name: "!b:x", Values: []float64{0, 2, 3}},
	})
	now := time.Now()
	line := Line("t", []time.Time{now.Add(-time.Hour), now}, []float64{10, 12})
	for name, img := range map[string]image.Image{"bars": bars, "line": line} {
		ch, err := encode(name+".png", name, img)
		if err != nil {
			t.Fatal(err)
		}
		pic, err := png.Decode(bytes.NewReader(ch.PNG))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if pic.Bounds().Dx() != ch.W || pic.Bounds().Dy() != ch.H {
			t.Errorf("%s: %v vs %dx%d", name, pic.Bounds(), ch.W, ch.H)
		}
	}
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
