package journal

import (
	"context"
	"fmt"
	"time"

	"github.com/synapse-medic/medic/synapse"
)

// The aftercare's row changes (recovery/aftercare.go), each one journaled transaction.

// DeleteOneTimeKeys deletes every one-time key, as Synapse's backup documentation asks after
// a restore (docs/usage/administration/backups.md: TRUNCATE e2e_one_time_keys_json before
// starting Synapse), so that no key a client already handed out is handed out again. Clients
// upload new ones when their count drops. It returns the keys deleted.
func DeleteOneTimeKeys(ctx context.Context, db *synapse.DB, jobID string) (int, error) {
	return Apply(ctx, db, jobID, "job "+jobID, []RowChange{{
		Table: "e2e_one_time_keys_json", Key: []string{"user_id", "device_id", "algorithm", "key_id"}, Where: "true",
	}}, nil)
}

// MarkDeviceListsStale marks the remote users' cached device lists for a resync the way
// Synapse does, rows in device_lists_remote_resync, journaled as inserted rows. Synapse
// consumes that queue (it deletes a user's row once resynced), so the entry is volatile:
// undo deletes whatever is still queued. It returns how many users were marked.
func MarkDeviceListsStale(ctx context.Context, db *synapse.DB, jobID string, users []string) (int, error) {
	marked := 0
	err := InTx(ctx, db, jobID, "job "+jobID, func(j *Tx) error {
		rows, err := j.Tx.Query(ctx, synapse.AftercareMarkResyncQuery, users, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("mark device lists stale: %w", err)
		}
		var inserted []string
		for rows.Next() {
			var u string
			if err = rows.Scan(&u); err != nil {
				rows.Close()
				return err
			}
			inserted = append(inserted, u)
		}
		if err = rows.Err(); err != nil {
			return fmt.Errorf("mark device lists stale: %w", err)
		}
		marked = len(inserted)
		if marked == 0 {
			return nil
		}
		return j.Inserted(ctx, Inserted{Table: "device_lists_remote_resync", Match: map[string]any{"user_id": inserted},
			Rows: marked, Volatile: true})
	})
	return marked, err
}

// ClearBackoff resets Synapse's retry timings for the destinations, as its admin API's
// reset_connection does. It returns the destinations reset.
func ClearBackoff(ctx context.Context, db *synapse.DB, jobID string, destinations []string) (int, error) {
	return Apply(ctx, db, jobID, "job "+jobID, []RowChange{{
		Table: "destinations", Key: []string{"destination"}, Where: synapse.AftercareBackoffWhere,
		Args: []any{destinations}, Set: synapse.AftercareBackoffSet,
	}}, nil)
}
