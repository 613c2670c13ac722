package bot_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/testbed"
)

// TestNonAdminInAdminRoom: a non-admin invited into an adopted admin room is announced there
// once; while they are in it, plans and detailed replies there are summaries (✅ still
// approves), and full details come back when they leave. !rooms lists the admin rooms with
// their non-admins; !rooms leave forgets an adopted room and refuses a configured one.
func TestNonAdminInAdminRoom(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	eve := tb.Register(t, tb.HS1, testbed.UniqueName("eve"), false)
	botUser := newBotAccount(t, tb)
	configured := admin.CreateRoom(true, botUser)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Rooms.Admin = []id.RoomID{configured}
	rb := startBot(t, cfg)
	admin.WaitFor(wait, "the bot to join the configured room", testbed.Joined(configured, botUser))
	adopted := roomWithBot(t, admin, botUser, true)

	run := testbed.UniqueName("rooms")
	ghosts := []string{run + "-1.test", run + "-2.test"}
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts)
		SELECT d, 1795000000000, 600000, 1795000000000 FROM unnest($1::text[]) AS d`, ghosts)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = ANY($1)`, ghosts) })

	// Invited is enough to be announced (an invitee can read along once they join), and only
	// once: joining afterwards says nothing new.
	if _, err := admin.InviteUser(ctx, adopted, &mautrix.ReqInviteUser{UserID: eve.UserID}); err != nil {
		t.Fatal(err)
	}
	announced := fromBotContaining(botUser, "`"+eve.UserID.String()+"` is in this room but is no admin")
	admin.WaitFor(wait, "the notice about a non-admin", announced)
	if _, err := eve.JoinRoomByID(ctx, adopted); err != nil {
		t.Fatal(err)
	}

	planEvt, jobID := prompt(t, admin, adopted, botUser, "!federation reset "+ghosts[0])
	if body := testbed.Message(planEvt).Body; strings.Contains(body, "retry now") || !strings.Contains(body, "withheld") {
		t.Errorf("plan with a non-admin in the room is not a summary: %q", body)
	}
	jobCmd := admin.SendText(adopted, "!job "+jobID)
	reply := admin.WaitFor(wait, "the !job reply", testbed.ReplyTo(botUser, jobCmd))
	if body := testbed.Message(reply).Body; strings.Contains(body, "Audit trail") || !strings.Contains(body, "withheld") {
		t.Errorf("!job with a non-admin in the room is not a summary: %q", body)
	}
	listCmd := admin.SendText(configured, "!rooms")
	reply = admin.WaitFor(wait, "the !rooms reply", testbed.ReplyTo(botUser, listCmd))
	body := testbed.Message(reply).Body
	for _, want := range []string{configured.String(), "configured", adopted.String(), "adopted", admin.UserID.String(), eve.UserID.String() + "` (joined)"} {
		if !strings.Contains(body, want) {
			t.Errorf("!rooms does not say %q: %q", want, body)
		}
	}
	react(t, admin, adopted, planEvt.ID, "✅")
	waitJobState(t, rb, jobID, store.JobDone)

	// Eve leaves: the room is clean again and plans are whole.
	if _, err := eve.LeaveRoom(ctx, adopted); err != nil {
		t.Fatal(err)
	}
	admin.WaitFor(wait, "the notice that only admins are left", fromBotContaining(botUser, "only admins"))
	planEvt, _ = prompt(t, admin, adopted, botUser, "!federation reset "+ghosts[1])
	if body := testbed.Message(planEvt).Body; !strings.Contains(body, "retry now") || strings.Contains(body, "withheld") {
		t.Errorf("plan in a clean room is not whole: %q", body)
	}
	notices := map[id.EventID]string{}
	for _, evt := range admin.Events() {
		if announced(evt) {
			notices[evt.ID] = fmt.Sprintf("%s at %d: %q", evt.ID, evt.Timestamp, testbed.Message(evt).Body)
		}
	}
	if len(notices) != 1 {
		t.Errorf("the non-admin was announced %d times, want once: %v", len(notices), notices)
	}

	// !rooms leave: a configured room is refused, an adopted one is left and forgotten.
	refuse := admin.SendText(configured, "!rooms leave "+configured.String())
	reply = admin.WaitFor(wait, "the refusal to leave a configured room", testbed.ReplyTo(botUser, refuse))
	if body := testbed.Message(reply).Body; !strings.Contains(body, "rooms.admin") {
		t.Errorf("leaving a configured room: %q", body)
	}
	admin.SendText(configured, "!rooms leave "+adopted.String())
	admin.WaitFor(wait, "the bot to leave the adopted room", func(evt *event.Event) bool {
		return evt.RoomID == adopted && evt.Type == event.StateMember && evt.GetStateKey() == botUser.String() &&
			evt.Content.AsMember().Membership == event.MembershipLeave
	})
	deadline := time.Now().Add(wait)
	for {
		rooms, err := rb.store.AdminRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(rooms, adopted) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the left room is still an admin room: %v", rooms)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
