package journal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/testbed"
)

func TestMain(m *testing.M) { testbed.Main(m) }

// scratchDB creates a database holding a copy of Synapse's real events and rejections
// schema (from hs1, by pg_dump), with rows in two rooms, and returns it.
func scratchDB(t *testing.T) *synapse.DB {
	tb := testbed.Get(t)
	ctx := context.Background()
	dsn := testbed.ScratchDB(t, tb.HS1, "events", "rejections")
	db, err := synapse.OpenDB(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	// Values that a lossy round trip would break: bigints beyond 2^53, NULLs, unicode,
	// quotes, booleans.
	for i := 0; i < 60; i++ {
		room := "!a:hs2.test"
		if i%2 == 1 {
			room = "!b:hs2.test"
		}
		var reason any
		if i%3 != 0 {
			reason = "auth_error"
		}
		_, err = db.Pool.Exec(ctx, `INSERT INTO events (stream_ordering, topological_ordering, event_id, type, room_id,
			processed, outlier, depth, origin_server_ts, received_ts, sender, contains_url, instance_name, state_key, rejection_reason)
			VALUES ($1, $2, $3, 'm.room.power_levels', $4, true, false, $2, $5, $5, '@mod:hs2.test', NULL, 'master', '', $6)`,
			int64(9007199254740993)+int64(i), i+1, fmt.Sprintf("$ev%d-é'\"", i), room, int64(1795000000000+i), reason)
		if err != nil {
			t.Fatal(err)
		}
		if reason != nil {
			if _, err = db.Pool.Exec(ctx, `INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'auth_error', $2)`,
				fmt.Sprintf("$ev%d-é'\"", i), fmt.Sprint(1795000000000+i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return db
}

// snapshot is the text form of every row of both tables, in a fixed order.
func snapshot(t *testing.T, db *synapse.DB) string {
	var out string
	err := db.Pool.QueryRow(context.Background(), `SELECT
		coalesce((SELECT string_agg(e::text, E'\n' ORDER BY e.event_id) FROM events e), '') || E'\n--\n' ||
		coalesce((SELECT string_agg(r::text, E'\n' ORDER BY r.event_id) FROM rejections r), '')`).Scan(&out)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unrejectRoomA is the shape of !unreject's change: scoped to one room by joining events.
var unrejectRoomA = []RowChange{
	{Table: "rejections", Key: []string{"event_id"}, Where: "t.event_id IN (SELECT event_id FROM events WHERE room_id = $1)", Args: []any{"!a:hs2.test"}},
	{Table: "events", Key: []string{"event_id"}, Where: "t.room_id = $1 AND t.rejection_reason IS NOT NULL", Set: "rejection_reason = NULL", Args: []any{"!a:hs2.test"}},
}

var errCrash = errors.New("simulated crash")

// crashPoints lists the points a change passes, by running it once with a recorder inside a
// transaction that is then rolled back by failing at the last point.
func crashPoints(t *testing.T, db *synapse.DB, run func(CrashPoint) error) []string {
	var points []string
	_ = run(func(ctx context.Context, tx pgx.Tx, p string) error {
		points = append(points, p)
		if p == "before commit" {
			return errCrash
		}
		return nil
	})
	if len(points) < 3 {
		t.Fatalf("too few crash points: %v", points)
	}
	return points
}

// crashers: fail the step, or kill the transaction's connection (as a crashed process would
// leave it) and carry on as if nothing happened.
func crashers(db *synapse.DB, point string) map[string]CrashPoint {
	return map[string]CrashPoint{
		"error": func(ctx context.Context, tx pgx.Tx, p string) error {
			if p == point {
				return errCrash
			}
			return nil
		},
		"killed connection": func(ctx context.Context, tx pgx.Tx, p string) error {
			if p != point {
				return nil
			}
			var pid int
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			_, err := db.Pool.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid)
			return err
		},
	}
}

func TestJournalCrashPointsAndExactUndo(t *testing.T) {
	db := scratchDB(t)
	ctx := context.Background()
	original := snapshot(t, db)

	apply := func(job string) func(CrashPoint) error {
		return func(cp CrashPoint) error {
			_, err := Apply(ctx, db, job, "@admin:hs1.test", unrejectRoomA, cp)
			return err
		}
	}
	for _, point := range crashPoints(t, db, apply("probe")) {
		for how, cp := range crashers(db, point) {
			if err := apply("crash")(cp); err == nil {
				t.Fatalf("apply with %s at %q succeeded", how, point)
			}
			if got := snapshot(t, db); got != original {
				t.Fatalf("%s at %q left the tables changed", how, point)
			}
			if open, _, err := Count(ctx, db, "crash"); err != nil || open != 0 {
				t.Fatalf("%s at %q left %d journal rows (%v)", how, point, open, err)
			}
		}
	}

	n, err := Apply(ctx, db, "job1", "@admin:hs1.test", unrejectRoomA, nil)
	if err != nil {
		t.Fatal(err)
	}
	changed := snapshot(t, db)
	if changed == original || n != 40 { // room a: 30 events, 20 rejected -> 20 events + 20 rejections
		t.Fatalf("apply changed %d rows", n)
	}
	var otherRoom int
	_ = db.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE room_id = '!b:hs2.test' AND rejection_reason IS NOT NULL`).Scan(&otherRoom)
	if otherRoom != 20 {
		t.Fatalf("the other room was touched: %d rejected events left, want 20", otherRoom)
	}

	// Undo, crashed at each of its points: the change stays whole and undo can run again.
	undo := func(cp CrashPoint) error { _, err := Undo(ctx, db, "job1", cp); return err }
	for _, point := range crashPoints(t, db, undo) {
		for how, cp := range crashers(db, point) {
			if err := undo(cp); err == nil {
				t.Fatalf("undo with %s at %q succeeded", how, point)
			}
			if snapshot(t, db) != changed {
				t.Fatalf("undo %s at %q left a half-restored state", how, point)
			}
		}
	}
	if _, err = Undo(ctx, db, "job1", nil); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, db); got != original {
		t.Fatalf("undo did not restore byte-identical rows:\nwant %s\ngot  %s", original, got)
	}
	if _, err = Undo(ctx, db, "job1", nil); err == nil {
		t.Fatal("a second undo succeeded")
	}

	// A row changed after the job: undo refuses and restores nothing.
	if _, err = Apply(ctx, db, "job2", "@admin:hs1.test", unrejectRoomA, nil); err != nil {
		t.Fatal(err)
	}
	if _, err = db.Pool.Exec(ctx, `UPDATE events SET rejection_reason = 'auth_error' WHERE event_id = $1`, "$ev4-é'\""); err != nil {
		t.Fatal(err)
	}
	drifted := snapshot(t, db)
	if _, err = Undo(ctx, db, "job2", nil); !errors.Is(err, ErrDrifted) {
		t.Fatalf("undo over a changed row: %v", err)
	}
	if snapshot(t, db) != drifted {
		t.Fatal("a refused undo changed rows")
	}
}

// TestJournalInsertedUndo checks the compact journal of inserted rows: undo deletes exactly
// the journaled rows (single-table and grouped entries), leaves other rows alone, and refuses
// when the rows a non-volatile entry names changed in number since.
func TestJournalInsertedUndo(t *testing.T) {
	db := scratchDB(t)
	ctx := context.Background()
	count := func() (n int) {
		if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events) * 1000 + (SELECT count(*) FROM rejections)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	ids := []string{"$new1", "$new2", "$new3"}
	insert := func(jobID string, grouped bool) {
		err := InTx(ctx, db, jobID, "test", func(j *Tx) error {
			for i, id := range ids {
				if _, err := j.Tx.Exec(ctx, `INSERT INTO events (stream_ordering, topological_ordering, event_id, type, room_id,
					processed, outlier, depth, instance_name) VALUES ($1, 1, $2, 'm.room.message', '!c:hs2.test', true, false, 1, 'master')`,
					int64(-1000-i)-int64(len(jobID)*10), id+jobID); err != nil {
					return err
				}
				if _, err := j.Tx.Exec(ctx, `INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'x', '1')`, id+jobID); err != nil {
					return err
				}
			}
			match := map[string]any{"event_id": []string{ids[0] + jobID, ids[1] + jobID, ids[2] + jobID}}
			if grouped {
				return j.Inserted(ctx, Inserted{Tables: []string{"events", "rejections"}, RowsBy: map[string]int{"events": 3, "rejections": 3}, Match: match})
			}
			if err := j.Inserted(ctx, Inserted{Table: "events", Match: match, Rows: 3}); err != nil {
				return err
			}
			return j.Inserted(ctx, Inserted{Table: "rejections", Match: match, Rows: 3})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, grouped := range []bool{false, true} {
		job := fmt.Sprintf("ins%v", grouped)
		insert(job, grouped)
		if got := count(); got != before+3003 {
			t.Fatalf("after insert: %d, want %d", got, before+3003)
		}
		summary, err := Summary(ctx, db, job)
		if err != nil || len(summary) != 2 || !strings.Contains(summary[0], "3 row(s) of `events`") {
			t.Errorf("summary %q, %v", summary, err)
		}
		if _, err = Undo(ctx, db, job, nil); err != nil {
			t.Fatal(err)
		}
		if got := count(); got != before {
			t.Fatalf("after undo (grouped %v): %d, want %d", grouped, got, before)
		}
	}
	// Drift: a row removed since the import makes undo refuse and change nothing.
	insert("drift", true)
	if _, err := db.Pool.Exec(ctx, `DELETE FROM rejections WHERE event_id = '$new2drift'`); err != nil {
		t.Fatal(err)
	}
	if _, err := Undo(ctx, db, "drift", nil); !errors.Is(err, ErrDrifted) {
		t.Fatalf("undo after drift: %v, want ErrDrifted", err)
	}
	if got := count(); got != before+3002 {
		t.Errorf("a refused undo changed rows: %d, want %d", got, before+3002)
	}
}
