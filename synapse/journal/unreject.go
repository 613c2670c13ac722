package journal

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse"
)

// Unreject accepts the given rejected events of one room, as one journaled transaction:
// events.rejection_reason → NULL and their rejections rows deleted, scoped by room so an
// event ID of another room is never touched. It returns the rows changed.
func Unreject(ctx context.Context, db *synapse.DB, jobID, room string, events []string, crash CrashPoint) (int, error) {
	return ApplyWith(ctx, db, jobID, "job "+jobID, loadUnrejectIDs(events), []RowChange{
		{Table: "events", Key: []string{"event_id"}, Where: unrejectEventsWhere, Args: []any{room}, Set: unrejectEventsSet},
		{Table: "rejections", Key: []string{"event_id"}, Where: unrejectRejectionsWhere, Args: []any{room}},
	}, crash)
}

// Unreject changes: scoped to one room by events.room_id, for the events listed in the
// transaction's temporary table medic_unreject (see loadUnrejectIDs).
const (
	// No primary key: the changes semi-join the IDs (IN), so a duplicate would not matter, and
	// building a btree of 100k random IDs was a fifth of a second of the transaction.
	createUnrejectIDs       = `CREATE TEMPORARY TABLE medic_unreject (event_id TEXT NOT NULL) ON COMMIT DROP`
	unrejectEventsWhere     = `t.room_id = $1 AND t.event_id IN (SELECT event_id FROM medic_unreject) AND t.rejection_reason IS NOT NULL`
	unrejectEventsSet       = `rejection_reason = NULL`
	unrejectRejectionsWhere = `t.event_id IN (SELECT event_id FROM medic_unreject) AND EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = t.event_id AND e.room_id = $1)`
)

// loadUnrejectIDs returns a prepare step (ApplyWith) that loads the events to
// un-reject into the transaction's temporary table medic_unreject.
func loadUnrejectIDs(ids []string) func(context.Context, pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, createUnrejectIDs); err != nil {
			return fmt.Errorf("create medic_unreject: %w", err)
		}
		// Row by row from the list: 100k one-value rows built up front were ~6 MB more.
		rows := pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) { return []any{ids[i]}, nil })
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"medic_unreject"}, []string{"event_id"}, rows); err != nil {
			return fmt.Errorf("load events to un-reject: %w", err)
		}
		_, err := tx.Exec(ctx, `ANALYZE medic_unreject`)
		return err
	}
}
