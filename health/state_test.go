package health

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
)

// TestStateCheckDaily: the state check audits at most every state.health_interval; in
// between it repeats the last audit's findings from the stored report (no federation
// request, no query), and after the interval it audits again. Without Synapse: the database
// is never connected (the pool is lazy) and no federation client is configured, so an audit
// that is due is skipped with the reason.
func TestStateCheckDaily(t *testing.T) {
	cfg, err := config.Parse([]byte("data_dir: "+t.TempDir()+"\nhomeserver: {server_name: here.test}"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	db, err := synapse.OpenDB(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	rn := &Runner{Config: cfg, DB: db, Now: func() time.Time { return now }}
	audited := func(at time.Time) *Report {
		return &Report{Previous: &store.HealthRecord{Results: map[string]store.HealthResult{"state": {
			Status: int(Critical), Summary: "1 of 3 room(s) with remote members diverge", Items: []string{"!r:there.test"},
			Metrics: map[string]float64{"audited_at": float64(at.Unix()), "diverging_rooms": 1},
		}}}}
	}

	res := &Result{Check: "state", Metrics: map[string]float64{}}
	if err := checkState(context.Background(), rn, audited(now.Add(-23*time.Hour)), res); err != nil {
		t.Fatal(err)
	}
	if res.Status != Critical || len(res.Items) != 1 || res.Items[0] != "!r:there.test" || res.Levels["!r:there.test"] != Critical ||
		!strings.Contains(res.Summary, "repeated from the audit of 2026-12-01 10:00 UTC") || res.Metrics["audited_at"] == 0 {
		t.Fatalf("within the interval the last audit is repeated: %+v", res)
	}

	res = &Result{Check: "state", Metrics: map[string]float64{}}
	if err := checkState(context.Background(), rn, audited(now.Add(-25*time.Hour)), res); err != nil {
		t.Fatal(err)
	}
	if res.Status != Skipped || !strings.Contains(res.Summary, "signing key") {
		t.Fatalf("after the interval the audit is due (and needs the signing key here): %+v", res)
	}
}
