package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/testbed"
)

// The generated database: MEDIC_BENCH_EVENTS events (default 5M) and MEDIC_BENCH_STATE
// state_groups_state rows (default 20M) in 1000 rooms, one room holding a quarter of the
// state, 20k rejected events of which a few are power levels (rejection chains), rooms with
// many forward extremities, partial joins. It is kept between runs (same sizes: reused).
const healthBenchDB = "medic_bench_health"

// healthBenchVersion changes when the generated data changes, so an old database is redone.
const healthBenchVersion = "v4"

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// generateHealthDB creates the database with Synapse's schema (copied from hs1) and fills it
// with generate_series. It returns its DSN.
func generateHealthDB(b *testing.B, tb *testbed.Testbed, events, stateRows int) string {
	ctx := context.Background()
	dsn := strings.Replace(tb.HS1.DSN, "/hs1?", "/"+healthBenchDB+"?", 1)
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		var ev, st string
		err = conn.QueryRow(ctx, `SELECT coalesce(obj_description('events'::regclass), ''), coalesce(obj_description('state_groups_state'::regclass), '')`).Scan(&ev, &st)
		_ = conn.Close(ctx)
		if err == nil && ev == fmt.Sprintf("%d %s", events, healthBenchVersion) && st == fmt.Sprint(stateRows) {
			fmt.Printf("health bench: reusing %s (%d events, %d state rows)\n", healthBenchDB, events, stateRows)
			return dsn
		}
	}
	fmt.Printf("health bench: generating %s: %d events, %d state_groups_state rows (minutes)…\n", healthBenchDB, events, stateRows)
	start := time.Now()
	tb.HS1.Exec(b, `DROP DATABASE IF EXISTS `+healthBenchDB+` WITH (FORCE)`)
	tb.HS1.Exec(b, `CREATE DATABASE `+healthBenchDB+` TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' OWNER synapse`)
	if out, err := exec.Command("bash", "-c", fmt.Sprintf("set -o pipefail; pg_dump -s '%s' | psql -q -v ON_ERROR_STOP=1 '%s'", tb.HS1.DSN, dsn)).CombinedOutput(); err != nil {
		b.Fatalf("copy schema: %v\n%s", err, out)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	groups := stateRows / 20
	now := time.Now().UnixMilli()
	base := now - int64(events)*100 // one event every 100 ms up to now (≈ 5.8 days for 5M)
	steps := []string{
		`SET synchronous_commit = off`,
		`SET maintenance_work_mem = '256MB'`,
		`INSERT INTO rooms (room_id, is_public, creator, room_version)
			SELECT '!room' || g || ':bench.example', false, '@u1:bench.example', '10' FROM generate_series(1, 1000) g`,
		fmt.Sprintf(`INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier, depth,
				origin_server_ts, received_ts, sender, contains_url, instance_name, stream_ordering, state_key)
			SELECT g, '$ev' || g,
				CASE WHEN g %% 250000 = 0 THEN 'm.room.power_levels' WHEN g %% 20 = 0 THEN 'm.room.member' ELSE 'm.room.message' END,
				'!room' || (g %% 1000 + 1) || ':bench.example', true, false, g, %[1]d + g * 100, %[1]d + g * 100,
				'@u' || (g %% 5000) || ':bench.example', false, 'master', g,
				CASE WHEN g %% 250000 = 0 THEN '' WHEN g %% 20 = 0 THEN '@u' || (g %% 5000) || ':bench.example' END
			FROM generate_series(1, %[2]d) g`, base, events),
		fmt.Sprintf(`INSERT INTO state_groups (id, room_id, event_id)
			SELECT g, '!room' || (CASE WHEN g %% 4 = 0 THEN 1 ELSE g %% 1000 + 1 END) || ':bench.example', '$ev' || g
			FROM generate_series(1, %d) g`, groups),
		fmt.Sprintf(`INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id)
			SELECT g / 20 + 1, '!room' || (CASE WHEN (g / 20 + 1) %% 4 = 0 THEN 1 ELSE (g / 20 + 1) %% 1000 + 1 END) || ':bench.example',
				'm.room.member', '@u' || (g %% 5000) || ':bench.example', '$ev' || (g %% %d + 1)
			FROM generate_series(0, %d) g`, events, stateRows-1),
		// 20k rejected events spread over the week, and the power-levels events (chains);
		// last_check is when they were rejected (on receipt), as Synapse writes it.
		fmt.Sprintf(`INSERT INTO rejections (event_id, reason, last_check)
			SELECT '$ev' || (g * 250 - g %% 97), 'auth_error', (%d + (g * 250 - g %% 97) * 100)::text FROM generate_series(1, %d) g`, base, events/250),
		fmt.Sprintf(`INSERT INTO rejections (event_id, reason, last_check)
			SELECT '$ev' || g, 'auth_error', (%d + g * 100)::text FROM generate_series(250000, %d, 250000) g ON CONFLICT DO NOTHING`, base, events),
		// The rejected events' JSON (the chain walk reads their auth events): each cites the
		// power levels of its room when the room has a rejected one, which makes chains.
		fmt.Sprintf(`WITH pl AS (SELECT '!room' || (g %% 1000 + 1) || ':bench.example' AS room_id, '$ev' || g AS event_id
				FROM generate_series(250000, %d, 250000) g)
			INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
			SELECT r.event_id, e.room_id, '{}',
				json_build_object('auth_events', coalesce((SELECT json_agg(pl.event_id) FROM pl
					WHERE pl.room_id = e.room_id AND pl.event_id <> e.event_id), '[]'::json))::text, 3
			FROM rejections r JOIN events e USING (event_id)`, events),
		// 20 rooms with 15 forward extremities each, one with 60, plus one per other room.
		fmt.Sprintf(`INSERT INTO event_forward_extremities (event_id, room_id)
			SELECT e.event_id, e.room_id FROM events e WHERE e.stream_ordering > %d`, events-1000),
		fmt.Sprintf(`INSERT INTO event_forward_extremities (event_id, room_id)
			SELECT '$ev' || (%d - g * 1000 - r), '!room' || ((%d - g * 1000 - r) %% 1000 + 1) || ':bench.example'
			FROM generate_series(1, 14) g, generate_series(1, 20) r ON CONFLICT DO NOTHING`, events, events),
		fmt.Sprintf(`INSERT INTO partial_state_rooms (room_id, device_lists_stream_id, join_event_id, joined_via)
			SELECT '!room' || (%[1]d %% 1000 + 1) || ':bench.example', 0, '$ev' || %[1]d, 'remote.example'`, events/2),
		// Account data as a server with 5000 users in 1000 rooms has it: a read marker per user
		// and room (room_account_data, no index on stream_id), tags, global account data.
		`INSERT INTO room_account_data (user_id, room_id, account_data_type, stream_id, content)
			SELECT '@u' || u || ':bench.example', '!room' || r || ':bench.example', 'm.fully_read', (u - 1) * 1000 + r, '{"event_id": "$ev1"}'
			FROM generate_series(1, 5000) u, generate_series(1, 1000) r`,
		`INSERT INTO room_tags_revisions (user_id, room_id, stream_id)
			SELECT '@u' || u || ':bench.example', '!room' || r || ':bench.example', 5000000 + (u - 1) * 100 + r
			FROM generate_series(1, 5000) u, generate_series(1, 100) r`,
		`INSERT INTO account_data (user_id, account_data_type, stream_id, content)
			SELECT '@u' || u || ':bench.example', 'm.type' || k, 5500000 + (u - 1) * 10 + k, '{}'
			FROM generate_series(1, 5000) u, generate_series(1, 10) k`,
		`SELECT setval('account_data_sequence', 5600000)`,
		fmt.Sprintf(`SELECT setval('events_stream_seq', %d)`, events),
		fmt.Sprintf(`SELECT setval('state_group_id_seq', %d)`, groups),
		fmt.Sprintf(`COMMENT ON TABLE events IS '%d %s'`, events, healthBenchVersion),
		fmt.Sprintf(`COMMENT ON TABLE state_groups_state IS '%d'`, stateRows),
		`VACUUM ANALYZE`,
	}
	for _, s := range steps {
		t0 := time.Now()
		if _, err = conn.Exec(ctx, s); err != nil {
			b.Fatalf("%s: %v", strings.Fields(s)[0:3], err)
		}
		if d := time.Since(t0); d > 5*time.Second {
			fmt.Printf("  %-60.60s %s\n", strings.Join(strings.Fields(s), " "), d.Round(time.Second))
		}
	}
	fmt.Printf("health bench: generated in %s\n", time.Since(start).Round(time.Second))
	return dsn
}

