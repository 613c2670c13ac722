package synapse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The journal keeps the before-image of every row medic changes in Synapse's database, written
// in the same transaction as the change, so `!undo` can restore rows exactly and a crash at
// any point leaves either the change with its journal or neither. It lives in its own schema
// so it never mixes with Synapse's tables.
const (
	createJournalQuery = `
		CREATE SCHEMA IF NOT EXISTS medic;
		CREATE TABLE IF NOT EXISTS medic.journal (
			job_id     TEXT        NOT NULL,
			seq        INTEGER     NOT NULL,
			tbl        TEXT        NOT NULL,
			op         TEXT        NOT NULL,
			key        JSONB       NOT NULL,
			before     JSONB       NOT NULL,
			after      JSONB,
			actor      TEXT        NOT NULL,
			changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			undone_at  TIMESTAMPTZ,
			PRIMARY KEY (job_id, seq)
		)`
	insertJournalQuery = `INSERT INTO medic.journal (job_id, seq, tbl, op, key, before, after, actor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	nextSeqQuery       = `SELECT COALESCE(max(seq), 0) FROM medic.journal WHERE job_id = $1`
	journalForUndo     = `SELECT seq, tbl, op, key, before, after FROM medic.journal WHERE job_id = $1 AND undone_at IS NULL ORDER BY seq DESC`
	markUndoneQuery    = `UPDATE medic.journal SET undone_at = now() WHERE job_id = $1 AND undone_at IS NULL`
	journalCountQuery  = `SELECT count(*) FILTER (WHERE undone_at IS NULL), count(*) FROM medic.journal WHERE job_id = $1`
)

// Journal operations.
const (
	OpUpdate = "update"
	OpDelete = "delete"
)

// RowChange changes the rows of one table that match a condition.
type RowChange struct {
	Table string
	// Key are the columns that identify a row (a unique key of the table).
	Key []string
	// Where selects the rows, over the table aliased as t (e.g. "t.event_id = ANY($1)").
	Where string
	Args  []any
	// Set is the assignment list of an update (e.g. "rejection_reason = NULL"); empty for a delete.
	Set string
}

// CrashPoint lets tests interrupt a journaled change between its steps (by returning an
// error, or by killing the transaction's connection); production passes nil.
type CrashPoint func(ctx context.Context, tx pgx.Tx, point string) error

func (cp CrashPoint) at(ctx context.Context, tx pgx.Tx, point string) error {
	if cp == nil {
		return nil
	}
	return cp(ctx, tx, point)
}

// decodeRow decodes a to_jsonb row keeping numbers exact (bigints beyond 2^53 included).
func decodeRow(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var row map[string]any
	return row, dec.Decode(&row)
}

func ident(name string) string { return pgx.Identifier(strings.Split(name, ".")).Sanitize() }

// EnsureJournal creates the journal schema and table if missing.
func (db *DB) EnsureJournal(ctx context.Context) error {
	if _, err := db.Pool.Exec(ctx, createJournalQuery); err != nil {
		return fmt.Errorf("create medic.journal: %w", err)
	}
	return nil
}

// ApplyJournaled applies changes in one transaction, journaling each changed row's
// before- and after-image under jobID. It returns how many rows changed.
func (db *DB) ApplyJournaled(ctx context.Context, jobID, actor string, changes []RowChange, crash CrashPoint) (int, error) {
	return db.ApplyJournaledWith(ctx, jobID, actor, nil, changes, crash)
}

// ApplyJournaledWith is ApplyJournaled with a prepare step that runs first in the same
// transaction, e.g. to load a large key set into a temporary table the changes' Where clauses
// join (an ANY($n) over 100k keys is slow to plan and to match).
func (db *DB) ApplyJournaledWith(ctx context.Context, jobID, actor string, prepare func(context.Context, pgx.Tx) error, changes []RowChange, crash CrashPoint) (int, error) {
	if err := db.EnsureJournal(ctx); err != nil {
		return 0, err
	}
	total := 0
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		// Pairing before- and after-images of 100k rows sorts or hashes them: in memory,
		// not in temporary files (the default 4 MB would spill).
		if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '64MB'`); err != nil {
			return err
		}
		if prepare != nil {
			if err := prepare(ctx, tx); err != nil {
				return err
			}
		}
		var seq int
		if err := tx.QueryRow(ctx, nextSeqQuery, jobID).Scan(&seq); err != nil {
			return fmt.Errorf("read journal position: %w", err)
		}
		for _, ch := range changes {
			n, err := applyOne(ctx, tx, jobID, actor, ch, &seq, crash)
			if err != nil {
				return fmt.Errorf("change %s: %w", ch.Table, err)
			}
			total += n
		}
		return crash.at(ctx, tx, "before commit")
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

