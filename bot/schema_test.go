package bot_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/journal"
	"github.com/synapse-medic/medic/testbed"
)

// TestForceSchemaFromChat: in chat, a repair that writes Synapse's tables (here !undo of a
// journaled change) refuses on a Synapse schema it was not tested on, naming the versions;
// with --force-schema the plan shows the untested schema as a risk, and ✅ runs it.
func TestForceSchemaFromChat(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	rb := startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	ghost := testbed.UniqueName("schema") + ".test"
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, 1795000000123, 600000, 1795000000123)`, ghost)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost) })
	db, err := synapse.OpenDB(ctx, tb.HS1.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	row := func() string {
		var s string
		if err := db.Pool.QueryRow(ctx, `SELECT d::text FROM destinations d WHERE destination = $1`, ghost).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := row()
	changedJob := "tst" + testbed.UniqueName("")[:3]
	if _, err = journal.Apply(ctx, db, changedJob, "@admin:test", []journal.RowChange{{
		Table: "destinations", Key: []string{"destination"}, Where: "t.destination = $1", Args: []any{ghost},
		Set: "retry_interval = 0, failure_ts = NULL, retry_last_ts = 0",
	}}, nil); err != nil {
		t.Fatal(err)
	}
	changed := row()

	// Synapse's database at a schema newer than the one tested (Synapse reads it only when it
	// starts, and is not restarted here).
	orig := tb.HS1.Count(t, `SELECT version FROM schema_version`)
	tb.HS1.Exec(t, `UPDATE schema_version SET version = $1`, orig+1)
	t.Cleanup(func() { tb.HS1.Exec(t, `UPDATE schema_version SET version = $1`, orig) })

	admin.SendText(roomID, "!undo "+changedJob)
	admin.WaitFor(wait, "the refusal on an untested schema", fromBotContaining(botUser, "--force-schema to proceed anyway"))
	if row() != changed {
		t.Fatal("the refused undo changed the row")
	}

	planEvt, undoJob := prompt(t, admin, roomID, botUser, "!undo "+changedJob+" --force-schema")
	body := testbed.Message(planEvt).Body
	if !strings.Contains(body, "Untested Synapse schema") || !strings.Contains(body, fmt.Sprintf("schema %d", orig+1)) || !strings.Contains(body, "--force-schema") {
		t.Errorf("the forced plan does not show the untested schema as a risk:\n%s", body)
	}
	react(t, admin, roomID, planEvt.ID, "✅")
	waitJobState(t, rb, undoJob, store.JobDone)
	if got := row(); got != before {
		t.Fatalf("the forced undo did not restore the row:\nwant %s\ngot  %s", before, got)
	}
}
