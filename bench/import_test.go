package bench

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/importer"
	"github.com/synapse-medic/medic/testbed"
)

const benchRoom = "!bench:old.example"

// scratchDB (re)creates a PostgreSQL database next to hs2's with Synapse's schema (copied
// from hs2) and returns its DSN.
func scratchDB(b *testing.B, schemaFile, name string) string {
	b.Helper()
	tb := testbed.Get(b)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, tb.HS2.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		b.Fatal(err)
	}
	if _, err = admin.Exec(ctx, "CREATE DATABASE "+name+" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), tb.HS2.DSN)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(tb.HS2.DSN)
	if err != nil {
		b.Fatal(err)
	}
	u.Path = "/" + name
	dsn := u.String()
	if out, err := exec.Command("psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", schemaFile, dsn).CombinedOutput(); err != nil {
		b.Fatalf("load schema into %s: %v\n%s", name, err, out)
	}
	return dsn
}

// generateSource fills a source database with one room of n events: a create event, a
// member joining every 2000 events (state groups as deltas, as Synapse stores them), 1 in
// 100 messages an edit, JSON of a realistic size. Generated server-side.
func generateSource(b *testing.B, dsn string, n int) {
	b.Helper()
	stmts := []string{
		`INSERT INTO schema_version (lock, version, upgraded) VALUES ('X', 94, true)`,
		`INSERT INTO rooms (room_id, is_public, creator, room_version, has_auth_chain_index) VALUES ($1::text, true, '@user0:old.example', '10', true)`,
		`INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier, depth, origin_server_ts, received_ts,
			sender, contains_url, instance_name, stream_ordering, state_key)
		 SELECT i + 1, '$bench' || i,
			CASE WHEN i = 0 THEN 'm.room.create' WHEN i % 2000 = 1 THEN 'm.room.member' ELSE 'm.room.message' END,
			$1::text, true, false, i + 1, 1700000000000 + i * 1000, 1700000000000 + i * 1000, '@user' || (i % 50) || ':old.example',
			false, 'master', i + 1,
			CASE WHEN i = 0 THEN '' WHEN i % 2000 = 1 THEN '@user' || (i / 2000) || ':old.example' END
		 FROM generate_series(0, $2::int - 1) AS i`,
		`INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
		 SELECT e.event_id, $1::text, '{}', json_build_object(
			'auth_events', json_build_array('$bench0'), 'prev_events', CASE WHEN e.depth > 1 THEN json_build_array('$bench' || (e.depth - 2)) ELSE '[]'::json END,
			'type', e.type, 'room_id', $1::text, 'sender', e.sender, 'depth', e.depth, 'origin_server_ts', e.origin_server_ts,
			'state_key', e.state_key,
			'content', CASE WHEN e.type = 'm.room.message' THEN json_build_object('msgtype', 'm.text',
				'body', 'message ' || e.depth || ' — the quick brown fox jumps over the lazy dog while the old server keeps its history')
				WHEN e.type = 'm.room.member' THEN json_build_object('membership', 'join', 'displayname', 'User ' || e.depth)
				ELSE json_build_object('room_version', '10', 'creator', '@user0:old.example') END,
			'hashes', json_build_object('sha256', md5(e.event_id) || md5(e.event_id || 'x')),
			'signatures', json_build_object('old.example', json_build_object('ed25519:a_bcde', md5(e.event_id || 's') || md5(e.event_id || 't') || md5(e.event_id || 'u'))),
			'unsigned', '{}'::json)::text, 3
		 FROM events AS e WHERE e.room_id = $1::text`,
		// Synapse's search rows for the messages (as it indexes content.body).
		`INSERT INTO event_search (event_id, room_id, sender, key, vector, origin_server_ts, stream_ordering)
		 SELECT e.event_id, e.room_id, e.sender, 'content.body', to_tsvector('english', (j.json::json)->'content'->>'body'), e.origin_server_ts, e.stream_ordering
		 FROM events AS e JOIN event_json AS j USING (event_id) WHERE e.room_id = $1::text AND e.type = 'm.room.message'`,
		`INSERT INTO event_edges (event_id, prev_event_id, is_state)
		 SELECT '$bench' || i, '$bench' || (i - 1), false FROM generate_series(1, $2::int - 1) AS i`,
		`INSERT INTO state_events (event_id, room_id, type, state_key)
		 SELECT event_id, room_id, type, state_key FROM events WHERE room_id = $1::text AND state_key IS NOT NULL`,
		`INSERT INTO event_auth (event_id, auth_id, room_id)
		 SELECT event_id, '$bench0', room_id FROM events WHERE room_id = $1::text AND type = 'm.room.member'`,
		`INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership, event_stream_ordering)
		 SELECT event_id, state_key, sender, room_id, 'join', stream_ordering FROM events WHERE room_id = $1::text AND type = 'm.room.member'`,
		`INSERT INTO event_relations (event_id, relates_to_id, relation_type)
		 SELECT '$bench' || i, '$bench' || (i - 1), 'm.replace' FROM generate_series(50, $2::int - 1, 100) AS i`,
		// Group 1: the create event; group k+2: member k joined, a delta on group k+1.
		`INSERT INTO state_groups (id, room_id, event_id) VALUES (1, $1::text, '$bench0')`,
		`INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id) VALUES (1, $1::text, 'm.room.create', '', '$bench0')`,
		`INSERT INTO state_groups (id, room_id, event_id) SELECT k + 2, $1::text, '$bench' || (k * 2000 + 1) FROM generate_series(0, ($2::int - 2) / 2000) AS k`,
		`INSERT INTO state_group_edges (state_group, prev_state_group) SELECT k + 2, k + 1 FROM generate_series(0, ($2::int - 2) / 2000) AS k`,
		`INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id)
		 SELECT k + 2, $1::text, 'm.room.member', '@user' || k || ':old.example', '$bench' || (k * 2000 + 1) FROM generate_series(0, ($2::int - 2) / 2000) AS k`,
		`INSERT INTO event_to_state_groups (event_id, state_group)
		 SELECT '$bench' || i, CASE WHEN i = 0 THEN 1 ELSE (i - 1) / 2000 + 2 END FROM generate_series(0, $2::int - 1) AS i`,
		`ANALYZE`,
	}
	runStatements(b, dsn, "generate", n, stmts)
}

