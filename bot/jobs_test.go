package bot_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapse/journal"
	"github.com/synapse-medic/medic/testbed"
)

// failingHS2 makes hs1 back off from hs2 the way it happens in production: a room shared
// with a user on hs2, hs2 stopped (until the test ends), a message sent from hs1.
func failingHS2(t *testing.T, tb *testbed.Testbed, admin *testbed.Client, adm *adminapi.Client) {
	t.Helper()
	ctx := context.Background()
	remote := tb.Register(t, tb.HS2, testbed.UniqueName("remote"), false)
	roomID := admin.CreateRoom(false, remote.UserID)
	deadline := time.Now().Add(wait)
	for {
		if _, err := remote.JoinRoomByID(ctx, roomID); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("remote join: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	admin.WaitFor(wait, "the remote user to join", testbed.Joined(roomID, remote.UserID))
	tb.Stop(t, tb.HS2)
	admin.SendText(roomID, "hello while hs2 is down")
	waitDestination(t, adm, tb.HS2.Name, func(d *adminapi.Destination) bool { return d != nil && d.Failing() })
}

func waitDestination(t *testing.T, adm *adminapi.Client, server string, ok func(*adminapi.Destination) bool) *adminapi.Destination {
	t.Helper()
	deadline := time.Now().Add(180 * time.Second) // Synapse retries a transaction for about a minute before it backs off
	for {
		d, err := adm.Destination(context.Background(), server)
		if err != nil {
			t.Fatal(err)
		}
		if ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination %s never reached the expected state: %+v", server, d)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// jobIDIn returns the job ID from a plan message ("**Plan abc123: …").
func jobIDIn(t *testing.T, evt *event.Event) string {
	t.Helper()
	body := testbed.Message(evt).Body
	i := strings.Index(body, "Plan ")
	if i < 0 {
		t.Fatalf("no job ID in %q", body)
	}
	return strings.Trim(strings.TrimSuffix(strings.Fields(body[i+5:])[0], ":"), "*")
}

// after matches events seen after the first n.
func after(c *testbed.Client, n int, match func(*event.Event) bool) func(*event.Event) bool {
	return func(evt *event.Event) bool { return indexOf(c.Events(), evt) >= n && match(evt) }
}

// fromBotContaining matches the bot's messages containing text.
func fromBotContaining(botUser id.UserID, text string) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		msg := testbed.Message(evt)
		return evt.Sender == botUser && msg != nil && strings.Contains(msg.Body, text)
	}
}

// prompt sends a command and returns the bot's plan message and the job ID in it.
func prompt(t *testing.T, admin *testbed.Client, roomID id.RoomID, botUser id.UserID, cmd string) (*event.Event, string) {
	t.Helper()
	since := len(admin.Events())
	admin.SendText(roomID, cmd)
	evt := admin.WaitFor(wait, "a plan for "+cmd, after(admin, since, func(evt *event.Event) bool {
		_, ok := evt.Content.Raw["fi.mau.reaction_commands"]
		return evt.Sender == botUser && evt.RoomID == roomID && ok && strings.Contains(testbed.Message(evt).Body, "Plan ")
	}))
	return evt, jobIDIn(t, evt)
}

func indexOf(evts []*event.Event, target *event.Event) int {
	for i, e := range evts {
		if e == target {
			return i
		}
	}
	return -1
}

func react(t *testing.T, c *testbed.Client, roomID id.RoomID, target id.EventID, key string) {
	t.Helper()
	if _, err := c.SendReaction(context.Background(), roomID, target, key); err != nil {
		t.Fatal(err)
	}
}

func jobState(t *testing.T, rb *runningBot, jobID string) string {
	t.Helper()
	j, err := rb.store.GetJob(context.Background(), jobID)
	if err != nil || j == nil {
		t.Fatalf("job %s: %v", jobID, err)
	}
	return j.State
}

func waitJobState(t *testing.T, rb *runningBot, jobID, want string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for jobState(t, rb, jobID) != want {
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s, want %s", jobID, jobState(t, rb, jobID), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFederationResetJob covers the spine with its first real operation: listing, approval
// by reaction, everything that must not approve, re-planning on drift, and the run.
func TestFederationResetJob(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	adm := adminapi.New(admin.Client)
	alice := testbed.Syncing(t, tb.Register(t, tb.HS1, testbed.UniqueName("alice"), false))
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Rooms.AllowNonAdmins = []id.UserID{alice.UserID} // she reads along; her reactions approve nothing
	rb := startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)
	if _, err := admin.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: alice.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}

	failingHS2(t, tb, admin, adm)
	// A second failing destination, injected the way Synapse records one, so that the world
	// can change under a plan that still has work left.
	const ghost = "ghost-a.invalid:8448"
	now := time.Now().UnixMilli()
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, $2, 600000, $2)`, ghost, now)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost) })

	listCmd := admin.SendText(roomID, "!federation")
	list := admin.WaitFor(wait, "!federation answer", testbed.ReplyTo(botUser, listCmd))
	if body := testbed.Message(list).Body; !strings.Contains(body, tb.HS2.Name) || !strings.Contains(body, ghost) {
		t.Fatalf("!federation does not list the failing servers: %q", body)
	}

	planEvt, jobID := prompt(t, admin, roomID, botUser, "!federation reset all")
	if body := testbed.Message(planEvt).Body; !strings.Contains(body, tb.HS2.Name) || !strings.Contains(body, ghost) {
		t.Fatalf("plan does not list both failing servers: %q", body)
	}

	// None of these may run the job: the bot's own pre-reactions (already there), a
	// non-admin's reaction, a reaction to a look-alike prompt the bot did not send, an edit
	// that turns a message into an approval, an unknown job ID.
	react(t, alice, roomID, planEvt.ID, "✅")
	fake, err := admin.SendMessageEvent(ctx, roomID, event.EventMessage, &event.Content{
		Parsed: &event.MessageEventContent{MsgType: event.MsgNotice, Body: "fake prompt"},
		Raw:    map[string]any{"fi.mau.reaction_commands": map[string]any{"✅": "!approve " + jobID}},
	})
	if err != nil {
		t.Fatal(err)
	}
	react(t, admin, roomID, fake.EventID, "✅")
	orig := admin.SendText(roomID, "just chatting")
	edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "* !approve " + jobID}
	edit.SetEdit(orig)
	edit.NewContent = &event.MessageEventContent{MsgType: event.MsgText, Body: "!approve " + jobID}
	if _, err = admin.SendMessageEvent(ctx, roomID, event.EventMessage, edit); err != nil {
		t.Fatal(err)
	}
	unknown := admin.SendText(roomID, "!approve nosuchjob")
	reply := admin.WaitFor(wait, "answer to an unknown job", testbed.ReplyTo(botUser, unknown))
	if !strings.Contains(testbed.Message(reply).Body, "There is no job `nosuchjob`") {
		t.Errorf("unknown job answer: %q", testbed.Message(reply).Body)
	}
	ping(t, admin, roomID, botUser)
	ping(t, admin, roomID, botUser)
	if st := jobState(t, rb, jobID); st != store.JobAwaiting {
		t.Fatalf("job %s is %s after reactions that must not approve it", jobID, st)
	}

	// Drift: between prompt and approval someone else resets one of the servers: nothing
	// runs, and a new prompt explains the difference.
	if err = adm.ResetConnection(ctx, ghost); err != nil {
		t.Fatal(err)
	}
	since := len(admin.Events())
	react(t, admin, roomID, planEvt.ID, "✅")
	newPlan := admin.WaitFor(wait, "a new plan after drift", after(admin, since, fromBotContaining(botUser, "The situation changed")))
	if body := testbed.Message(newPlan).Body; !strings.Contains(body, "was: `"+ghost) || strings.Contains(body, "now: `"+ghost) {
		t.Errorf("new plan does not explain that %s no longer needs a reset: %q", ghost, body)
	}
	waitJobState(t, rb, jobID, store.JobSuperseded)
	newID := jobIDIn(t, newPlan)

	// Approving the new plan by reaction runs it and clears the retry state. (hs2 stays down
	// meanwhile: once hs2 is back and talks to hs1, Synapse clears the backoff by itself,
	// which the re-plan would rightly report as "nothing to do".)
	react(t, admin, roomID, newPlan.ID, "✅")
	admin.WaitFor(wait, "the job report", fromBotContaining(botUser, "Job `"+newID+"` done"))
	if d := waitDestination(t, adm, tb.HS2.Name, func(d *adminapi.Destination) bool { return d != nil }); d.Failing() {
		t.Errorf("destination still failing after the reset: %+v", d)
	}
	trail, _ := rb.store.AuditTrail(ctx, newID)
	var approvedBy bool
	for _, e := range trail {
		approvedBy = approvedBy || (e.Actor == admin.UserID.String() && strings.HasPrefix(e.What, "approved"))
	}
	if !approvedBy {
		t.Errorf("audit trail lacks the approval: %+v", trail)
	}
	jobReply := admin.SendText(roomID, "!job "+newID)
	detail := admin.WaitFor(wait, "!job answer", testbed.ReplyTo(botUser, jobReply))
	if body := testbed.Message(detail).Body; !strings.Contains(body, admin.UserID.String()+": approved") || !strings.Contains(body, "done") {
		t.Errorf("!job does not show the audit trail: %q", body)
	}
}

// TestTwoPersonRuleAndExpiry: with approvals: 2 one admin (even twice) is not enough and a
// second admin completes it; an approval after expiry runs nothing.
func TestTwoPersonRuleAndExpiry(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	adm := adminapi.New(admin.Client)
	admin2 := testbed.Syncing(t, tb.Register(t, tb.HS1, testbed.UniqueName("admin2"), false))
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID, admin2.UserID)
	cfg.Jobs.Approvals = 2
	rb := startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)
	if _, err := admin.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: admin2.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin2.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	const ghost = "ghost-b.invalid:8448"
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, $2, 600000, $2)`,
		ghost, time.Now().UnixMilli())
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost) })

	planEvt, jobID := prompt(t, admin, roomID, botUser, "!federation reset "+ghost)
	react(t, admin, roomID, planEvt.ID, "✅")
	again := admin.SendText(roomID, "!approve "+jobID)
	reply := admin.WaitFor(wait, "second approval by the same admin", testbed.ReplyTo(botUser, again))
	if body := testbed.Message(reply).Body; !strings.Contains(body, "Approval 1 of 2") {
		t.Errorf("same admin twice: %q", body)
	}
	if st := jobState(t, rb, jobID); st != store.JobAwaiting {
		t.Fatalf("job ran with one admin's approval: %s", st)
	}
	react(t, admin2, roomID, planEvt.ID, "✅")
	waitJobState(t, rb, jobID, store.JobDone)
	if approvers, _ := rb.store.Approvals(ctx, jobID); len(approvers) != 2 {
		t.Errorf("approvers: %v", approvers)
	}
	if d, _ := adm.Destination(ctx, ghost); d == nil || d.Failing() {
		t.Errorf("%s not reset: %+v", ghost, d)
	}

	// Expiry, on a bot whose plans expire after a second. (A new name: Synapse caches the
	// retry state of destinations it has looked up, so rows injected under the old name
	// after its reset would not be seen.)
	const ghost2 = "ghost-c.invalid:8448"
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, $2, 600000, $2)`,
		ghost2, time.Now().UnixMilli())
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost2) })
	botUser2 := newBotAccount(t, tb)
	cfg2 := botConfig(t, tb, botUser2, admin.UserID)
	cfg2.Jobs.ExpireAfter = "1s"
	rb2 := startBot(t, cfg2)
	room2 := roomWithBot(t, admin, botUser2, true)
	_, jobID2 := prompt(t, admin, room2, botUser2, "!federation reset "+ghost2)
	time.Sleep(1500 * time.Millisecond)
	late := admin.SendText(room2, "!approve "+jobID2)
	reply = admin.WaitFor(wait, "answer to a late approval", testbed.ReplyTo(botUser2, late))
	if body := testbed.Message(reply).Body; !strings.Contains(body, "expired") {
		t.Errorf("late approval answer: %q", body)
	}
	if st := jobState(t, rb2, jobID2); st != store.JobExpired {
		t.Errorf("late-approved job is %s", st)
	}
}

// TestExtremities: a room with many forward extremities is listed, shown, and trimmed by an
// approved job with Synapse's own warning in the prompt.
func TestExtremities(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	adm := adminapi.New(admin.Client)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	rb := startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	// A room whose DAG has many tips, as after a netsplit: every message becomes an extremity.
	target := admin.CreateRoom(false)
	var ids []id.EventID
	for i := 0; i < 12; i++ {
		ids = append(ids, admin.SendText(target, fmt.Sprintf("message %d", i)))
	}
	for _, evtID := range ids[:11] {
		tb.HS1.Exec(t, `INSERT INTO event_forward_extremities (event_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, evtID, target)
	}
	if got, err := adm.ForwardExtremities(ctx, target.String()); err != nil || len(got) != 12 {
		t.Fatalf("setup: %d extremities (%v)", len(got), err)
	}

	list := admin.SendText(roomID, "!extremities")
	reply := admin.WaitFor(wait, "!extremities answer", testbed.ReplyTo(botUser, list))
	if body := testbed.Message(reply).Body; !strings.Contains(body, target.String()) || !strings.Contains(body, "| 12 |") {
		t.Errorf("!extremities does not list the room with 12: %q", body)
	}
	detail := admin.SendText(roomID, "!extremities "+target.String())
	reply = admin.WaitFor(wait, "!extremities <room> answer", testbed.ReplyTo(botUser, detail))
	if body := testbed.Message(reply).Body; !strings.Contains(body, "has 12 forward extremities") || !strings.Contains(body, ids[0].String()) {
		t.Errorf("!extremities <room>: %q", body)
	}

	planEvt, jobID := prompt(t, admin, roomID, botUser, "!extremities trim "+target.String())
	if body := testbed.Message(planEvt).Body; !strings.Contains(body, "Under no situations should this API be executed as an automated maintenance task") {
		t.Errorf("the prompt does not quote Synapse's warning: %q", body)
	}
	admin.SendText(roomID, "!approve "+jobID)
	waitJobState(t, rb, jobID, store.JobDone)
	if got, err := adm.ForwardExtremities(ctx, target.String()); err != nil || len(got) != 1 {
		t.Fatalf("after trim: %d extremities (%v)", len(got), err)
	}
	// The room still works.
	admin.SendText(target, "after the trim")
}

