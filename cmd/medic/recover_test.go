package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

// TestRecoverScanAfterRestore is incident 1 on the testbed: hs1's users join rooms on hs2
// after a backup; hs1's database is restored from it; hs2 keeps talking. `!recover scan`
// must list every one of those rooms with hs2 as the origin.
func TestRecoverScanAfterRestore(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	alice := tb.Register(t, tb.HS1, testbed.UniqueName("alice"), false)
	bob := tb.Register(t, tb.HS1, testbed.UniqueName("bob"), false)
	remote := tb.Admin(t, tb.HS2)

	// Invited before the backup: after the restore hs1 knows this room, but nobody is in it.
	invited, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "invite-only", Invite: []id.UserID{alice.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); tb.HS1.Count(t,
		`SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND user_id = $2 AND membership = 'invite'`,
		invited.RoomID, alice.UserID) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the invite never reached hs1")
		}
		time.Sleep(200 * time.Millisecond)
	}
	dump := filepath.Join(t.TempDir(), "hs1.dump")
	tb.Dump(t, tb.HS1, dump)

	public, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "public"})
	if err != nil {
		t.Fatal(err)
	}
	v12, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "v12", RoomVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(v12.RoomID.String(), ":") {
		t.Fatalf("room version 12 ID has a server part: %s", v12.RoomID)
	}
	carol := tb.Register(t, tb.HS1, testbed.UniqueName("carol"), false) // created after the backup
	testbed.JoinVia(t, alice, public.RoomID, tb.HS2.Name)
	testbed.JoinVia(t, bob, public.RoomID, tb.HS2.Name)
	testbed.JoinVia(t, carol, public.RoomID, tb.HS2.Name)
	testbed.JoinVia(t, alice, invited.RoomID, tb.HS2.Name)
	testbed.JoinVia(t, alice, v12.RoomID, tb.HS2.Name)

	tb.Restore(t, tb.HS1, dump)
	rooms := []id.RoomID{public.RoomID, invited.RoomID, v12.RoomID}
	for _, r := range rooms {
		if _, err = remote.SendMessageEvent(ctx, r, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "anyone there?"}); err != nil {
			t.Fatal(err)
		}
	}

	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)

	// hs2 delivers over federation at its own pace: scan until every room shows up.
	var out string
	for deadline := time.Now().Add(90 * time.Second); ; {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"exec", "-c", cfg, "!recover scan --since 1h"}, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
		}
		out = stdout.String()
		all := true
		for _, r := range rooms {
			all = all && strings.Contains(out, r.String())
		}
		if all || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	for _, r := range rooms {
		line := lineWith(out, r.String())
		if line == "" {
			t.Errorf("room %s not listed:\n%s", r, out)
			continue
		}
		if !strings.Contains(line, tb.HS2.Name) {
			t.Errorf("room %s listed without %s as origin: %s", r, tb.HS2.Name, line)
		}
	}
	if l := lineWith(out, public.RoomID.String()); !strings.Contains(l, "unknown to Synapse") {
		t.Errorf("public room state: %s", l)
	}
	if l := lineWith(out, invited.RoomID.String()); !strings.Contains(l, "known, no local member joined") {
		t.Errorf("invited room state: %s", l)
	}
	t.Logf("scan output:\n%s", out)

	// One room, asking hs1 itself first: it has forgotten the room and says so; the plan
	// moves on to hs2 and reports who answered what. Declined at the prompt: nothing runs.
	var stdout, stderr bytes.Buffer
	code := run([]string{"exec", "-c", cfg, "!recover room " + public.RoomID.String() + " via " + tb.HS1.Name},
		strings.NewReader("n\n"), &stdout, &stderr)
	plan := stdout.String()
	if code == 0 || !strings.Contains(plan, "Cancelled; nothing was changed") {
		t.Fatalf("declined recovery: exit %d\n%s%s", code, plan, stderr.String())
	}
	if !strings.Contains(plan, tb.HS1.Name+": 40") || !strings.Contains(plan, tb.HS2.Name+": state at") {
		t.Errorf("the plan does not say which server answered what:\n%s", plan)
	}
	if !strings.Contains(plan, "missing locally, not created: `"+carol.UserID.String()+"`") {
		t.Errorf("the plan does not report the user missing since the restore:\n%s", plan)
	}
	for _, u := range []id.UserID{alice.UserID, bob.UserID} {
		if !strings.Contains(plan, u.String()) {
			t.Errorf("the plan does not list %s:\n%s", u, plan)
		}
	}

	// Everything, approved with --yes: every local member is back in every room.
	stdout.Reset()
	stderr.Reset()
	if code = run([]string{"exec", "-c", cfg, "--yes", "!recover all --since 1h"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("recover all: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	t.Logf("recover all:\n%s", stdout.String())
	members := map[id.RoomID][]id.UserID{public.RoomID: {alice.UserID, bob.UserID}, invited.RoomID: {alice.UserID}, v12.RoomID: {alice.UserID}}
	for room, users := range members {
		for _, u := range users {
			if n := tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND user_id = $2 AND membership = 'join'`, room, u); n != 1 {
				t.Errorf("%s is not joined to %s after recovery", u, room)
			}
		}
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM users WHERE name = $1`, carol.UserID); n != 0 {
		t.Errorf("the missing user was created")
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM access_tokens WHERE puppets_user_id = ANY($1)`,
		[]string{alice.UserID.String(), bob.UserID.String()}); n != 0 {
		t.Errorf("%d minted tokens are still valid", n)
	}
	// A second run has nothing to do.
	stdout.Reset()
	if code = run([]string{"exec", "-c", cfg, "--yes", "!recover all --since 1h"}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "Nothing to rejoin") {
		t.Errorf("second run: exit %d\n%s", code, stdout.String())
	}

	// hs2's next message reaches alice through /sync.
	aliceSync := testbed.Syncing(t, alice)
	msg, err := remote.SendMessageEvent(ctx, public.RoomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "welcome back"})
	if err != nil {
		t.Fatal(err)
	}
	aliceSync.WaitFor(60*time.Second, "hs2's message after recovery", func(evt *event.Event) bool { return evt.ID == msg.EventID })
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