// prepareTarget makes the target: this server joined the room at the end (one join event,
// its state group holding the room's full state), the old history missing.
func prepareTarget(b *testing.B, dsn string, n int) {
	b.Helper()
	stmts := []string{
		`INSERT INTO schema_version (lock, version, upgraded) VALUES ('X', 94, true)`,
		`INSERT INTO rooms (room_id, is_public, creator, room_version, has_auth_chain_index) VALUES ($1::text, true, '@user0:old.example', '10', true)`,
		`INSERT INTO room_depth (room_id, min_depth) VALUES ($1::text, $2::int + 1)`,
		`INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier, depth, origin_server_ts, received_ts,
			sender, contains_url, instance_name, stream_ordering, state_key)
		 VALUES ($2::int + 1, '$join', 'm.room.member', $1::text, true, false, $2::int + 1, 1800000000000, 1800000000000, '@alice:new.example', false, 'master', 1, '@alice:new.example')`,
		`INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version) VALUES ('$join', $1::text, '{}', '{"type":"m.room.member"}', 3)`,
		`SELECT setval('state_group_id_seq', 1000000)`,
		`INSERT INTO state_groups (id, room_id, event_id) VALUES (1000000, $1::text, '$join')`,
		`INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id)
		 SELECT 1000000, $1::text, 'm.room.create', '', '$bench0' UNION ALL
		 SELECT 1000000, $1::text, 'm.room.member', '@user' || k || ':old.example', '$bench' || (k * 2000 + 1) FROM generate_series(0, ($2::int - 2) / 2000) AS k`,
		`INSERT INTO event_to_state_groups (event_id, state_group) VALUES ('$join', 1000000)`,
		`INSERT INTO event_backward_extremities (event_id, room_id) VALUES ('$bench' || ($2::int - 1), $1::text)`,
	}
	runStatements(b, dsn, "prepare target", n, stmts)
}

// runStatements runs generation SQL on dsn: $1::text is the bench room, $2::int the event count.
func runStatements(b *testing.B, dsn, what string, n int, stmts []string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		s = strings.ReplaceAll(s, "$2::int", strconv.Itoa(n))
		var args []any
		if strings.Contains(s, "$1::text") {
			args = []any{benchRoom}
		}
		if _, err = conn.Exec(ctx, s, args...); err != nil {
			b.Fatalf("%s: %v\n%s", what, err, s)
		}
	}
}

// peakRSSReset resets the kernel's peak-RSS mark of this process (Linux ≥ 4.0).
func peakRSSReset() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func peakRSSMB() float64 {
	raw, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return -1
}