// TestUndoCommand: !undo, itself approval-gated, restores exactly the rows a job changed in
// Synapse's database from medic's journal. (The journaled change here is made directly
// through the journal, standing in for a repair; !unreject proves the same end to end.)
func TestUndoCommand(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	cfg.Synapse.DatabaseDSN = tb.HS1.DSN
	rb := startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	jc := newJournaledChange(t, tb, "undo")
	changedJob, row, before := jc.job, jc.row, jc.before
	if row() == before {
		t.Fatal("the journaled change changed nothing")
	}

	planEvt, undoJob := prompt(t, admin, roomID, botUser, "!undo "+changedJob)
	if body := testbed.Message(planEvt).Body; !strings.Contains(body, "1 row(s) of `destinations`") {
		t.Errorf("undo plan: %q", body)
	}
	react(t, admin, roomID, planEvt.ID, "✅")
	waitJobState(t, rb, undoJob, store.JobDone)
	if got := row(); got != before {
		t.Fatalf("undo did not restore the row exactly:\nwant %s\ngot  %s", before, got)
	}
	admin.SendText(roomID, "!undo "+changedJob)
	admin.WaitFor(wait, "the answer to a second undo", fromBotContaining(botUser, "has no changed rows to restore"))
}

// TestStopRunningJob: ⏹ on the progress message stops a running job at its next step.
func TestStopRunningJob(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	rb := startBot(t, botConfig(t, tb, botUser, admin.UserID))
	roomID := roomWithBot(t, admin, botUser, true)
	run := testbed.UniqueName("s")
	var ghosts []string
	for i := 0; i < 300; i++ {
		ghosts = append(ghosts, fmt.Sprintf("%s-%d.stop.test", run, i))
	}
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts)
		SELECT d, 1795000000000, 600000, 1795000000000 FROM unnest($1::text[]) AS d`, ghosts)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination LIKE '%.stop.test'`) })

	planEvt, jobID := prompt(t, admin, roomID, botUser, "!federation reset all")
	react(t, admin, roomID, planEvt.ID, "✅")
	progress := admin.WaitFor(wait, "the progress message", fromBotContaining(botUser, "⏳ Job `"+jobID+"`"))
	react(t, admin, roomID, progress.ID, "⏹")
	waitJobState(t, rb, jobID, store.JobCancelled)
	steps, err := rb.store.Steps(ctx, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 || len(steps) >= len(ghosts) {
		t.Fatalf("%d of %d steps ran before the stop", len(steps), len(ghosts))
	}
	admin.WaitFor(wait, "the report", fromBotContaining(botUser, "Stopped on request"))
	t.Logf("stopped after %d of %d steps", len(steps), len(ghosts))
}

// journaledChange is a destination row changed by a journaled transaction of a made-up job,
// the fixture of the undo tests.
type journaledChange struct {
	job    string
	before string
	row    func() string // the destination row now, as text
}

func newJournaledChange(t *testing.T, tb *testbed.Testbed, name string) *journaledChange {
	t.Helper()
	ctx := context.Background()
	ghost := testbed.UniqueName(name) + ".test"
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, 1795000000123, 600000, 1795000000123)`, ghost)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost) })
	db, err := synapse.OpenDB(ctx, tb.HS1.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	c := &journaledChange{job: "tst" + testbed.UniqueName("")[:3]}
	c.row = func() string {
		var s string
		if err := db.Pool.QueryRow(ctx, `SELECT d::text FROM destinations d WHERE destination = $1`, ghost).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	c.before = c.row()
	if _, err = journal.Apply(ctx, db, c.job, "@admin:test", []journal.RowChange{{
		Table: "destinations", Key: []string{"destination"}, Where: "t.destination = $1", Args: []any{ghost},
		Set: "retry_interval = 0, failure_ts = NULL, retry_last_ts = 0",
	}}, nil); err != nil {
		t.Fatal(err)
	}
	return c
}
