package bot_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/testbed"
)

// TestForceSchemaFromChat: in chat, a repair that writes Synapse's tables (here !undo of a
// journaled change) refuses on a Synapse schema it was not tested on, naming the versions;
// with --force-schema the plan shows the untested schema as a risk, and ✅ runs it.
func TestForceSchemaFromChat(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	rb := startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	jc := newJournaledChange(t, tb, "schema")
	changedJob, row, before := jc.job, jc.row, jc.before
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
