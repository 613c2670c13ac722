package health_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapselog"
	"github.com/synapse-medic/medic/testbed"
)

func TestMain(m *testing.M) { testbed.Main(m) }

// runner builds a health runner for hs1 from the same config the process-level tests use.
func runner(t *testing.T, tb *testbed.Testbed, admin *mautrix.Client) *health.Runner {
	t.Helper()
	cfg, err := config.Load(tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword))
	if err != nil {
		t.Fatal(err)
	}
	if err = cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	db, err := synapse.OpenDB(context.Background(), tb.HS1.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return &health.Runner{Config: cfg, Admin: adminapi.New(admin), DB: db}
}

// check runs one check and returns its result.
func check(t *testing.T, rn *health.Runner, id string) *health.Result {
	t.Helper()
	rep, err := rn.Run(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results[0]
	t.Logf("%s: %s %s %v", id, r.Status, r.Summary, r.Items)
	return r
}

// flipped asserts a check reports the fault: key among its findings, with that status.
// (Only the injected finding is asserted: the shared testbed may hold others' findings.)
func flipped(t *testing.T, r *health.Result, status health.Status, key string) {
	t.Helper()
	if r.Status < status || r.Levels[key] != status || !slices.Contains(r.Items, key) {
		t.Fatalf("%s did not flip to %s for %s: %s %q items %v rows %v", r.Check, status, key, r.Status, r.Summary, r.Items, r.Rows)
	}
	if r.Hint == "" {
		t.Errorf("%s: no fix hint", r.Check)
	}
}

// cleared asserts the fault is gone from a check.
func cleared(t *testing.T, r *health.Result, key string) {
	t.Helper()
	if slices.Contains(r.Items, key) || r.Levels[key] != health.OK {
		t.Fatalf("%s did not clear %s: %s %q items %v", r.Check, key, r.Status, r.Summary, r.Items)
	}
}

// TestDatabaseFaults injects, one at a time, the faults the checks read from Synapse's
// database, and removes them again: a rejected event (and a rejected power-levels event,
// the start of a chain), a table owned by another role, a stuck partial join, many forward
// extremities.
func TestDatabaseFaults(t *testing.T) {
	tb := testbed.Get(t)
	admin := tb.Admin(t, tb.HS1)
	rn := runner(t, tb, admin)
	ctx := context.Background()
	room, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: testbed.UniqueName("health")})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []id.EventID
	for i := 0; i < 12; i++ {
		resp, err := admin.SendText(ctx, room.RoomID, fmt.Sprintf("message %d", i))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, resp.EventID)
	}
	key := room.RoomID.String()

	t.Run("rejections", func(t *testing.T) {
		cleared(t, check(t, rn, "rejections"), key)
		now := fmt.Sprint(time.Now().UnixMilli())
		reject := func(ev string) {
			tb.HS1.Exec(t, `INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'auth_error', $2)`, ev, now)
			t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM rejections WHERE event_id = $1`, ev) })
		}
		// Three busier rooms (three rejected messages each, no chain) take the full chain
		// walks (rejection_chain_walks: 3), as other rooms' rejections do on a real server:
		// this room's chain must be found all the same.
		for range 3 {
			decoy, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: testbed.UniqueName("health-decoy")})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				resp, err := admin.SendText(ctx, decoy.RoomID, fmt.Sprintf("decoy %d", i))
				if err != nil {
					t.Fatal(err)
				}
				reject(resp.EventID.String())
			}
		}
		reject(msgs[3].String())
		r := check(t, rn, "rejections")
		flipped(t, r, health.Warn, key)
		if row := r.Rows[slices.Index(r.Keys, key)]; row[1] != "1" || row[4] != "" || r.PerItem[key] != 1 {
			t.Errorf("one rejected message, no chain: %v (figure %v)", row, r.PerItem[key])
		}
		// The power levels rejected too: the start of a rejection chain, critical although
		// the room has fewer rejections than the rooms walked in full.
		var pl string
		if err := rn.DB.Pool.QueryRow(ctx, `SELECT event_id FROM current_state_events WHERE room_id = $1 AND type = 'm.room.power_levels'`, key).Scan(&pl); err != nil {
			t.Fatal(err)
		}
		reject(pl)
		r = check(t, rn, "rejections")
		flipped(t, r, health.Critical, key)
		if row := strings.Join(r.Rows[slices.Index(r.Keys, key)], " "); !strings.Contains(row, "a rejected event cites a rejected event") {
			t.Errorf("the chain of a room not walked is not shown: %v", row)
		}
		// Walked in full, the chain names its root.
		rn.Config.Health.Thresholds.RejectionChainWalks = 1000
		r = check(t, rn, "rejections")
		flipped(t, r, health.Critical, key)
		if !strings.Contains(strings.Join(r.Rows[slices.Index(r.Keys, key)], " "), "m.room.power_levels "+pl+" rejected, 1 later event") || !strings.Contains(r.Hint, "!unreject") {
			t.Errorf("the chain is not shown or !unreject not offered: %v %q", r.Rows, r.Hint)
		}
		rn.Config.Health.Thresholds.RejectionChainWalks = 3
		tb.HS1.Exec(t, `DELETE FROM rejections WHERE event_id = ANY($1)`, []string{msgs[3].String(), pl})
		cleared(t, check(t, rn, "rejections"), key)
	})

	t.Run("owner", func(t *testing.T) {
		table := testbed.UniqueName("medic_health_probe_")
		tb.HS1.Exec(t, `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'medic_other') THEN CREATE ROLE medic_other NOLOGIN; END IF; END $$`)
		tb.HS1.Exec(t, `CREATE TABLE `+table+` (x int)`)
		t.Cleanup(func() { tb.HS1.Exec(t, `DROP TABLE IF EXISTS `+table) })
		tb.HS1.Exec(t, `ALTER TABLE `+table+` OWNER TO medic_other`)
		r := check(t, rn, "restore")
		flipped(t, r, health.Critical, "owner "+table)
		tb.HS1.Exec(t, `ALTER TABLE `+table+` OWNER TO synapse`)
		cleared(t, check(t, rn, "restore"), "owner "+table)
	})

	t.Run("partial join", func(t *testing.T) {
		rn.Config.Health.Thresholds.PartialJoinAfter = "1s"
		var create string
		if err := rn.DB.Pool.QueryRow(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND type = 'm.room.create'`, key).Scan(&create); err != nil {
			t.Fatal(err)
		}
		cleared(t, check(t, rn, "partial-joins"), key)
		tb.HS1.Exec(t, `INSERT INTO partial_state_rooms (room_id, device_lists_stream_id, join_event_id, joined_via) VALUES ($1, 0, $2, $3)`, key, create, tb.HS2.Name)
		t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM partial_state_rooms WHERE room_id = $1`, key) })
		time.Sleep(1100 * time.Millisecond)
		flipped(t, check(t, rn, "partial-joins"), health.Warn, key)
		tb.HS1.Exec(t, `DELETE FROM partial_state_rooms WHERE room_id = $1`, key)
		cleared(t, check(t, rn, "partial-joins"), key)
	})

	t.Run("extremities", func(t *testing.T) {
		cleared(t, check(t, rn, "extremities"), key)
		for _, e := range msgs[:11] {
			tb.HS1.Exec(t, `INSERT INTO event_forward_extremities (event_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, e, key)
		}
		drop := func() {
			tb.HS1.Exec(t, `DELETE FROM event_forward_extremities WHERE room_id = $1 AND event_id = ANY($2)`, key, idStrings(msgs[:11]))
		}
		t.Cleanup(drop)
		r := check(t, rn, "extremities")
		flipped(t, r, health.Warn, key)
		if !strings.Contains(r.Hint, "!extremities trim") {
			t.Errorf("hint: %q", r.Hint)
		}
		if n := r.PerItem[key]; n < 11 || r.Metrics["max"] < n {
			t.Errorf("the room's %v forward extremities, the maximum %v", n, r.Metrics["max"])
		}
		drop()
		cleared(t, check(t, rn, "extremities"), key)
	})
}