func countEvents(b *testing.B, dsn string) int {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err = conn.QueryRow(ctx, `SELECT count(*) FROM events WHERE room_id = $1`, benchRoom).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkImportHistory imports a 142k-event room (incident 3's size; MEDIC_BENCH_IMPORT_EVENTS
// to change) from a generated source database into a target that lacks it, and the same data
// with row-by-row INSERTs (the hand script's way) into another copy of the target
// (MEDIC_BENCH_IMPORT_BASELINE=0 skips that).
// Targets: < 60 s, ≥ 10× the row-by-row baseline.
func BenchmarkImportHistory(b *testing.B) {
	n, _ := strconv.Atoi(os.Getenv("MEDIC_BENCH_IMPORT_EVENTS"))
	if n <= 0 {
		n = 142_000
	}
	chunk, _ := strconv.Atoi(os.Getenv("MEDIC_BENCH_IMPORT_CHUNK"))
	if chunk <= 0 {
		chunk = 5000
	}
	tb := testbed.Get(b)
	schema := filepath.Join(b.TempDir(), "schema.sql")
	if out, err := exec.Command("pg_dump", "--schema-only", "--no-owner", "-f", schema, tb.HS2.DSN).CombinedOutput(); err != nil {
		b.Fatalf("pg_dump: %v\n%s", err, out)
	}
	srcDSN := scratchDB(b, schema, "medic_bench_import_src")
	dstDSN := scratchDB(b, schema, "medic_bench_import_dst")
	baseDSN := scratchDB(b, schema, "medic_bench_import_base")
	genStart := time.Now()
	generateSource(b, srcDSN, n)
	prepareTarget(b, dstDSN, n)
	prepareTarget(b, baseDSN, n)
	b.Logf("generated %d events in %s", n, time.Since(genStart).Round(time.Millisecond))
	ctx := context.Background()

	for range b.N {
		// medic's import.
		settle(b, dstDSN)
		runtime.GC()
		peakRSSReset()
		start := time.Now()
		dst, err := synapse.OpenDB(ctx, dstDSN)
		if err != nil {
			b.Fatal(err)
		}
		src, err := importer.OpenSource(ctx, importer.SourcePostgres, srcDSN)
		if err != nil {
			b.Fatal(err)
		}
		im, err := importer.New(ctx, dst, src, benchRoom)
		if err != nil {
			b.Fatal(err)
		}
		plan, err := im.Plan(ctx, chunk)
		if err != nil {
			b.Fatal(err)
		}
		planned := time.Since(start)
		groups, deduped := 0, 0
		im.Run("bench", "bench", plan.Chunks, nil)
		for i := range plan.Chunks {
			res, err := im.Import(ctx, i)
			if err != nil {
				b.Fatal(err)
			}
			groups += res.StateGroups
			deduped += res.DedupedGroups
		}
		secs := time.Since(start).Seconds()
		rss := peakRSSMB()
		im.Close()
		dst.Close()
		if got := countEvents(b, dstDSN); got != n+1 {
			b.Fatalf("target has %d events of the room after the import, want %d", got, n+1)
		}

		if os.Getenv("MEDIC_BENCH_IMPORT_BASELINE") == "0" {
			// For iterating on medic's side: the baseline takes ten times as long.
			fmt.Printf("import %d events: medic %.1f s (plan %.1f s), %.0f events/s, peak RSS %.0f MB; baseline skipped\n",
				n, secs, planned.Seconds(), float64(n)/secs, rss)
			continue
		}
		// The baseline: the same rows, one INSERT statement each, one transaction per chunk.
		settle(b, baseDSN)
		baseStart := time.Now()
		src, err = importer.OpenSource(ctx, importer.SourcePostgres, srcDSN)
		if err != nil {
			b.Fatal(err)
		}
		baseRows := rowByRow(b, src, srcDSN, baseDSN, plan.Chunks)
		src.Close()
		baseSecs := time.Since(baseStart).Seconds()

		fmt.Printf("import %d events: medic %.1f s (plan %.1f s), %.0f events/s, peak RSS %.0f MB, %d state groups created, %d reused; "+
			"row-by-row INSERT baseline %.1f s (%d rows), %.0f events/s; medic is %.1f× faster\n",
			n, secs, planned.Seconds(), float64(n)/secs, rss, groups, deduped, baseSecs, baseRows, float64(n)/baseSecs, baseSecs/secs)
		b.ReportMetric(secs, "medic-s")
		b.ReportMetric(float64(n)/secs, "events/s")
		b.ReportMetric(rss, "peak-rss-MB")
		b.ReportMetric(baseSecs, "row-by-row-s")
		b.ReportMetric(baseSecs/secs, "speedup-vs-row-by-row")
	}
}

// settle starts a timed part from the same state as the other: a checkpoint, so neither
// pays for a checkpoint the WAL written before it forced (the generated source and targets
// are ~1 GB of WAL, PostgreSQL's max_wal_size: without it, medic's import ran beside that
// checkpoint and the baseline did not, 9.4-14.7 s for the same import).
func settle(b *testing.B, dsn string) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err = conn.Exec(ctx, `CHECKPOINT`); err != nil {
		b.Logf("no checkpoint before the timed part (%v): figures may include one", err)
	}
}

// rowByRow writes what the import writes for each event with one INSERT per row (events,
// event_json, edges, auth, state_events, event_to_state_groups, search, relations), one
// transaction per chunk: the hand script's method, done right otherwise.
func rowByRow(b *testing.B, src *importer.Source, srcDSN, dsn string, chunks []importer.EventKey) int {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	srcConn, err := pgx.Connect(ctx, srcDSN)
	if err != nil {
		b.Fatal(err)
	}
	defer srcConn.Close(ctx)
	rows := 0
	for i := range chunks {
		lo, hi := importer.ChunkRange(chunks, i)
		events, err := src.EventsInRange(ctx, benchRoom, lo, hi)
		if err != nil {
			b.Fatal(err)
		}
		ids := make([]string, len(events))
		for j, e := range events {
			ids[j] = e.EventID
		}
		extra, err := src.RowsFor(ctx, ids)
		if err != nil {
			b.Fatal(err)
		}
		stream, ts := map[string]int64{}, map[string]int64{}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			exec := func(sql string, args ...any) error {
				rows++
				_, err := tx.Exec(ctx, sql, args...)
				return err
			}
			for _, e := range events {
				var so int64
				if err := tx.QueryRow(ctx, `SELECT -nextval('events_backfill_stream_seq')`).Scan(&so); err != nil {
					return err
				}
				if err := exec(`INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version) VALUES ($1, $2, $3, $4, $5)`,
					e.EventID, benchRoom, e.InternalMeta, e.JSON, e.FormatVersion); err != nil {
					return err
				}
				if err := exec(`INSERT INTO events (instance_name, stream_ordering, topological_ordering, depth, event_id, room_id, type,
					processed, outlier, origin_server_ts, received_ts, sender, contains_url, state_key, rejection_reason)
					VALUES ('master', $1, $2, $2, $3, $4, $5, true, $6, $7, $7, $8, $9, $10, $11)`,
					so, e.Key.Depth, e.EventID, benchRoom, e.Type, e.Outlier, e.TS, e.Sender, e.ContainsURL, e.StateKey, e.Rejection); err != nil {
					return err
				}
				if e.StateKey != nil {
					if err := exec(`INSERT INTO state_events (event_id, room_id, type, state_key) VALUES ($1, $2, $3, $4)`,
						e.EventID, benchRoom, e.Type, *e.StateKey); err != nil {
						return err
					}
				}
				if e.StateGroup != nil {
					if err := exec(`INSERT INTO event_to_state_groups (event_id, state_group) VALUES ($1, $2)`, e.EventID, *e.StateGroup); err != nil {
						return err
					}
				}
				stream[e.EventID], ts[e.EventID] = so, e.TS
			}
			// The source's search rows, copied as the hand script copied them.
			search, err := srcConn.Query(ctx, `SELECT event_id, key, vector::text FROM event_search WHERE event_id = ANY($1)`, ids)
			if err != nil {
				return err
			}
			type searchRow struct{ EventID, Key, Vector string }
			srows, err := pgx.CollectRows(search, pgx.RowToStructByPos[searchRow])
			if err != nil {
				return err
			}
			for _, r := range srows {
				if err := exec(`INSERT INTO event_search (event_id, room_id, key, vector, stream_ordering, origin_server_ts)
					VALUES ($1, $2, $3, $4::tsvector, $5, $6)`, r.EventID, benchRoom, r.Key, r.Vector, stream[r.EventID], ts[r.EventID]); err != nil {
					return err
				}
			}
			for _, ed := range extra.Edges {
				if err := exec(`INSERT INTO event_edges (event_id, prev_event_id, room_id, is_state) VALUES ($1, $2, $3, $4)`,
					ed.EventID, ed.PrevID, ed.RoomID, ed.IsState); err != nil {
					return err
				}
			}
			for _, a := range extra.Auth {
				if err := exec(`INSERT INTO event_auth (event_id, room_id, auth_id) VALUES ($1, $2, $3)`, a[0], benchRoom, a[1]); err != nil {
					return err
				}
			}
			for _, r := range extra.Relations {
				if err := exec(`INSERT INTO event_relations (event_id, relates_to_id, relation_type, aggregation_key) VALUES ($1, $2, $3, $4)`,
					r.EventID, r.RelatesTo, r.Type, r.AggregationKey); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("row-by-row chunk %d: %v", i, err)
		}
	}
	return rows
}
