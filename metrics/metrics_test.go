package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/metrics/metricstest"
	"github.com/synapse-medic/medic/proc"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/store/storetest"
)

// fixture is a metrics server on a real (SQLite) store with a bot whose sync and a Synapse
// whose reachability the test sets.
type fixture struct {
	s        *Server
	st       *store.Store
	lastSync atomic.Int64 // Unix ms; 0: never synced
	down     atomic.Bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, cfg := storetest.Open(t)
	cfg.Homeserver.ServerName = "example.org"
	cfg.Metrics.Listen = "127.0.0.1:0"
	f := &fixture{st: st}
	rn := &health.Runner{Config: cfg, Store: st, Self: func(context.Context) health.SelfStatus {
		st := health.SelfStatus{Running: true}
		if ms := f.lastSync.Load(); ms != 0 {
			st.LastSync = time.UnixMilli(ms)
		}
		return st
	}}
	synapseUp := func(context.Context) error {
		if f.down.Load() {
			return errors.New("connection refused")
		}
		return nil
	}
	f.s = New(cfg, rn, st, synapseUp, []string{"federation-reset", "unreject"}, "v-test", zerolog.Nop())
	return f
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

// TestReady: /ready is 503 with the reason until the bot has synced, when its last sync is
// older than sync_stale_after, and while Synapse does not answer; /healthz is always 200.
func TestReady(t *testing.T) {
	f := newFixture(t)
	h := f.s.Handler()
	for _, c := range []struct {
		name     string
		lastSync time.Time
		down     bool
		code     int
		reason   string
	}{
		{"before the first sync", time.Time{}, false, 503, "no successful sync yet"},
		{"syncing", time.Now(), false, 200, "ready"},
		{"sync stale", time.Now().Add(-6 * time.Minute), false, 503, "last successful sync 6m0s ago (limit 5m0s)"},
		{"Synapse down", time.Now(), true, 503, "Synapse does not answer: connection refused"},
	} {
		f.lastSync.Store(0)
		if !c.lastSync.IsZero() {
			f.lastSync.Store(c.lastSync.UnixMilli())
		}
		f.down.Store(c.down)
		code, body := get(t, h, "/ready")
		if code != c.code || !strings.Contains(body, c.reason) {
			t.Errorf("%s: /ready %d %q, want %d with %q", c.name, code, body, c.code, c.reason)
		}
		fams := metricstest.Parse(t, strings.NewReader(scrape(t, h)))
		if v, _ := fams.Value("medic_ready", nil); (v == 1) != (c.code == 200) {
			t.Errorf("%s: medic_ready %v with /ready %d", c.name, v, c.code)
		}
		if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("%s: /healthz %d %q", c.name, code, body)
		}
	}
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	code, body := get(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	return body
}

// TestMetrics: the checks' status and figures from the last run, jobs by kind and state (every
// known kind at zero too), job run durations, the last sync and the outstanding tokens, every
// series labelled with the server name.
func TestMetrics(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	synced := time.Now().Add(-time.Minute)
	f.lastSync.Store(synced.UnixMilli())
	for i, state := range []string{store.JobFailed, store.JobDone, store.JobDone} {
		job := &store.Job{ID: fmt.Sprint("job", i), Kind: "unreject", Args: "{}", Plan: "{}", State: state,
			RequestedAt: time.Now(), ExpiresAt: time.Now(), ApprovalsNeeded: 1}
		if err := f.st.InsertJob(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.st.BeginMint(ctx, "@u:example.org", "job0", proc.Self()); err != nil {
		t.Fatal(err)
	}
	f.s.RunEnded("unreject", store.JobFailed, 3*time.Second)
	f.s.RunEnded("unreject", store.JobDone, 40*time.Second)

	h := f.s.Handler()
	fams := metricstest.Parse(t, strings.NewReader(scrape(t, h)))
	if fams.Has("medic_health_check_status") {
		t.Error("check statuses before any run of the checks")
	}
	rooms := map[string]float64{}
	for i := range 25 {
		rooms[fmt.Sprintf("!r%02d:example.org", i)] = float64(i + 1)
	}
	f.s.lock.Lock()
	f.s.report = &health.Report{At: time.Now(), Results: []*health.Result{
		{Check: "destinations", Status: health.Critical, Items: []string{"a.example", "b.example"}, Took: 20 * time.Millisecond,
			Metrics: map[string]float64{"failing": 2}},
		{Check: "rejections", Status: health.Warn, Metrics: map[string]float64{"rejected": 325}, PerItem: rooms},
		{Check: "extremities", Status: health.OK, Metrics: map[string]float64{"max": 3, "rooms": 0}},
		{Check: "size", Status: health.OK, Metrics: map[string]float64{"database_bytes": 123456789}},
		{Check: "synapse", Status: health.OK, Metrics: map[string]float64{"latency_ms": 12}},
		{Check: "disk", Status: health.Warn, PerItem: map[string]float64{"media": 12.5, "database": 40}},
		{Check: "partial-joins", Status: health.Skipped},
	}}
	f.s.lock.Unlock()
	body := scrape(t, h)
	fams = metricstest.Parse(t, strings.NewReader(body))

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"medic_health_check_status", map[string]string{"check": "destinations"}, 2},
		{"medic_health_check_status", map[string]string{"check": "rejections"}, 1},
		{"medic_health_check_status", map[string]string{"check": "size"}, 0},
		{"medic_health_check_status", map[string]string{"check": "partial-joins"}, -1},
		{"medic_health_check_findings", map[string]string{"check": "destinations"}, 2},
		{"medic_health_check_duration_seconds", map[string]string{"check": "destinations"}, 0.02},
		{"medic_failing_destinations", nil, 2},
		{"medic_rejected_events", nil, 325},
		{"medic_room_rejected_events", map[string]string{"room_id": "!r24:example.org"}, 25},
		{"medic_forward_extremities_max", nil, 3},
		{"medic_database_size_bytes", nil, 123456789},
		{"medic_synapse_latency_seconds", nil, 0.012},
		{"medic_disk_free_ratio", map[string]string{"disk": "media"}, 0.125},
		{"medic_jobs", map[string]string{"kind": "unreject", "state": "done"}, 2},
		{"medic_jobs", map[string]string{"kind": "unreject", "state": "failed"}, 1},
		{"medic_jobs", map[string]string{"kind": "federation-reset", "state": "failed"}, 0},
		{"medic_job_duration_seconds", map[string]string{"kind": "unreject", "state": "failed"}, 1},
		{"medic_job_duration_seconds", map[string]string{"kind": "federation-reset", "state": "done"}, 0},
		{"medic_login_tokens_outstanding", nil, 1},
		{"medic_last_sync_timestamp_seconds", nil, float64(synced.UnixMilli()) / 1000},
		{"medic_ready", nil, 1},
		{"medic_info", map[string]string{"version": "v-test"}, 1},
	} {
		got, ok := fams.Value(c.name, c.labels)
		if !ok || got < c.want-1e-6 || got > c.want+1e-6 {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if n := len(fams["medic_room_rejected_events"].GetMetric()); n != maxItems {
		t.Errorf("%d rooms' rejections exposed, want the top %d", n, maxItems)
	}
	if _, ok := fams.Value("medic_room_rejected_events", map[string]string{"room_id": "!r00:example.org"}); ok {
		t.Error("the room with the fewest rejections is exposed beyond the top 20")
	}
	if fams.Has("medic_partial_join_rooms") {
		t.Error("a skipped check's figure is exposed")
	}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == "server_name" && l.GetValue() == "example.org"
			}
			if !found {
				t.Fatalf("%s has a series without server_name=example.org: %v", name, m.GetLabel())
			}
		}
	}
	if !fams.Has("go_goroutines") || !fams.Has("process_resident_memory_bytes") {
		t.Error("the Go and process collectors are missing")
	}
}