func idStrings(ids []id.EventID) []string {
	out := make([]string, len(ids))
	for i, e := range ids {
		out[i] = e.String()
	}
	return out
}

// scratchCopy creates a database with hs1's schema (no rows) in the given locale, dropped
// when the test ends.
func scratchCopy(t *testing.T, tb *testbed.Testbed, locale string) *synapse.DB {
	t.Helper()
	name := testbed.UniqueName("medic_health_scratch_")
	tb.HS1.Exec(t, `CREATE DATABASE `+name+` TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE '`+locale+`' LC_CTYPE '`+locale+`'`)
	t.Cleanup(func() { tb.HS1.Exec(t, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`) })
	// The pair may be a private one (hs6…): replace whatever database the DSN names.
	u, err := url.Parse(tb.HS1.DSN)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	dsn := u.String()
	if out, err := exec.Command("bash", "-c", fmt.Sprintf("set -o pipefail; pg_dump -s '%s' | psql -q -v ON_ERROR_STOP=1 '%s'", tb.HS1.DSN, dsn)).CombinedOutput(); err != nil {
		t.Fatalf("copy schema: %v\n%s", err, out)
	}
	db, err := synapse.OpenDB(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close) // runs before the drop (cleanups run last-in first-out)
	return db
}

// TestNonCCollation checks a database restored into a non-C locale: a scratch copy of hs1's
// schema in a database created with C.utf8 (the one other locale this machine has; Synapse
// refuses anything but C). hs1 itself, created with C, passes.
func TestNonCCollation(t *testing.T) {
	tb := testbed.Get(t)
	admin := tb.Admin(t, tb.HS1)
	rn := runner(t, tb, admin)
	db := scratchCopy(t, tb, "C.utf8")
	res := &health.Result{Check: "restore"}
	if err := health.CheckRestoreHazards(context.Background(), db, "!", res); err != nil {
		t.Fatal(err)
	}
	flipped(t, res, health.Critical, "collation")
	if !strings.Contains(res.Summary, "C.utf8") {
		t.Errorf("summary does not name the collation: %q", res.Summary)
	}
	cleared(t, check(t, rn, "restore"), "collation")
}

// TestSequenceAndBackgroundUpdates: on a scratch copy (C locale, so Synapse never runs these
// updates), an event stored above events_stream_seq (as after restoring data without the
// sequences) and a pending background update flip their checks; setval and the update's
// removal clear them.
func TestSequenceAndBackgroundUpdates(t *testing.T) {
	tb := testbed.Get(t)
	rn := runner(t, tb, tb.Admin(t, tb.HS1))
	ctx := context.Background()
	rn.DB = scratchCopy(t, tb, "C")
	exec := func(sql string) {
		t.Helper()
		if _, err := rn.DB.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	cleared(t, check(t, rn, "restore"), "sequence events_stream_seq")
	exec(`INSERT INTO rooms (room_id) VALUES ('!r:scratch')`)
	exec(`INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier, stream_ordering, received_ts)
		VALUES (1, '$e', 'm.room.message', '!r:scratch', true, false, 5000, 0)`)
	r := check(t, rn, "restore")
	flipped(t, r, health.Critical, "sequence events_stream_seq")
	if !strings.Contains(r.Hint, "setval") {
		t.Errorf("hint: %q", r.Hint)
	}
	if !strings.Contains(r.Hint, "medic exec aftercare") || !strings.Contains(r.Hint, "!aftercare") {
		t.Errorf("the hint does not offer the aftercare: %q", r.Hint)
	}
	exec(`SELECT setval('events_stream_seq', 5000)`)
	cleared(t, check(t, rn, "restore"), "sequence events_stream_seq")
	// A stream position above the sequence (its table is not): Synapse refuses to start on it
	// (IncorrectDatabaseSetup), so the check must see it too, and in another stream than events.
	exec(`INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ('receipts', 'master', 7000)`)
	r = check(t, rn, "restore")
	flipped(t, r, health.Critical, "sequence receipts_sequence")
	if !strings.Contains(strings.Join(r.Rows[slices.Index(r.Keys, "sequence receipts_sequence")], " "), "7000") {
		t.Errorf("the stream position is not shown: %v", r.Rows)
	}
	exec(`SELECT setval('receipts_sequence', 7000)`)
	cleared(t, check(t, rn, "restore"), "sequence receipts_sequence")
	// A row of room_account_data (no index on stream_id: its MAX is a scan of a table with a
	// row per user and room) above account_data_sequence: Synapse moves the sequence forward
	// itself when it starts, so the health check does not scan for it; the offline aftercare,
	// which reads every table, sets it.
	exec(`INSERT INTO room_account_data (user_id, room_id, account_data_type, stream_id, content)
		VALUES ('@u:scratch', '!r:scratch', 'm.fully_read', 9000, '{}')`)
	cleared(t, check(t, rn, "restore"), "sequence account_data_sequence")
	lags, err := rn.DB.SequenceLags(ctx, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(lags, func(l synapse.SequenceLag) bool { return l.Name == "account_data_sequence" }); i < 0 || lags[i].Want() != 9000 {
		t.Errorf("the full read misses room_account_data's 9000: %+v", lags)
	}

	exec(`DELETE FROM background_updates`)
	cleared(t, check(t, rn, "background-updates"), "medic_test_update")
	exec(`INSERT INTO background_updates (update_name, progress_json) VALUES ('medic_test_update', '{}')`)
	flipped(t, check(t, rn, "background-updates"), health.Warn, "medic_test_update")
	exec(`DELETE FROM background_updates`)
	cleared(t, check(t, rn, "background-updates"), "medic_test_update")
}

// TestFailingDestination: hs2 stopped → hs1 backs off from it → the check names it with how
// long; hs2 back and the backoff reset (what the hint offers) → it clears.
func TestFailingDestination(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := tb.Admin(t, tb.HS1)
	rn := runner(t, tb, admin)
	rn.Config.Health.Thresholds.DestinationWarnAfter = "0s"
	remote := tb.Register(t, tb.HS2, testbed.UniqueName("remote"), false)
	room, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{remote.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if _, err = remote.JoinRoomByID(ctx, room.RoomID); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("remote join: %v", err)
		}
	}
	cleared(t, check(t, rn, "destinations"), tb.HS2.Name)
	tb.Stop(t, tb.HS2)
	stopped := time.Now()
	t.Cleanup(func() { tb.Start(t, tb.HS2) })
	if _, err = admin.SendText(ctx, room.RoomID, "hello while hs2 is down"); err != nil {
		t.Fatal(err)
	}
	// Synapse records the dead peer in its destinations table only after ~9.5 minutes; its
	// log shows the failing requests, so the check lists hs2 within about two.
	var r *health.Result
	for deadline := time.Now().Add(240 * time.Second); ; time.Sleep(5 * time.Second) {
		r = check(t, rn, "destinations")
		if slices.Contains(r.Items, tb.HS2.Name) || time.Now().After(deadline) {
			break
		}
	}
	found := time.Since(stopped)
	flipped(t, r, health.Warn, tb.HS2.Name)
	source := ""
	for i, key := range r.Keys {
		if key == tb.HS2.Name {
			source = r.Rows[i][len(r.Rows[i])-1]
		}
	}
	recorded := tb.HS1.Count(t, `SELECT count(*) FROM destinations WHERE destination = $1 AND failure_ts IS NOT NULL`, tb.HS2.Name) > 0
	t.Logf("hs2 listed %s after it stopped, source %q; recorded in destinations then: %v", found.Round(time.Second), source, recorded)
	if !recorded && !strings.HasPrefix(source, "Synapse's log") {
		t.Errorf("hs2 listed while Synapse has not recorded it, but not from the log: %q", source)
	}
	if !strings.Contains(source, "ConnectionRefused") && !strings.Contains(source, "destinations table") {
		t.Errorf("the row does not say why: %q", source)
	}
	if r.Metrics["failing"] < 1 {
		t.Errorf("failing metric %v", r.Metrics["failing"])
	}
	if !strings.Contains(r.Hint, "!federation reset") {
		t.Errorf("hint: %q", r.Hint)
	}
	// Synapse's own log, read as the check reads it, shows hs2 failing whatever Synapse's
	// table says (Synapse writes the table when its retries give up, which for transaction
	// traffic alone takes ~9.5 min; here a failed profile lookup put it there sooner).
	var peer *synapselog.Peer
	for deadline := time.Now().Add(150 * time.Second); peer == nil; time.Sleep(5 * time.Second) {
		peers, err := diagnose.FailingPeersFromLogs(ctx, rn.Config.Synapse.Logs, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if p.Server == tb.HS2.Name {
				peer = p
			}
		}
		if time.Now().After(deadline) {
			break
		}
	}
	if peer == nil {
		t.Fatalf("Synapse's log never showed hs2 failing (%s after it stopped)", time.Since(stopped).Round(time.Second))
	}
	t.Logf("Synapse's log shows hs2 failing %s after it stopped: %d failed requests since %s, last %q",
		time.Since(stopped).Round(time.Second), peer.Failures, peer.First.Format(time.TimeOnly), peer.LastError)
	if !strings.Contains(peer.LastError, "ConnectionRefused") {
		t.Errorf("last error %q", peer.LastError)
	}
	tb.Start(t, tb.HS2)
	if err = rn.Admin.ResetConnection(ctx, tb.HS2.Name); err != nil {
		t.Fatal(err)
	}
	// Back: once a request to hs2 completes (the queued transaction, sent on the reset), the
	// log no longer shows it failing either.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(3 * time.Second) {
		r = check(t, rn, "destinations")
		if !slices.Contains(r.Items, tb.HS2.Name) || time.Now().After(deadline) {
			break
		}
	}
	cleared(t, r, tb.HS2.Name)
}

// TestFailingDestinationFromMetrics: with synapse.metrics_url set (and the log source off,
// so the finding can only come from the metrics), hs2 stopped while hs1 has a PDU for it → the
// check lists hs2 from Synapse's metrics within a couple of minutes, long before Synapse's
// destinations table has it; hs2 back and the backoff reset → the PDU is delivered and it
// clears.
func TestFailingDestinationFromMetrics(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := tb.Admin(t, tb.HS1)
	rn := runner(t, tb, admin)
	rn.Config.Synapse.MetricsURL = tb.HS1.MetricsURL()
	rn.Config.Synapse.Logs = nil
	rn.Config.Health.Thresholds.DestinationWarnAfter = "0s"
	remote := tb.Register(t, tb.HS2, testbed.UniqueName("remote"), false)
	// A public room: a remote member joining a private one makes Synapse refresh its profile
	// a minute later, a request that fails at once and puts hs2 in the destinations table.
	room, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: testbed.UniqueName("metrics")})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if _, err = remote.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{tb.HS1.Name}}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("remote join: %v", err)
		}
	}
	// Synapse keeps the metric once a PDU was delivered since it started.
	client := &http.Client{Timeout: 10 * time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		if _, err = admin.SendText(ctx, room.RoomID, "delivered"); err != nil {
			t.Fatal(err)
		}
		fams, err := synapse.FetchMetrics(ctx, client, rn.Config.Synapse.MetricsURL)
		if err != nil {
			t.Fatalf("Synapse's metrics (a testbed from before testbed.sh had a metrics listener? recreate it): %v", err)
		}
		if _, ok := synapse.LastSentPDU(fams)[tb.HS2.Name]; ok {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("Synapse's metrics never showed a PDU delivered to %s", tb.HS2.Name)
		}
	}
	cleared(t, check(t, rn, "destinations"), tb.HS2.Name)

	tb.Stop(t, tb.HS2)
	stopped := time.Now()
	if _, err = admin.SendText(ctx, room.RoomID, "hello while hs2 is down"); err != nil {
		t.Fatal(err)
	}
	var r *health.Result
	for deadline := time.Now().Add(180 * time.Second); ; time.Sleep(5 * time.Second) {
		r = check(t, rn, "destinations")
		if slices.Contains(r.Items, tb.HS2.Name) || time.Now().After(deadline) {
			break
		}
	}
	found := time.Since(stopped)
	flipped(t, r, health.Warn, tb.HS2.Name)
	source := r.Rows[slices.Index(r.Keys, tb.HS2.Name)][3]
	recorded := tb.HS1.Count(t, `SELECT count(*) FROM destinations WHERE destination = $1 AND failure_ts IS NOT NULL`, tb.HS2.Name) > 0
	t.Logf("hs2 listed %s after it stopped, source %q; recorded in destinations then: %v", found.Round(time.Second), source, recorded)
	if !recorded && !strings.HasPrefix(source, "Synapse's metrics: last PDU delivered") {
		t.Errorf("hs2 listed while Synapse has not recorded it, but not from the metrics: %q", source)
	}
	if !recorded && (r.Metrics["failing_from_metrics"] != 1 || !strings.Contains(r.Summary, "seen in Synapse's metrics only")) {
		t.Errorf("the figure and summary do not name the metrics source: %v %q", r.Metrics, r.Summary)
	}

	tb.Start(t, tb.HS2)
	if err = rn.Admin.ResetConnection(ctx, tb.HS2.Name); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(3 * time.Second) {
		r = check(t, rn, "destinations")
		if !slices.Contains(r.Items, tb.HS2.Name) || time.Now().After(deadline) {
			break
		}
	}
	cleared(t, r, tb.HS2.Name)
}

// TestSelfTestThroughNginx: the federation self-test through an nginx that normalises
// request URIs fails with Synapse's 401 on the escaped path, and names the proxy as the
// cause; through one that passes URIs verbatim (and directly) it passes.
func TestSelfTestThroughNginx(t *testing.T) {
	tb := testbed.Get(t)
	admin := tb.Admin(t, tb.HS1)
	rn := runner(t, tb, admin)
	// Free ports: fixed ones collide with the private pairs' federation ports (hs10/hs11: 8490/8491).
	normalising, verbatim := testbed.FreePort(t), testbed.FreePort(t)
	proxy := testbed.StartProxy(t, tb.HS1, t.TempDir(), normalising, verbatim)
	t.Cleanup(func() {
		if err := proxy.Stop(); err != nil {
			t.Error(err)
		}
	})

	rn.Config.Health.FederationAddress = fmt.Sprintf("127.0.0.1:%d", normalising)
	r := check(t, rn, "federation")
	flipped(t, r, health.Critical, "signed request")
	if !strings.Contains(r.Summary, "401") || !strings.Contains(r.Hint, "normalises request URIs") {
		t.Errorf("the failure does not name the cause: %q / %q", r.Summary, r.Hint)
	}
	if !strings.Contains(r.Summary, "plain path accepted") {
		t.Errorf("the unescaped control request should pass through the same proxy: %q", r.Summary)
	}

	rn.Config.Health.FederationAddress = fmt.Sprintf("127.0.0.1:%d", verbatim)
	cleared(t, check(t, rn, "federation"), "signed request")

	rn.Config.Health.FederationAddress = ""
	cleared(t, check(t, rn, "federation"), "signed request")
}

// TestSelfTestGuard: the self-test reaches the server where name resolution leads through
// netguard, like every connection to a server. With the testing switch off, hs1 (loopback)
// is refused before connecting, and the hint names health.federation_address.
func TestSelfTestGuard(t *testing.T) {
	tb := testbed.Get(t)
	rn := runner(t, tb, tb.Admin(t, tb.HS1))
	rn.Config.Federation.DangerouslyAllowLoopbackAndSelfSignedTestingOnly = false
	r := check(t, rn, "federation")
	flipped(t, r, health.Critical, "tls")
	_, port, _ := strings.Cut(tb.HS1.Name, ":")
	if !strings.Contains(r.Summary, "refused to connect to 127.0.0.1:"+port+": loopback address") || !strings.Contains(r.Hint, "health.federation_address") {
		t.Errorf("the refusal does not say why, or how to test another address: %q / %q", r.Summary, r.Hint)
	}
	rn.Config.Federation.DangerouslyAllowLoopbackAndSelfSignedTestingOnly = true
	cleared(t, check(t, rn, "federation"), "tls")
}

// TestForgottenRoomAfterRestore: hs1's database restored from a dump taken before a user
// joined a room on hs2; hs2 keeps sending; the check (the !recover scan scanner over hs1's
// log) names the room. The user rejoining clears it.
func TestForgottenRoomAfterRestore(t *testing.T) {
	tb := testbed.Get(t)
	f := testbed.StageForgottenRoom(t, tb)
	rn := runner(t, tb, tb.Admin(t, tb.HS1))
	key := f.Room.String()
	var r *health.Result
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(2 * time.Second) {
		r = check(t, rn, "forgotten")
		if slices.Contains(r.Items, key) || time.Now().After(deadline) {
			break
		}
		f.Say(t, "anyone there?")
	}
	flipped(t, r, health.Warn, key)
	if r.Status != health.Critical || !strings.Contains(r.Hint, "!recover") {
		t.Errorf("a forgotten room is critical with !recover offered: %s %q", r.Status, r.Hint)
	}
	f.Rejoin(t)
	cleared(t, check(t, rn, "forgotten"), key)
}

// TestDiskThresholds: the free-space check against its thresholds on a real file system.
func TestDiskThresholds(t *testing.T) {
	tb := testbed.Get(t)
	rn := runner(t, tb, tb.Admin(t, tb.HS1))
	rn.Config.Health.Disks = []config.HealthDisk{{Name: "scratch", Path: t.TempDir()}}
	th := &rn.Config.Health.Thresholds
	th.DiskWarnPercent, th.DiskCriticalPercent = 100, 0.0001 // any disk is under 100 % free
	flipped(t, check(t, rn, "disk"), health.Warn, "scratch")
	th.DiskWarnPercent, th.DiskCriticalPercent = 100, 100
	flipped(t, check(t, rn, "disk"), health.Critical, "scratch")
	th.DiskWarnPercent, th.DiskCriticalPercent = 0.0002, 0.0001
	cleared(t, check(t, rn, "disk"), "scratch")
}

// TestDeletedRoomIsNoLostJoin: a local user joins a room of hs2's, then hs1's admin deletes
// the room (admin API, purge): its memberships go with it. The access log's join is then no
// lost join, and the forgotten check must not offer to rejoin a room an admin deleted.
func TestDeletedRoomIsNoLostJoin(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := tb.Admin(t, tb.HS1)
	rn := runner(t, tb, admin)
	room, err := tb.Admin(t, tb.HS2).CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: testbed.UniqueName("deleted")})
	if err != nil {
		t.Fatal(err)
	}
	user := tb.Register(t, tb.HS1, testbed.UniqueName("leaver"), false)
	testbed.JoinVia(t, user, room.RoomID, tb.HS2.Name)
	adm := testbed.AdminAPI(admin)
	del, err := adm.DeleteRoom(ctx, room.RoomID, synapseadmin.ReqDeleteRoom{Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		st, err := adm.DeleteRoomStatus(ctx, del.DeleteID)
		if err == nil && st.Status == "complete" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the deletion did not complete: %+v %v", st, err)
		}
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1`, room.RoomID); n != 0 {
		t.Fatalf("%d memberships left after the purge", n)
	}
	// The join and the deletion must be in the log (Synapse buffers INFO lines) for the
	// check to have something to get wrong.
	// (The room ID's opaque part: clients escape the rest in their own ways.)
	opaque, _, _ := strings.Cut(strings.TrimPrefix(room.RoomID.String(), "!"), ":")
	deleted := regexp.MustCompile(`200 "DELETE /_synapse/admin/v2/rooms/[^ ]*` + regexp.QuoteMeta(opaque))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		raw, err := os.ReadFile(tb.HS1.LogPath())
		if err != nil {
			t.Fatal(err)
		}
		if deleted.Match(raw) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the deletion is not in hs1's log (%s)", deleted)
		}
	}
	cleared(t, check(t, rn, "forgotten"), room.RoomID.String())
	// `!recover scan` names it as left out, deleted (commands.deletedNote renders this).
	_, rep, err := diagnose.ScanForgotten(ctx, diagnose.Sources(rn.Config.Synapse.Logs), time.Now().Add(-time.Hour), rn.DB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted[room.RoomID.String()].IsZero() {
		t.Errorf("the scan's report has no deletion of %s", room.RoomID)
	}
}
