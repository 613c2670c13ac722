// Package metricstest reads medic's /metrics for tests (with the Prometheus client's own text
// parser) and lists the metrics that contrib/'s alert rules and Grafana dashboard name.
package metricstest

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Families is a parsed exposition, by metric family name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url (a /metrics endpoint) and parses it as Prometheus' text format.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q, want Prometheus' text format", url, ct)
	}
	return Parse(t, resp.Body)
}

// Parse parses Prometheus' text format.
func Parse(t testing.TB, r io.Reader) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// Has tells whether the exposition has the metric: a family, or a histogram's or summary's
// _bucket, _sum or _count series.
func (f Families) Has(name string) bool {
	if _, ok := f[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if fam, ok := f[base]; ok && (fam.GetType() == dto.MetricType_HISTOGRAM || fam.GetType() == dto.MetricType_SUMMARY) {
				return true
			}
		}
	}
	return false
}

// Value returns the value of the family's series whose labels include labels, and whether
// there is one.
func (f Families) Value(name string, labels map[string]string) (float64, bool) {
	fam, ok := f[name]
	if !ok {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if matches(m, labels) {
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Untyped != nil:
				return m.GetUntyped().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// LabelValues lists the values of a label over the family's series.
func (f Families) LabelValues(name, label string) []string {
	var out []string
	for _, m := range f[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && !slices.Contains(out, l.GetValue()) {
				out = append(out, l.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := labels[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

// ContribDir is the repository's contrib/ directory.
func ContribDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "contrib")
}

// names matches the metrics PromQL names that medic exports (its own, Go's and the process's).
var names = regexp.MustCompile(`\b(?:medic|go|process)_[a-z0-9_]+\b`)

// AlertRules returns the expression of each alert in contrib/prometheus-rules.yml, by name.
func AlertRules(t testing.TB) map[string]string {
	t.Helper()
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	raw, err := os.ReadFile(filepath.Join(ContribDir(), "prometheus-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err = yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("prometheus-rules.yml: %v", err)
	}
	out := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// ContribMetrics lists the metrics medic exports that contrib/'s alert rules
// (prometheus-rules.yml) and Grafana dashboard (grafana-dashboard.json) name in their
// expressions, each with where it is named.
func ContribMetrics(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	add := func(where, expr string) {
		for _, name := range names.FindAllString(expr, -1) {
			if _, ok := out[name]; !ok {
				out[name] = where
			}
		}
	}
	for alert, expr := range AlertRules(t) {
		add("alert "+alert, expr)
	}
	for _, q := range DashboardQueries(t) {
		add(q.Where, q.Expr)
	}
	return out
}

// Query is one PromQL expression of the dashboard.
type Query struct {
	Where string // "dashboard panel <title>", or the template variable
	Expr  string
}

// DashboardQueries lists every PromQL expression of contrib/grafana-dashboard.json: the
// panels' targets ("expr") and the template variables' queries.
func DashboardQueries(t testing.TB) []Query {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(ContribDir(), "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err = json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var out []Query
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch v := v.(type) {
		case map[string]any:
			if title, ok := v["title"].(string); ok {
				where = "dashboard panel " + title
			}
			if name, ok := v["name"].(string); ok && v["type"] == "query" {
				where = "dashboard variable " + name
			}
			for k, x := range v {
				switch x := x.(type) {
				case string:
					if k == "expr" || k == "query" && strings.HasPrefix(where, "dashboard variable") {
						out = append(out, Query{where, x})
					}
				default:
					walk(x, where)
				}
			}
		case []any:
			for _, x := range v {
				walk(x, where)
			}
		}
	}
	walk(dash, "dashboard")
	slices.SortFunc(out, func(a, b Query) int { return strings.Compare(a.Where+a.Expr, b.Where+b.Expr) })
	return out
}