func keyJSON(row map[string]any, key []string) ([]byte, error) {
	k := make(map[string]any, len(key))
	for _, col := range key {
		v, ok := row[col]
		if !ok {
			return nil, fmt.Errorf("key column %s missing from row", col)
		}
		k[col] = v
	}
	return json.Marshal(k)
}

// applyOne changes one table's rows and journals them in a single statement: the
// before-images are read (and locked) in a CTE, the change runs in another, and the journal
// rows are inserted from both, so nothing passes through medic's memory and a change of
// 100k rows is one round trip. All parts of the statement see the same snapshot, so the
// before-images are the rows as they were.
func applyOne(ctx context.Context, tx pgx.Tx, jobID, actor string, ch RowChange, seq *int, crash CrashPoint) (int, error) {
	tbl := ident(ch.Table)
	keyParts := make([]string, len(ch.Key))
	for i, col := range ch.Key {
		keyParts[i] = fmt.Sprintf("'%s', t.%s", strings.ReplaceAll(col, "'", "''"), pgx.Identifier{col}.Sanitize())
	}
	keyObj := "jsonb_build_object(" + strings.Join(keyParts, ", ") + ")"
	op, change, after := OpDelete, fmt.Sprintf(`DELETE FROM %s AS t WHERE %s`, tbl, ch.Where), "NULL::jsonb"
	if ch.Set != "" {
		op, change, after = OpUpdate, fmt.Sprintf(`UPDATE %s AS t SET %s WHERE %s`, tbl, ch.Set, ch.Where), "a.j"
	}
	n := len(ch.Args)
	query := fmt.Sprintf(`
		WITH b AS (SELECT %[1]s AS k, to_jsonb(t) AS j FROM %[2]s AS t WHERE %[3]s FOR UPDATE),
		a AS (%[4]s RETURNING %[1]s AS k, to_jsonb(t) AS j),
		ins AS (
			INSERT INTO medic.journal (job_id, seq, tbl, op, key, before, after, actor)
			SELECT $%[6]d, $%[7]d + row_number() OVER (), $%[8]d, $%[9]d, b.k, b.j, %[5]s, $%[10]d
			FROM b LEFT JOIN a ON a.k = b.k
			RETURNING 1)
		SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM a), (SELECT count(*) FROM ins)`,
		keyObj, tbl, ch.Where, change, after, n+1, n+2, n+3, n+4, n+5)
	if err := crash.at(ctx, tx, "before changing "+ch.Table); err != nil {
		return 0, err
	}
	args := append(slices.Clone(ch.Args), jobID, *seq, ch.Table, op, actor)
	var read, changed, journaled int
	if err := tx.QueryRow(ctx, query, args...).Scan(&read, &changed, &journaled); err != nil {
		return 0, err
	}
	if read != changed || read != journaled {
		return 0, fmt.Errorf("read %d rows, changed %d, journaled %d; nothing was changed", read, changed, journaled)
	}
	*seq += read
	return read, crash.at(ctx, tx, "after changing "+ch.Table)
}

// ErrDrifted means rows changed since the job changed them, so undo would overwrite someone
// else's change; nothing was restored.
var ErrDrifted = errors.New("rows changed since the job")

