package bot_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/metrics/metricstest"
	"github.com/synapse-medic/medic/testbed"
)

// TestMetricsListener: a bot with metrics.listen on a loopback port serves /healthz, /ready
// and /metrics. /metrics parses with the Prometheus client's text parser, names every health
// check, shows a failing destination of hs1 as critical (and a rejected event in its room),
// and has every metric contrib/'s alert rules and dashboard name. /ready turns 503 when hs1
// stops, saying Synapse does not answer, and 200 again when it is back.
func TestMetricsListener(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	botUser := newBotAccount(t, tb)
	admin := tb.Admin(t, tb.HS1)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	cfg.Health.Disks = []config.HealthDisk{{Name: "data", Path: cfg.DataDir}}
	// An empty log: the forgotten-rooms check runs (and has its figure) without reading a day
	// of the shared hs1's log.
	logFile := filepath.Join(t.TempDir(), "homeserver.log")
	if err := os.WriteFile(logFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Synapse.Logs = []config.LogSource{{Type: "file", Path: logFile}}
	cfg.Metrics.Listen = freeLoopbackAddr(t)

	// A destination failing for 7 hours (critical after destination_critical_after, 6h), and
	// a rejected event in a room.
	ghost := testbed.UniqueName("metrics") + ".test"
	since := time.Now().Add(-7 * time.Hour).UnixMilli()
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, $2, 600000, $2)`, ghost, since)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost) })
	room, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := admin.SendText(ctx, room.RoomID, "to be marked rejected")
	if err != nil {
		t.Fatal(err)
	}
	tb.HS1.Exec(t, `INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'auth_error', $2)`, sent.EventID, fmt.Sprint(time.Now().UnixMilli()))
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM rejections WHERE event_id = $1`, sent.EventID) })

	start := time.Now()
	startBot(t, cfg)
	base := "http://" + cfg.Metrics.Listen
	waitFor(t, base+"/healthz", http.StatusOK, "ok") // the bot's Run binds the listener
	waitFor(t, base+"/ready", http.StatusOK, "ready")
	t.Logf("ready %s after the start", time.Since(start).Round(time.Millisecond))

	// The checks run once the bot has synced.
	var fams metricstest.Families
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		fams = metricstest.Scrape(t, base+"/metrics")
		if fams.Has("medic_health_check_status") {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("no health check status in /metrics 90 s after the start")
		}
	}
	t.Logf("checks in /metrics %s after the start", time.Since(start).Round(time.Millisecond))
	checks := fams.LabelValues("medic_health_check_status", "check")
	for _, id := range health.IDs() {
		if !slices.Contains(checks, id) {
			t.Errorf("/metrics does not name the %s check (it names %v)", id, checks)
		}
	}
	server := map[string]string{"server_name": tb.HS1.Name}
	if v, ok := fams.Value("medic_health_check_status", map[string]string{"server_name": tb.HS1.Name, "check": "destinations"}); !ok || v != 2 {
		t.Errorf("destinations check status %v (present %v), want 2 (critical) for %s failing 7h", v, ok, ghost)
	}
	if v, _ := fams.Value("medic_failing_destinations", server); v < 1 {
		t.Errorf("medic_failing_destinations = %v with %s failing", v, ghost)
	}
	// (Unless 20 rooms of the shared hs1 have more or as many: only the top 20 are exported.)
	if v, ok := fams.Value("medic_room_rejected_events", map[string]string{"room_id": room.RoomID.String()}); ok && v != 1 ||
		!ok && len(fams["medic_room_rejected_events"].GetMetric()) < 20 {
		t.Errorf("medic_room_rejected_events of %s = %v (present %v), want 1", room.RoomID, v, ok)
	}
	for name, where := range metricstest.ContribMetrics(t) {
		if !fams.Has(name) {
			t.Errorf("%s (named by contrib/'s %s) is not in a running medic's /metrics", name, where)
		}
	}
	if v, _ := fams.Value("medic_ready", server); v != 1 {
		t.Errorf("medic_ready = %v while /ready is 200", v)
	}

	tb.Stop(t, tb.HS1) // started again at the end, also on failure
	waitFor(t, base+"/ready", http.StatusServiceUnavailable, "Synapse does not answer")
	waitFor(t, base+"/healthz", http.StatusOK, "ok") // medic itself is up
	if v, _ := metricstest.Scrape(t, base+"/metrics").Value("medic_ready", server); v != 0 {
		t.Errorf("medic_ready = %v while Synapse is down", v)
	}
	tb.Start(t, tb.HS1)
	waitFor(t, base+"/ready", http.StatusOK, "ready")
}

// freeLoopbackAddr returns a loopback address with a port nothing listens on.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// waitFor waits until url answers code with a body containing want.
func waitFor(t *testing.T, url string, code int, want string) {
	t.Helper()
	c := http.Client{Timeout: 15 * time.Second}
	var last string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		resp, err := c.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if last = fmt.Sprintf("%d %q", resp.StatusCode, body); resp.StatusCode == code && strings.Contains(string(body), want) {
			return
		}
	}
	t.Fatalf("%s: %s, want %d with %q", url, last, code, want)
}
