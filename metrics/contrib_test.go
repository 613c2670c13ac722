package metrics

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/metrics/metricstest"
	"github.com/synapse-medic/medic/store"
)

// promtool returns promtool's path (Debian's prometheus package; scripts/test.sh installs it).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("MEDIC_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool is not installed (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus; scripts/test.sh does)")
	}
	return path
}

// TestAlertRules: promtool loads contrib/prometheus-rules.yml, and each alert's expression
// selects what it should on sample series (promtool's rule unit tests, evaluating the
// expressions as written in the file).
func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	rules := filepath.Join(metricstest.ContribDir(), "prometheus-rules.yml")
	if out, err := exec.Command(bin, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	exprs := metricstest.AlertRules(t)
	type sample struct {
		Labels string  `yaml:"labels"`
		Value  float64 `yaml:"value"`
	}
	type exprTest struct {
		Expr     string   `yaml:"expr"`
		EvalTime string   `yaml:"eval_time"`
		Samples  []sample `yaml:"exp_samples"`
	}
	type series struct {
		Series string `yaml:"series"`
		Values string `yaml:"values"`
	}
	type group struct {
		Interval string     `yaml:"interval"`
		Input    []series   `yaml:"input_series"`
		Tests    []exprTest `yaml:"promql_expr_test"`
	}
	const srv = `server_name="example.org"`
	cases := []struct {
		alert  string
		input  []series
		at     string
		expect []sample
	}{
		{"MedicDown", []series{{`up{job="medic", instance="a:9330"}`, "1 0"}, {`up{job="node", instance="b:9100"}`, "0 0"}},
			"1m", []sample{{`up{job="medic", instance="a:9330"}`, 0}}},
		{"MedicDown", []series{{`up{job="node", instance="b:9100"}`, "1 1"}}, "1m", []sample{{`{job="medic"}`, 1}}},
		{"MedicDown", []series{{`up{job="medic", instance="a:9330"}`, "1 1"}}, "1m", nil},
		{"MedicNotReady", []series{{`medic_ready{` + srv + `}`, "1 0"}, {`medic_ready{server_name="b.org"}`, "1 1"}},
			"1m", []sample{{`{__name__="medic_ready", ` + srv + `}`, 0}}},
		{"MedicHealthCheckCritical", []series{
			{`medic_health_check_status{` + srv + `, check="federation"}`, "0 2"},
			{`medic_health_check_status{` + srv + `, check="disk"}`, "1 1"},
			{`medic_health_check_status{` + srv + `, check="partial-joins"}`, "-1 -1"},
		}, "1m", []sample{{`{__name__="medic_health_check_status", ` + srv + `, check="federation"}`, 2}}},
		{"MedicJobFailed", []series{
			{`medic_jobs{` + srv + `, kind="unreject", state="failed"}`, "0 1"},
			{`medic_jobs{` + srv + `, kind="recover", state="interrupted"}`, "0 2"},
			{`medic_jobs{` + srv + `, kind="import", state="failed"}`, "0 0"},
			{`medic_jobs{` + srv + `, kind="import", state="done"}`, "3 3"},
		}, "1m", []sample{{`{` + srv + `, kind="unreject", state="failed"}`, 1}, {`{` + srv + `, kind="recover", state="interrupted"}`, 2}}},
		{"MedicHealthChecksNotRunning", []series{
			// One server's checks last ran at 0 (stale at 20m); the other's every minute.
			{`medic_health_checks_last_run_timestamp_seconds{` + srv + `}`, "0x20"},
			{`medic_health_checks_interval_seconds{` + srv + `}`, "300x20"},
			{`medic_health_checks_last_run_timestamp_seconds{server_name="b.org"}`, "0+60x20"},
			{`medic_health_checks_interval_seconds{server_name="b.org"}`, "300x20"},
		}, "20m", []sample{{`{` + srv + `}`, 1200}}},
		{"MedicLoginTokensOutstanding", []series{
			{`medic_login_tokens_outstanding{` + srv + `}`, "2 2"},
			{`medic_jobs{` + srv + `, kind="recover", state="running"}`, "0 0"},
			{`medic_login_tokens_outstanding{server_name="b.org"}`, "3 3"},
			{`medic_jobs{server_name="b.org", kind="recover", state="running"}`, "1 1"},
		}, "1m", []sample{{`{__name__="medic_login_tokens_outstanding", ` + srv + `}`, 2}}},
	}
	var groups []group
	tested := map[string]bool{}
	for _, c := range cases {
		expr, ok := exprs[c.alert]
		if !ok {
			t.Fatalf("no alert %s in %s", c.alert, rules)
		}
		tested[c.alert] = true
		groups = append(groups, group{Interval: "1m", Input: c.input,
			Tests: []exprTest{{Expr: expr, EvalTime: c.at, Samples: c.expect}}})
	}
	for alert := range exprs {
		if !tested[alert] {
			t.Errorf("alert %s has no case here", alert)
		}
	}
	raw, err := yaml.Marshal(map[string]any{"rule_files": []string{rules}, "evaluation_interval": "1m", "tests": groups})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rules_test.yml")
	if err = os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "test", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n%s", err, out, raw)
	}
}

