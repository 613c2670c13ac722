package bot_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/testbed"
)

// TestImportFromChat runs !import history from an encrypted admin room: the plan, approval
// by reaction, the chunks, the restart of hs1 under the running bot, and the report. The
// import itself is proven in depth by cmd/medic's TestImportHistory; this is the chat path.
func TestImportFromChat(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	owner := tb.Register(t, tb.HS2, testbed.UniqueName("owner"), false)
	room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for i := range 120 {
		resp, err := owner.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
			&event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("old %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, resp.EventID.String())
	}
	alice := tb.Register(t, tb.HS1, testbed.UniqueName("alice"), false)
	testbed.JoinVia(t, alice, room.RoomID, tb.HS2.Name)
	missing := func() int {
		return tb.HS1.Count(t, `SELECT count(*) FROM unnest($1::text[]) AS m(id)
			WHERE NOT EXISTS (SELECT 1 FROM events WHERE event_id = m.id AND NOT outlier)`, old)
	}
	if n := missing(); n != len(old) {
		t.Fatalf("hs1 already has %d of the %d old messages: the scenario is void", len(old)-n, len(old))
	}

	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	cfg.Synapse.RestartCommand = tb.RestartCommand(tb.HS1)
	cfg.Import.Sources = map[string]config.ImportSource{"old": {Type: "postgres", Database: tb.HS2.DSN}}
	cfg.Import.ChunkSize = 50
	rb := startBot(t, cfg)
	adminRoom := roomWithBot(t, admin, botUser, true)

	planEvt, job := prompt(t, admin, adminRoom, botUser, fmt.Sprintf("!import history %s from old", room.RoomID))
	body := testbed.Message(planEvt).Body
	for _, want := range []string{"event(s) of", "restarts right after", "chunk(s) of up to 50 events"} {
		if !strings.Contains(body, want) {
			t.Errorf("the plan lacks %q:\n%s", want, body)
		}
	}
	if n := missing(); n != len(old) {
		t.Fatalf("the plan alone imported %d events", len(old)-n)
	}
	react(t, admin, adminRoom, planEvt.ID, "✅")
	report := admin.WaitFor(3*time.Minute, "the job's report", fromBotContaining(botUser, "Job `"+job+"` done"))
	if b := testbed.Message(report).Body; !strings.Contains(b, "back up after the restart") {
		t.Errorf("the report does not confirm the restart:\n%s", b)
	}
	if st := jobState(t, rb, job); st != store.JobDone {
		t.Errorf("job %s is %s", job, st)
	}
	if n := missing(); n != 0 {
		t.Errorf("%d of the %d old messages are still missing on hs1 after the import", n, len(old))
	}
	// The bot still answers after Synapse restarted under it.
	ping(t, admin, adminRoom, botUser)
}
