package bot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/testbed"
)

// evil is Markdown a remote server controls: a room name, an event type, a server name.
const evil = "**[click](https://evil.example)**"

// TestRemoteTextRendersAsText: names, types, servers and IDs from other servers show in
// `!rejected` and `!recover scan` as the text they are, never as formatting or links.
func TestRemoteTextRendersAsText(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)

	// A room with a crafted name, holding a rejected event of a crafted type.
	target := admin.CreateRoom(false)
	if _, err := admin.SendStateEvent(ctx, target, event.StateRoomName, "", &event.RoomNameEventContent{Name: evil}); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.SendMessageEvent(ctx, target, event.NewEventType("x.evil`"+evil), map[string]any{"body": "x"})
	if err != nil {
		t.Fatal(err)
	}
	tb.HS1.Exec(t, `INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'auth_error', $2)`, resp.EventID, fmt.Sprint(time.Now().UnixMilli()))
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM rejections WHERE event_id = $1`, resp.EventID) })

	// Synapse's log as a remote server can shape it: traffic dropped for that room from a
	// crafted origin, and an event ID from a crafted server.
	now := time.Now().UTC().Format("2006-01-02 15:04:05,000")
	logFile := filepath.Join(t.TempDir(), "homeserver.log")
	lines := []string{
		now + " - synapse.federation.transport.server.federation - 118 - INFO - PUT-9 - Received txn 1 from " + evil + ". (PDUs: 1, EDUs: 0)",
		now + " - synapse.federation.federation_server - 1331 - INFO - PUT-9 - Ignoring PDU for unknown room_id: " + target.String(),
		now + " - synapse.handlers.federation_event - 195 - INFO - _process_incoming_pdus_in_room_inner-3-$`" + evil + " - Ignoring PDU from " + evil + " as we're not in the room",
	}
	if err = os.WriteFile(logFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	cfg.Synapse.Logs = []config.LogSource{{Type: "file", Path: logFile}}
	startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	for _, cmd := range []string{"!rejected", "!recover scan"} {
		evtID := admin.SendText(roomID, cmd)
		msg := testbed.Message(admin.WaitFor(wait, "the answer to "+cmd, testbed.ReplyTo(botUser, evtID)))
		if !strings.Contains(msg.Body, target.String()) {
			t.Errorf("%s does not show the room:\n%s", cmd, msg.Body)
		}
		// (medic's own bold and code are fine; the crafted text must not become a link or
		// formatting of its own)
		for _, bad := range []string{"<a ", "<strong>click", "<em>click", "click</"} {
			if strings.Contains(msg.FormattedBody, bad) {
				t.Errorf("%s renders remote text as Markdown (%s):\n%s", cmd, bad, msg.FormattedBody)
			}
		}
		if !strings.Contains(msg.FormattedBody, evil) {
			t.Errorf("%s does not show %q as text:\n%s", cmd, evil, msg.FormattedBody)
		}
	}
}