// TestContribMetricsExported: every metric the alert rules and the dashboard name is one medic
// exports (here with every check reporting; the testbed test checks a running medic too).
func TestContribMetricsExported(t *testing.T) {
	f := newFixture(t)
	f.lastSync.Store(time.Now().UnixMilli())
	f.s.RunEnded("unreject", store.JobDone, time.Second)
	rep := &health.Report{At: time.Now()}
	for _, id := range health.IDs() {
		rep.Results = append(rep.Results, &health.Result{Check: id, Metrics: map[string]float64{}, PerItem: map[string]float64{}})
	}
	for _, fig := range figures {
		for _, r := range rep.Results {
			if r.Check == fig.check {
				r.Metrics[fig.key] = 1
			}
		}
	}
	for _, fig := range itemFigures {
		for _, r := range rep.Results {
			if r.Check == fig.check {
				r.PerItem["item"] = 1
			}
		}
	}
	f.s.lock.Lock()
	f.s.report = rep
	f.s.lock.Unlock()
	fams := metricstest.Parse(t, strings.NewReader(scrape(t, f.s.Handler())))
	named := metricstest.ContribMetrics(t)
	for name, where := range named {
		if !fams.Has(name) {
			t.Errorf("%s (named by %s) is not exported", name, where)
		}
	}
	// The dashboard shows every figure medic exports.
	for _, fig := range figures {
		if _, ok := named[fig.name]; !ok {
			t.Errorf("%s is exported but neither the rules nor the dashboard use it", fig.name)
		}
	}
	for _, fig := range itemFigures {
		if _, ok := named[fig.name]; !ok && fig.name != "medic_room_forward_extremities" {
			t.Errorf("%s is exported but neither the rules nor the dashboard use it", fig.name)
		}
	}
}

// TestDashboardQueriesParse: every PromQL expression of the Grafana dashboard parses (promtool
// checks them as recording rules, with Grafana's variables filled in).
func TestDashboardQueriesParse(t *testing.T) {
	bin := promtool(t)
	fill := strings.NewReplacer(`$server_name`, `.*`, `$__rate_interval`, `5m`, `$__interval`, `1m`)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	queries := metricstest.DashboardQueries(t)
	for i, q := range queries {
		expr := fill.Replace(q.Expr)
		if m := labelValues.FindStringSubmatch(expr); m != nil {
			expr = m[1]
		}
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query%d", i), Expr: expr})
	}
	if len(rules) < 20 {
		t.Fatalf("only %d queries found in the dashboard", len(rules))
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard.yml")
	if err = os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard query does not parse: %v\n%s\n%s", err, out, raw)
	}
}
