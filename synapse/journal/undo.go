package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse"
)

// Undo: the journal read back, every row a job changed restored exactly, or nothing when any
// of them changed since.

// decodeMatch reads a journaled match, keeping numbers exact (state group ids are int64).
func decodeMatch(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var match map[string]any
	return match, dec.Decode(&match)
}

// insertedWhere turns a journaled match back into a condition over the table aliased as t.
func insertedWhere(raw []byte) (string, []any, error) {
	match, err := decodeMatch(raw)
	if err != nil {
		return "", nil, err
	}
	cols := make([]string, 0, len(match))
	for c := range match {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	var conds []string
	var args []any
	for _, c := range cols {
		v, err := matchValue(match[c])
		if err != nil {
			return "", nil, fmt.Errorf("column %s: %w", c, err)
		}
		args = append(args, v)
		op := "="
		switch v.(type) {
		case []string, []int64:
			op = "= ANY"
		}
		conds = append(conds, fmt.Sprintf("t.%s %s($%d)", ident(c), op, len(args)))
	}
	if len(conds) == 0 {
		return "", nil, errors.New("empty match")
	}
	return strings.Join(conds, " AND "), args, nil
}

func matchValue(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.Int64()
	case []any:
		if len(x) == 0 {
			return []string{}, nil
		}
		if _, isNum := x[0].(json.Number); isNum {
			out := make([]int64, len(x))
			for i, e := range x {
				n, ok := e.(json.Number)
				if !ok {
					return nil, errors.New("mixed array")
				}
				var err error
				if out[i], err = n.Int64(); err != nil {
					return nil, err
				}
			}
			return out, nil
		}
		out := make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("mixed array")
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported value %T", v)
}

// undoInserted deletes the rows an insert entry names, refusing (drift) when their number
// changed since, unless the entry is volatile.
func undoInserted(ctx context.Context, tx pgx.Tx, tbl string, key, after []byte) (drift string, err error) {
	where, args, err := insertedWhere(key)
	if err != nil {
		return "", err
	}
	var meta insertedMeta
	if err = json.Unmarshal(after, &meta); err != nil {
		return "", err
	}
	if tables := strings.Split(tbl, ","); len(tables) > 1 {
		// Check every table first, then delete in reverse order of writing.
		for _, one := range tables {
			var n int
			if err = tx.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s AS t WHERE %s`, ident(one), where), args...).Scan(&n); err != nil {
				return "", err
			}
			if n != meta.RowsBy[one] {
				return fmt.Sprintf("%s: %d rows inserted, %d match now", one, meta.RowsBy[one], n), nil
			}
		}
		for i := len(tables) - 1; i >= 0; i-- {
			if _, err = tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %s AS t WHERE %s`, ident(tables[i]), where), args...); err != nil {
				return "", err
			}
		}
		return "", nil
	}
	t := ident(tbl)
	var n int
	if err = tx.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s AS t WHERE %s`, t, where), args...).Scan(&n); err != nil {
		return "", err
	}
	if !meta.Volatile && n != meta.Rows {
		return fmt.Sprintf("%s: %d rows inserted, %d match now", tbl, meta.Rows, n), nil
	}
	if tbl == "event_auth_chains" {
		// Links leave from the chain positions of these events: they go with them.
		if _, err = tx.Exec(ctx, fmt.Sprintf(`DELETE FROM event_auth_chain_links AS l USING event_auth_chains AS t
			WHERE %s AND l.origin_chain_id = t.chain_id AND l.origin_sequence_number = t.sequence_number`, where), args...); err != nil {
			return "", err
		}
	}
	_, err = tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %s AS t WHERE %s`, t, where), args...)
	return "", err
}

// danglingRefs counts rows in refs' columns that point at the inserted rows by the values
// of the match's list column, and describes them if there are any.
func danglingRefs(ctx context.Context, tx pgx.Tx, tbl string, key []byte, refs []string) (string, error) {
	if len(refs) == 0 {
		return "", nil
	}
	match, err := decodeMatch(key)
	if err != nil {
		return "", err
	}
	var values any
	for _, raw := range match {
		v, err := matchValue(raw)
		if err != nil {
			return "", err
		}
		switch v.(type) {
		case []string, []int64:
			values = v
		}
	}
	if values == nil {
		return "", fmt.Errorf("%s: references need a list column in the match", tbl)
	}
	for _, ref := range refs {
		refTbl, col, ok := strings.Cut(ref, ".")
		if !ok {
			return "", fmt.Errorf("bad reference %q", ref)
		}
		var n int
		if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s AS r WHERE r.%s = ANY($1)`, ident(refTbl), ident(col)),
			values).Scan(&n); err != nil {
			return "", err
		}
		if n > 0 {
			return fmt.Sprintf("%s: %d row(s) of %s written since point at them (%s); deleting them would leave those dangling",
				tbl, n, refTbl, col), nil
		}
	}
	return "", nil
}

// sameAsAfterQuery tells whether a row ($1, whole) still holds the after-image ($2) an update
// entry journaled, in every column the image names.
const sameAsAfterQuery = `SELECT $2::jsonb = (SELECT coalesce(jsonb_object_agg(k, $1::jsonb -> k), '{}'::jsonb) FROM jsonb_object_keys($2::jsonb) AS k)`

// ErrDrifted means rows changed since the job changed them, so undo would overwrite someone
// else's change; nothing was restored.
var ErrDrifted = errors.New("rows changed since the job")

// Undo restores every row a job changed, exactly as it was, in one transaction. It refuses
// (ErrDrifted, nothing restored) if any of those rows changed since.
func Undo(ctx context.Context, db *synapse.DB, jobID string, crash CrashPoint) (int, error) {
	if err := Ensure(ctx, db); err != nil {
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
		var refChecks []entry
		for _, e := range entries {
			if e.op == OpInsert {
				// References are checked once every row of the job is gone: rows the job
				// itself wrote that point at these go too, whatever their order.
				refChecks = append(refChecks, e)
				d, err := undoInserted(ctx, tx, e.tbl, e.key, e.after)
				if err != nil {
					return fmt.Errorf("delete inserted %s rows: %w", e.tbl, err)
				}
				if d != "" {
					drifted = append(drifted, d)
				} else {
					restored++
				}
				if err = crash.at(ctx, tx, fmt.Sprintf("after restoring entry %d", e.seq)); err != nil {
					return err
				}
				continue
			}
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
					// The columns the job set, as they are now, against what it set them to
					// (entries from before partial images hold whole rows: the same test).
					if err = tx.QueryRow(ctx, sameAsAfterQuery, current, e.after).Scan(&same); err != nil {
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
		for _, e := range refChecks {
			var meta insertedMeta
			if err = json.Unmarshal(e.after, &meta); err != nil {
				return err
			}
			d, err := danglingRefs(ctx, tx, e.tbl, e.key, meta.Refs)
			if err != nil {
				return fmt.Errorf("check references to %s: %w", e.tbl, err)
			}
			if d != "" {
				drifted = append(drifted, d)
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
