package bot_test

import (
	"strings"
	"testing"
	"time"

	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/testbed"
)

// TestReactionsWithOtherPrefix: with bot.command_prefix "?", reacting ✅ to a plan approves
// it (the job runs) and ❌ cancels another, as with the default prefix (issue 12).
func TestReactionsWithOtherPrefix(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	adm := adminapi.New(admin.Client)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Bot.CommandPrefix = "?"
	rb := startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	// Two destinations hs1 backs off from, injected the way Synapse records them (fresh
	// names: Synapse caches the retry state of destinations it has looked up).
	run := testbed.UniqueName("p")
	approved, cancelled := run+"-approve.prefix.test", run+"-cancel.prefix.test"
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts)
		SELECT d, $2, 600000, $2 FROM unnest($1::text[]) AS d`, []string{approved, cancelled}, time.Now().UnixMilli())
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination LIKE '%.prefix.test'`) })

	okEvt, okJob := prompt(t, admin, roomID, botUser, "?federation reset "+approved)
	noEvt, noJob := prompt(t, admin, roomID, botUser, "?federation reset "+cancelled)
	for _, evt := range []string{testbed.Message(okEvt).Body, testbed.Message(noEvt).Body} {
		if strings.Contains(evt, "`!approve ") || strings.Contains(evt, "`!cancel ") {
			t.Errorf("the plan tells the admin to send commands with the wrong prefix:\n%s", evt)
		}
	}
	react(t, admin, roomID, okEvt.ID, "✅")
	react(t, admin, roomID, noEvt.ID, "❌")

	// Both reactions are answered within the usual wait; either job still awaiting approval
	// means its reaction was ignored.
	final := func(st string) bool { return st != store.JobAwaiting && st != store.JobRunning }
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if final(jobState(t, rb, okJob)) && final(jobState(t, rb, noJob)) {
			break
		}
	}
	if st := jobState(t, rb, okJob); st != store.JobDone {
		t.Errorf("✅ on the plan of job %s with prefix %q: the job is %s, want %s", okJob, cfg.Bot.CommandPrefix, st, store.JobDone)
	} else if d, err := adm.Destination(t.Context(), approved); err != nil || d == nil || d.Failing() {
		t.Errorf("job %s is done but %s was not reset: %+v (%v)", okJob, approved, d, err)
	}
	if st := jobState(t, rb, noJob); st != store.JobCancelled {
		t.Errorf("❌ on the plan of job %s with prefix %q: the job is %s, want %s", noJob, cfg.Bot.CommandPrefix, st, store.JobCancelled)
	}
	if d, err := adm.Destination(t.Context(), cancelled); err != nil || d == nil || !d.Failing() {
		t.Errorf("the cancelled job changed %s: %+v (%v)", cancelled, d, err)
	}
}
