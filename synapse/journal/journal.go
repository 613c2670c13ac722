// Package journal makes medic's changes to Synapse's database undoable: every change is one
// transaction that also writes the before-image of each row it touches (or, for inserted
// rows, what selects them) to medic.journal, and Undo restores exactly those rows, refusing
// when they changed since. The repairs' writes are intent-level functions here (Unreject).
package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse"
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
		);
		-- One sequence for every entry: two transactions of one job (an import's chunks run
		-- two at a time) must not pick the same position. Journals written before it existed
		-- numbered entries per job from 1; the sequence starts above them all.
		CREATE SEQUENCE IF NOT EXISTS medic.journal_seq AS INTEGER;
		SELECT setval('medic.journal_seq', (SELECT max(seq) FROM medic.journal))
		WHERE (SELECT max(seq) FROM medic.journal) > (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM medic.journal_seq)`
	insertJournalQuery = `INSERT INTO medic.journal (job_id, seq, tbl, op, key, before, after, actor)
		VALUES ($1, nextval('medic.journal_seq'), $2, $3, $4, $5, $6, $7)`
	journalForUndo    = `SELECT seq, tbl, op, key, before, after FROM medic.journal WHERE job_id = $1 AND undone_at IS NULL ORDER BY seq DESC`
	markUndoneQuery   = `UPDATE medic.journal SET undone_at = now() WHERE job_id = $1 AND undone_at IS NULL`
	journalCountQuery = `SELECT count(*) FILTER (WHERE undone_at IS NULL), count(*) FROM medic.journal WHERE job_id = $1`
)

// Journal operations.
const (
	OpUpdate = "update"
	OpDelete = "delete"
	// OpInsert journals rows medic inserted, compactly: the key holds column values that
	// select exactly those rows (arrays match any element), before is JSON null and after
	// holds the row count, so a 142k-event import journals key lists, not row images.
	OpInsert = "insert"
)

// RowChange changes the rows of one table that match a condition.
type RowChange struct {
	Table string
	// Key are the columns that identify a row (a unique key of the table).
	Key []string
	// Where selects the rows, over the table aliased as t (e.g. "t.event_id = ANY($1)").
	Where string
	Args  []any
	// Set is the assignment list of an update (e.g. "rejection_reason = NULL", columns not
	// qualified); empty for a delete. An update needs Key to be a unique key.
	Set string
}

// setColumns returns the columns an assignment list assigns ("a = 1, b = coalesce(c, 2)" →
// a, b): commas inside parentheses or quotes do not separate assignments.
func setColumns(set string) ([]string, error) {
	var cols []string
	depth, start, quote := 0, 0, rune(0)
	part := func(p string) error {
		col, _, ok := strings.Cut(p, "=")
		col = strings.Trim(strings.TrimSpace(col), `"`)
		if !ok || col == "" || strings.ContainsAny(col, " (),.") {
			return fmt.Errorf("cannot read the column of assignment %q", strings.TrimSpace(p))
		}
		cols = append(cols, col)
		return nil
	}
	for i, r := range set {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '(':
			depth++
		case r == ')':
			depth--
		case r == ',' && depth == 0:
			if err := part(set[start:i]); err != nil {
				return nil, err
			}
			start = i + 1
		}
	}
	if err := part(set[start:]); err != nil {
		return nil, err
	}
	return cols, nil
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

// ready holds the databases whose journal schema is known to exist.
var ready sync.Map // *synapse.DB → struct{}

// Ensure creates the journal schema and table if missing.
func Ensure(ctx context.Context, db *synapse.DB) error {
	if _, ok := ready.Load(db); ok {
		return nil
	}
	if _, err := db.Pool.Exec(ctx, createJournalQuery); err != nil {
		return fmt.Errorf("create medic.journal: %w", err)
	}
	ready.Store(db, struct{}{})
	return nil
}

// ApplyJournaled applies changes in one transaction, journaling each changed row's
// before- and after-image under jobID. It returns how many rows changed.
func Apply(ctx context.Context, db *synapse.DB, jobID, actor string, changes []RowChange, crash CrashPoint) (int, error) {
	return ApplyWith(ctx, db, jobID, actor, nil, changes, crash)
}