var seqScanOnBig = regexp.MustCompile(`Seq Scan on (events|state_groups_state)\b`)

// BenchmarkHealthReport times the full health report (every check, including the federation
// self-test and log scan against hs1) with the database checks on the generated database,
// and EXPLAINs each health query there: a sequential scan of events or state_groups_state
// is reported loudly. Target: < 5 s for the report.
func BenchmarkHealthReport(b *testing.B) {
	tb := testbed.Get(b)
	ctx := context.Background()
	dsn := generateHealthDB(b, tb, envInt("MEDIC_BENCH_EVENTS", 5_000_000), envInt("MEDIC_BENCH_STATE", 20_000_000))
	db, err := synapse.OpenDB(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()

	bad := 0
	for _, q := range synapse.HealthQueries {
		rows, err := db.Pool.Query(ctx, "EXPLAIN "+q.SQL, q.Args...)
		if err != nil {
			b.Fatalf("explain %s: %v", q.Name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			b.Fatalf("explain %s: %v", q.Name, err)
		}
		plan := strings.Join(lines, "\n")
		verdict := "ok (no seq scan of events/state_groups_state)"
		if m := seqScanOnBig.FindAllString(plan, -1); len(m) > 0 {
			bad++
			verdict = fmt.Sprintf("!!! %s !!!", strings.Join(m, ", "))
		}
		fmt.Printf("plan %-20s %s\n", q.Name+":", verdict)
		if os.Getenv("MEDIC_BENCH_PLANS") != "" || len(verdict) > 3 && verdict[:3] == "!!!" {
			fmt.Println(plan)
		}
	}
	if bad > 0 {
		fmt.Printf("!!! %d health queries scan events or state_groups_state sequentially !!!\n", bad)
	}

	cfg, err := config.Load(tb.MedicConfig(b, b.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword))
	if err != nil {
		b.Fatal(err)
	}
	rn := &health.Runner{Config: cfg, Admin: adminapi.New(tb.Admin(b, tb.HS1)), DB: db}
	var rep *health.Report
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if rep, err = rn.Run(ctx); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		total += took
		// The first run of the process reads from a cold PostgreSQL buffer cache (the OS page
		// cache may still be warm): both figures are worth knowing.
		fmt.Printf("health report run %d/%d: %s (target < 5 s)\n", i+1, b.N, took.Round(time.Millisecond))
	}
	b.StopTimer()
	per := total / time.Duration(b.N)
	b.ReportMetric(per.Seconds(), "s/report")
	fmt.Printf("health report: %s per full report over %d run(s) (target < 5 s)\n", per.Round(time.Millisecond), b.N)
	for _, r := range rep.Results {
		fmt.Printf("  %-20s %-8s %6s  %s\n", r.Check, r.Status, r.Took.Round(time.Millisecond), r.Summary)
	}
	// The sequences: the health check reads the indexed columns only; the offline aftercare
	// (Synapse stopped) every column, scans of room_account_data & co. included.
	for _, indexedOnly := range []bool{true, false} {
		start := time.Now()
		if _, err = db.SequenceLags(ctx, indexedOnly, nil); err != nil {
			b.Fatal(err)
		}
		what := "every table (offline aftercare)"
		if indexedOnly {
			what = "indexed columns (health restore check)"
		}
		fmt.Printf("sequence lags over %s: %s\n", what, time.Since(start).Round(time.Millisecond))
	}
}