// Undo restores every row a job changed, exactly as it was, in one transaction. It refuses
// (ErrDrifted, nothing restored) if any of those rows changed since.
func (db *DB) Undo(ctx context.Context, jobID string, crash CrashPoint) (int, error) {
	if err := db.EnsureJournal(ctx); err != nil {
		return 0, err
	}
	restored := 0
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, journalForUndo, jobID)
		if err != nil {
			return err
		}
		type entry struct {
			seq                int
			tbl, op            string
			key, before, after []byte
		}
		entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (entry, error) {
			var e entry
			return e, r.Scan(&e.seq, &e.tbl, &e.op, &e.key, &e.before, &e.after)
		})
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return fmt.Errorf("job %s has nothing to undo (never changed rows, or already undone)", jobID)
		}
		var drifted []string
		for _, e := range entries {
			var key map[string]any
			if err = json.Unmarshal(e.key, &key); err != nil {
				return err
			}
			cols := make([]string, 0, len(key))
			for c := range key {
				cols = append(cols, c)
			}
			slices.Sort(cols)
			var match []string
			for _, c := range cols {
				match = append(match, fmt.Sprintf("t.%s = k.%s", ident(c), ident(c)))
			}
			tbl := ident(e.tbl)
			keyCond := strings.Join(match, " AND ")
			var current []byte
			err = tx.QueryRow(ctx, fmt.Sprintf(`SELECT to_jsonb(t) FROM %s AS t, jsonb_populate_record(NULL::%s, $1) AS k WHERE %s FOR UPDATE OF t`,
				tbl, tbl, keyCond), e.key).Scan(&current)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			switch e.op {
			case OpUpdate:
				same := false
				if current != nil {
					if err = tx.QueryRow(ctx, `SELECT $1::jsonb = $2::jsonb`, current, e.after).Scan(&same); err != nil {
						return err
					}
				}
				if !same {
					drifted = append(drifted, fmt.Sprintf("%s %s", e.tbl, e.key))
					continue
				}
				var before map[string]json.RawMessage
				if err = json.Unmarshal(e.before, &before); err != nil {
					return err
				}
				var sets []string
				for c := range before {
					sets = append(sets, fmt.Sprintf("%s = k.%s", ident(c), ident(c)))
				}
				slices.Sort(sets)
				_, err = tx.Exec(ctx, fmt.Sprintf(`UPDATE %s AS t SET %s FROM jsonb_populate_record(NULL::%s, $1) AS k WHERE %s`,
					tbl, strings.Join(sets, ", "), tbl, keyCond), e.before)
			case OpDelete:
				if current != nil {
					drifted = append(drifted, fmt.Sprintf("%s %s (exists again)", e.tbl, e.key))
					continue
				}
				_, err = tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1)`, tbl, tbl), e.before)
			}
			if err != nil {
				return fmt.Errorf("restore %s %s: %w", e.tbl, e.key, err)
			}
			restored++
			if err = crash.at(ctx, tx, fmt.Sprintf("after restoring entry %d", e.seq)); err != nil {
				return err
			}
		}
		if len(drifted) > 0 {
			shown := drifted[:min(len(drifted), 5)]
			return fmt.Errorf("%w: %d row(s), e.g. %s", ErrDrifted, len(drifted), strings.Join(shown, "; "))
		}
		if _, err = tx.Exec(ctx, markUndoneQuery, jobID); err != nil {
			return err
		}
		return crash.at(ctx, tx, "before commit")
	})
	if err != nil {
		return 0, err
	}
	return restored, nil
}

// JournalCount returns how many journaled rows of a job are not undone, and how many in all.
func (db *DB) JournalCount(ctx context.Context, jobID string) (open, all int, err error) {
	if err = db.EnsureJournal(ctx); err != nil {
		return
	}
	err = db.Pool.QueryRow(ctx, journalCountQuery, jobID).Scan(&open, &all)
	return
}

const journalSummaryQuery = `SELECT tbl, op, count(*) FROM medic.journal WHERE job_id = $1 AND undone_at IS NULL GROUP BY tbl, op ORDER BY tbl, op`

// JournalSummary describes what undoing a job would restore, one line per table and operation.
func (db *DB) JournalSummary(ctx context.Context, jobID string) ([]string, error) {
	if err := db.EnsureJournal(ctx); err != nil {
		return nil, err
	}
	rows, err := db.Pool.Query(ctx, journalSummaryQuery, jobID)
	if err != nil {
		return nil, fmt.Errorf("summarise journal of %s: %w", jobID, err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var tbl, op string
		var n int
		if err := r.Scan(&tbl, &op, &n); err != nil {
			return "", err
		}
		verb := map[string]string{OpUpdate: "put back the previous values of", OpDelete: "re-insert"}[op]
		return fmt.Sprintf("%s %d row(s) of `%s`", verb, n, tbl), nil
	})
}

// HoldPointEnv names a point at which medic stops and waits to be killed. It exists for the
// kill tests (cmd/medic/unreject_test.go), which must stop medic at exact places inside and
// around a repair's transaction; it is unset in production.
const HoldPointEnv = "MEDIC_TEST_HOLD_AT"

// HoldPoint returns the CrashPoint for HoldPointEnv, or nil when it is unset.
func HoldPoint() CrashPoint {
	want := os.Getenv(HoldPointEnv)
	if want == "" {
		return nil
	}
	return func(ctx context.Context, tx pgx.Tx, point string) error {
		if point == want {
			fmt.Fprintf(os.Stderr, "medic: holding at %q\n", point)
			time.Sleep(time.Hour)
		}
		return nil
	}
}

// At runs the crash point (nil-safe), for points outside a transaction.
func (cp CrashPoint) At(ctx context.Context, point string) error { return cp.at(ctx, nil, point) }