// ApplyJournaledWith is ApplyJournaled with a prepare step that runs first in the same
// transaction, e.g. to load a large key set into a temporary table the changes' Where clauses
// join (an ANY($n) over 100k keys is slow to plan and to match).
func ApplyWith(ctx context.Context, db *synapse.DB, jobID, actor string, prepare func(context.Context, pgx.Tx) error, changes []RowChange, crash CrashPoint) (int, error) {
	total := 0
	err := InTx(ctx, db, jobID, actor, func(j *Tx) error {
		if prepare != nil {
			if err := prepare(ctx, j.Tx); err != nil {
				return err
			}
		}
		for _, ch := range changes {
			n, err := j.Apply(ctx, ch, crash)
			if err != nil {
				return err
			}
			total += n
		}
		return crash.at(ctx, j.Tx, "before commit")
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}

// Tx is a transaction on Synapse's database whose changes are journaled under one job.
type Tx struct {
	Tx           pgx.Tx
	jobID, actor string
}

// InJournaledTx runs fn in one transaction with a journal writer for jobID: the changes fn
// makes and their journal entries commit together or not at all.
func InTx(ctx context.Context, db *synapse.DB, jobID, actor string, fn func(j *Tx) error) error {
	if err := Ensure(ctx, db); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		// Pairing before- and after-images of 100k rows sorts or hashes them: in memory,
		// not in temporary files (the default 4 MB would spill).
		if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '64MB'`); err != nil {
			return err
		}
		return fn(&Tx{Tx: tx, jobID: jobID, actor: actor})
	})
}

// Apply changes rows, journaling their before- and after-images. It returns how many changed.
func (j *Tx) Apply(ctx context.Context, ch RowChange, crash CrashPoint) (int, error) {
	n, err := applyOne(ctx, j.Tx, j.jobID, j.actor, ch, crash)
	if err != nil {
		return 0, fmt.Errorf("change %s: %w", ch.Table, err)
	}
	return n, nil
}

// Inserted names rows medic inserted into a table: those where every Match column equals
// its value or, for a slice value ([]string, []int64), any of its elements. The match must
// select exactly the inserted rows (e.g. the event IDs of events that did not exist before).
type Inserted struct {
	Table string
	Match map[string]any
	Rows  int
	// Tables, instead of Table, names several tables whose inserted rows the same Match
	// selects, in the order they were written (undo deletes them in reverse, so rows that
	// reference others go first); RowsBy counts each. One entry then journals the key list once.
	Tables []string
	RowsBy map[string]int
	// Volatile rows may be consumed or added by Synapse after the insert (a work queue such
	// as event_auth_chain_to_calculate, or the chain cover Synapse computes from it): undo
	// deletes whatever matches then instead of insisting on the count.
	Volatile bool
	// Refs are columns ("table.column") of rows Synapse may add later that point at these
	// rows by the values of Match's list column, e.g. a new state group stored as a delta on
	// an imported one. Undo refuses while any such row exists: deleting would leave it
	// dangling. (The job's own referencing rows are undone before, being journaled later.)
	Refs []string
}

type insertedMeta struct {
	Rows     int            `json:"rows"`
	RowsBy   map[string]int `json:"rows_by,omitempty"`
	Volatile bool           `json:"volatile,omitempty"`
	Refs     []string       `json:"refs,omitempty"`
}

// Inserted journals rows inserted in this transaction. Entries matching no row are skipped
// (unless volatile: Synapse may fill those later).
func (j *Tx) Inserted(ctx context.Context, ins Inserted) error {
	for _, n := range ins.RowsBy {
		ins.Rows += n
	}
	if ins.Rows == 0 && !ins.Volatile {
		return nil
	}
	key, err := json.Marshal(ins.Match)
	if err != nil {
		return err
	}
	meta, tbl := insertedMeta{Rows: ins.Rows, Volatile: ins.Volatile, Refs: ins.Refs}, ins.Table
	if len(ins.Tables) > 0 {
		tbl, meta.RowsBy = strings.Join(ins.Tables, ","), ins.RowsBy
	}
	after, _ := json.Marshal(meta)
	if _, err = j.Tx.Exec(ctx, insertJournalQuery, j.jobID, tbl, OpInsert, key, []byte("null"), after, j.actor); err != nil {
		return fmt.Errorf("journal inserted %s rows: %w", ins.Table, err)
	}
	return nil
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

// applyOne changes one table's rows and journals them in a single statement, so nothing
// passes through medic's memory and a change of 100k rows is one round trip. A delete returns
// the deleted rows: their before-images. An update joins the table to its own rows read (and
// locked) in a subquery, and returns both images per row; every part of the statement sees
// the same snapshot, so the subquery's rows are the rows as they were.
func applyOne(ctx context.Context, tx pgx.Tx, jobID, actor string, ch RowChange, crash CrashPoint) (int, error) {
	tbl := ident(ch.Table)
	object := func(alias string, cols []string) string {
		parts := make([]string, len(cols))
		for i, col := range cols {
			parts[i] = fmt.Sprintf("'%s', %s.%s", strings.ReplaceAll(col, "'", "''"), alias, pgx.Identifier{col}.Sanitize())
		}
		return "jsonb_build_object(" + strings.Join(parts, ", ") + ")"
	}
	keyObj := func(alias string) string { return object(alias, ch.Key) }
	var change string
	op := OpDelete
	if ch.Set == "" {
		change = fmt.Sprintf(`DELETE FROM %s AS t WHERE %s RETURNING %s AS k, to_jsonb(t) AS b, NULL::jsonb AS a`,
			tbl, ch.Where, keyObj("t"))
	} else {
		op = OpUpdate
		// An update journals the key and the columns it assigns, before and after: undo puts
		// exactly those back, and refuses if any of them changed since. Whole-row images of
		// 100k events rows (two each) would spill the statement to disk for nothing.
		set, err := setColumns(ch.Set)
		if err != nil {
			return 0, err
		}
		imageCols := slices.Concat(ch.Key, set)
		join := make([]string, len(ch.Key))
		for i, col := range ch.Key {
			c := pgx.Identifier{col}.Sanitize()
			join[i] = fmt.Sprintf("u.%s = old.%s", c, c)
		}
		change = fmt.Sprintf(`UPDATE %[1]s AS u SET %[2]s
			FROM (SELECT t.* FROM %[1]s AS t WHERE %[3]s FOR UPDATE) AS old
			WHERE %[4]s
			RETURNING %[5]s AS k, %[6]s AS b, %[7]s AS a`,
			tbl, ch.Set, ch.Where, strings.Join(join, " AND "), keyObj("u"), object("old", imageCols), object("u", imageCols))
	}
	n := len(ch.Args)
	query := fmt.Sprintf(`
		WITH c AS (%[1]s),
		ins AS (
			INSERT INTO medic.journal (job_id, seq, tbl, op, key, before, after, actor)
			SELECT $%[2]d, nextval('medic.journal_seq'), $%[3]d, $%[4]d, c.k, c.b, c.a, $%[5]d FROM c
			RETURNING 1)
		SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM ins)`,
		change, n+1, n+2, n+3, n+4)
	if err := crash.at(ctx, tx, "before changing "+ch.Table); err != nil {
		return 0, err
	}
	args := append(slices.Clone(ch.Args), jobID, ch.Table, op, actor)
	var changed, journaled int
	if err := tx.QueryRow(ctx, query, args...).Scan(&changed, &journaled); err != nil {
		return 0, err
	}
	if changed != journaled {
		return 0, fmt.Errorf("changed %d rows but journaled %d; nothing was changed", changed, journaled)
	}
	return changed, crash.at(ctx, tx, "after changing "+ch.Table)
}

// JournalCount returns how many journaled rows of a job are not undone, and how many in all.
func Count(ctx context.Context, db *synapse.DB, jobID string) (open, all int, err error) {
	if err = Ensure(ctx, db); err != nil {
		return
	}
	err = db.Pool.QueryRow(ctx, journalCountQuery, jobID).Scan(&open, &all)
	return
}

// For inserted rows journaled compactly, the count is the rows the entries name.
// Entries naming several tables count per table (rows_by).
const journalSummaryQuery = `
	SELECT tbl, op, sum(n)::bigint FROM (
		SELECT j.tbl, j.op, CASE WHEN j.op = 'insert' THEN (j.after->>'rows')::bigint ELSE 1 END AS n
		FROM medic.journal AS j WHERE j.job_id = $1 AND j.undone_at IS NULL AND NOT (j.op = 'insert' AND j.after ? 'rows_by')
		UNION ALL
		SELECT r.key, j.op, r.value::bigint
		FROM medic.journal AS j, jsonb_each_text(j.after->'rows_by') AS r
		WHERE j.job_id = $1 AND j.undone_at IS NULL AND j.op = 'insert' AND j.after ? 'rows_by'
	) AS s GROUP BY tbl, op ORDER BY tbl, op`

// JournalSummary describes what undoing a job would restore, one line per table and operation.
func Summary(ctx context.Context, db *synapse.DB, jobID string) ([]string, error) {
	if err := Ensure(ctx, db); err != nil {
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
		verb := map[string]string{OpUpdate: "put back the previous values of", OpDelete: "re-insert",
			OpInsert: "delete the inserted"}[op]
		return fmt.Sprintf("%s %d row(s) of `%s`", verb, n, tbl), nil
	})
}

// At runs the crash point (nil-safe), for points outside a transaction.
func (cp CrashPoint) At(ctx context.Context, point string) error { return cp.at(ctx, nil, point) }