// TestServe: the listener binds metrics.listen, answers, runs the checks at once (every check
// is named in /metrics), and stops with its context.
func TestServe(t *testing.T) {
	f := newFixture(t)
	f.lastSync.Store(time.Now().UnixMilli())
	if err := f.s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.s.Serve(ctx); close(done) }()
	base := "http://" + f.s.Addr().String()
	deadline := time.Now().Add(30 * time.Second)
	var fams metricstest.Families
	for {
		fams = metricstest.Scrape(t, base+"/metrics")
		if fams.Has("medic_health_check_status") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	checks := fams.LabelValues("medic_health_check_status", "check")
	for _, id := range health.IDs() {
		if !strings.Contains(strings.Join(checks, " "), id) {
			t.Errorf("check %s is not in /metrics (has %v)", id, checks)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop with its context")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the listener still answers after Serve ended")
	}
}

// TestListenTaken: a taken address fails Listen (medic's start), naming the key.
func TestListenTaken(t *testing.T) {
	a := newFixture(t)
	if err := a.s.Listen(); err != nil {
		t.Fatal(err)
	}
	defer a.s.ln.Close()
	b := newFixture(t)
	b.s.cfg.Metrics.Listen = a.s.Addr().String()
	if err := b.s.Listen(); err == nil || !strings.Contains(err.Error(), "metrics.listen") {
		t.Fatalf("second listener on %s: %v", a.s.Addr(), err)
	}
}
