package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/testbed"
)

// roomView is one server's view of a room read from its database: version, depth, forward
// extremities and current state ("type|state_key" → event ID).
type roomView struct {
	version string
	depth   int64
	prev    []string
	state   map[string]string
}

func readRoom(t *testing.T, h *testbed.Homeserver, room id.RoomID) roomView {
	t.Helper()
	v := roomView{state: map[string]string{}}
	h.WithConn(t, func(ctx context.Context, q *pgx.Conn) error {
		if err := q.QueryRow(ctx, `SELECT room_version FROM rooms WHERE room_id = $1`, room).Scan(&v.version); err != nil {
			return err
		}
		if err := q.QueryRow(ctx, `SELECT max(depth) FROM events WHERE room_id = $1`, room).Scan(&v.depth); err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT event_id FROM event_forward_extremities WHERE room_id = $1`, room)
		if err != nil {
			return err
		}
		if v.prev, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		rows, err = q.Query(ctx, `SELECT type || '|' || state_key, event_id FROM current_state_events WHERE room_id = $1`, room)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k, e string
			if err := rows.Scan(&k, &e); err != nil {
				return err
			}
			v.state[k] = e
		}
		return rows.Err()
	})
	return v
}

// joinedRooms is what Element's room list rests on: the user's /joined_rooms.
func joinedRooms(t *testing.T, cli *mautrix.Client) []id.RoomID {
	t.Helper()
	resp, err := cli.JoinedRooms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return resp.JoinedRooms
}

// resetRoom is a state reset on the testbed: a public room on hs2 that alice@hs1 joined, then
// a fork crafted and signed with hs2's key (a join-rules change to invite by hs2's room
// admin, whose prev_events are the room before alice's join) that only hs1 receives. State
// resolution on hs1 applies the join rules first and then finds alice's join unauthorised,
// so alice's membership vanishes from hs1's current state while hs2 (the rest of the room)
// still has her joined and the room public.
type resetRoom struct {
	room  id.RoomID
	fork  string // the crafted join-rules event only hs1 has
	alice *mautrix.Client
}

func newResetRoom(t *testing.T, tb *testbed.Testbed, alice *mautrix.Client, stay ...*mautrix.Client) *resetRoom {
	t.Helper()
	ctx := context.Background()
	remote := tb.Admin(t, tb.HS2)
	resp, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: testbed.UniqueName("reset")})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	// Local users who join before the fork's branch point are in both branches: they stay,
	// and with them the server.
	for _, u := range stay {
		testbed.JoinVia(t, u, room, tb.HS2.Name)
		waitMember(t, tb.HS2, room, u.UserID, "join")
	}
	// alice joins, leaves and joins again: her leave is an event hs1 holds in the room's
	// graph (not an outlier of its first join's state), for the fork to branch from.
	testbed.JoinVia(t, alice, room, tb.HS2.Name)
	waitMember(t, tb.HS2, room, alice.UserID, "join")
	if _, err = alice.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	before := waitMember(t, tb.HS2, room, alice.UserID, "leave")
	testbed.JoinVia(t, alice, room, tb.HS2.Name)
	waitMember(t, tb.HS2, room, alice.UserID, "join")
	admin := remote.UserID.String()
	auth := []string{before.state["m.room.power_levels|"], before.state["m.room.member|"+admin]}
	before.prev = []string{before.state["m.room.member|"+alice.UserID.String()]}
	if before.version != "12" {
		auth = append([]string{before.state["m.room.create|"]}, auth...)
	}
	fork, pdu := testbed.CraftEvent(t, tb.HS2, before.version, map[string]any{
		"type": "m.room.join_rules", "state_key": "", "sender": admin, "room_id": room,
		"content": map[string]any{"join_rule": "invite"}, "auth_events": auth, "prev_events": before.prev,
		"depth": before.depth + 1, "origin_server_ts": time.Now().UnixMilli(),
	})
	fc, err := synapse.NewFederationClient(tb.HS2.Name, tb.HS2.SigningKeyPath(), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = fc.SendTransaction(ctx, &federation.ReqSendTransaction{Destination: tb.HS1.Name, TxnID: testbed.UniqueName("txn"),
		Origin: tb.HS2.Name, PDUs: []federation.PDU{pdu}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if !slices.Contains(joinedRooms(t, alice), room) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the crafted fork did not reset alice's membership on hs1: hs1 state %v", readRoom(t, tb.HS1, room).state)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return &resetRoom{room: room, fork: fork, alice: alice}
}

// waitMember waits until h's current state has user's membership and returns h's view then
// (its depth and extremities are the room's at that membership).
func waitMember(t *testing.T, h *testbed.Homeserver, room id.RoomID, user id.UserID, membership string) roomView {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		v := readRoom(t, h, room)
		if e := v.state["m.room.member|"+user.String()]; e != "" &&
			h.Count(t, `SELECT count(*) FROM room_memberships WHERE event_id = $1 AND membership = $2`, e, membership) == 1 {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not see %s's %s", h.Name, user, membership)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStateAuditHeal is the state audit's acceptance on the testbed: a real state reset
// (alice@hs1 drops out of a room on hs1 only, so her Element no longer lists it) is found by
// `!state audit` (one room, and --all) with the events behind each side and the reset in
// current_state_delta_stream; `!state heal` rejoins her through Synapse; a second audit is
// clean; a room that never diverged is clean from the start.
func TestStateAuditHeal(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	alice := tb.Login(t, tb.HS1, "alice", tb.UserPassword)
	remote := tb.Admin(t, tb.HS2)
	resp, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: testbed.UniqueName("calm")})
	if err != nil {
		t.Fatal(err)
	}
	calm := resp.RoomID
	testbed.JoinVia(t, alice, calm, tb.HS2.Name)
	waitMember(t, tb.HS2, calm, alice.UserID, "join")
	r := newResetRoom(t, tb, alice)
	// What alice sees: hs2 still lists her as joined, her own server does not.
	if slices.Contains(joinedRooms(t, alice), r.room) {
		t.Fatal("alice still sees the reset room")
	}
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)

	out, code := execMedic(t, cfg, "!state audit "+calm.String())
	t.Logf("!state audit calm:\n%s", out)
	if code != 0 || !strings.Contains(out, "clean ✅") || !strings.Contains(out, tb.HS2.Name) {
		t.Fatalf("the calm room is not reported clean (exit %d)", code)
	}

	aliceID := alice.UserID.String()
	out, code = execMedic(t, cfg, "!state audit "+r.room.String())
	t.Logf("!state audit reset:\n%s", out)
	joinID := readRoom(t, tb.HS2, r.room).state["m.room.member|"+aliceID]
	for _, want := range []string{"diverges", "local member missing here", "`" + aliceID + "`", "here has nothing",
		"the room `" + joinID + "` (`join` by `" + aliceID + "`)", "Reset pattern", "still out", "state heal " + r.room.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("!state audit lacks %q", want)
		}
	}
	if code != 0 || t.Failed() {
		t.Fatalf("!state audit does not report the reset (exit %d)", code)
	}
	out, code = execMedic(t, cfg, "!state audit --all")
	t.Logf("!state audit --all:\n%s", out)
	if code != 0 || !strings.Contains(out, "**`"+r.room.String()+"`** diverges") || strings.Contains(out, calm.String()) {
		t.Fatalf("!state audit --all does not list the reset room alone (exit %d)", code)
	}

	// The daily health check flags the room, critical (a local user lost it), with the fix.
	out, code = execMedic(t, cfg, "!health state")
	t.Logf("!health state:\n%s", out)
	if !strings.Contains(out, "CRITICAL") || !strings.Contains(out, r.room.String()) || !strings.Contains(out, "state heal "+r.room.String()) {
		t.Fatal("the state health check does not flag the reset room")
	}

	out, code = execMedic(t, cfg, "--yes", "!state heal "+r.room.String())
	t.Logf("!state heal:\n%s", out)
	if code != 0 || !strings.Contains(out, "Rejoin 1 local user(s)") || !strings.Contains(out, aliceID) {
		t.Fatalf("!state heal did not plan and run alice's rejoin (exit %d)", code)
	}
	for deadline := time.Now().Add(30 * time.Second); !slices.Contains(joinedRooms(t, alice), r.room); {
		if time.Now().After(deadline) {
			t.Fatal("alice does not see the room after !state heal")
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitMember(t, tb.HS2, r.room, alice.UserID, "join")
	out, code = execMedic(t, cfg, "!state audit "+r.room.String())
	t.Logf("!state audit after heal:\n%s", out)
	if code != 0 || !strings.Contains(out, "clean ✅") || !strings.Contains(out, "joined again since") {
		t.Fatalf("the healed room is not clean (exit %d)", code)
	}
	out, _ = execMedic(t, cfg, "--yes", "!state heal "+r.room.String())
	if !strings.Contains(out, "nothing to heal") {
		t.Fatalf("a second !state heal plans something:\n%s", out)
	}
}

// TestStateHealAdvice: a reset where the server stays in the room (carol@hs1 joined before
// the fork, so she is in both branches): alice is reset to her older leave and the join rule
// here is the fork's invite while the room is public. The audit reports both with the
// events behind each side; the heal plan rejoins alice and says what a room admin should do
// about the join rule, warning that Synapse authorises the rejoin against its own diverging
// state (and so it is refused: "not invited"). Once the room admin re-sends the join rule as
// the plan says, state resolution here brings alice back by itself: healing again finds
// nothing to do and the audit is clean.
func TestStateHealAdvice(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	alice := tb.Login(t, tb.HS1, "alice", tb.UserPassword)
	carol := tb.Register(t, tb.HS1, testbed.UniqueName("carol"), false)
	r := newResetRoom(t, tb, alice, carol)
	if !slices.Contains(joinedRooms(t, carol), r.room) {
		t.Fatal("carol was reset out too")
	}
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	aliceID := alice.UserID.String()
	out, code := execMedic(t, cfg, "!state audit "+r.room.String())
	t.Logf("!state audit:\n%s", out)
	for _, want := range []string{"local member missing here", "`" + aliceID + "`: here `", "(`leave` by `" + aliceID + "`)",
		"join rules differ", "here `" + r.fork + "` (`invite`)", "(`public`)", "older event"} {
		if !strings.Contains(out, want) {
			t.Errorf("!state audit lacks %q", want)
		}
	}
	if code != 0 || t.Failed() {
		t.Fatalf("!state audit does not report the divergence (exit %d)", code)
	}

	out, _ = execMedic(t, cfg, "--yes", "!state heal "+r.room.String())
	t.Logf("!state heal:\n%s", out)
	if !strings.Contains(out, "Rejoin 1 local user(s)") || !strings.Contains(out, "Not changed by medic: `m.room.join_rules`:") ||
		!strings.Contains(out, "an identical event is not sent again") || !strings.Contains(out, "its own diverging state") {
		t.Fatal("the heal plan does not say what to do about the join rule")
	}
	healed := slices.Contains(joinedRooms(t, alice), r.room)
	t.Logf("alice rejoined by the first heal: %v", healed)

	// The room admin does what the plan says: re-sends the join rule, changed (Synapse does
	// not send an event identical to the current state again).
	remote := tb.Admin(t, tb.HS2)
	if _, err := remote.SendStateEvent(ctx, r.room, event.StateJoinRules, "", map[string]any{"join_rule": "public", "resync": 1}); err != nil {
		t.Fatal(err)
	}
	jr := readRoom(t, tb.HS2, r.room).state["m.room.join_rules|"]
	for deadline := time.Now().Add(30 * time.Second); readRoom(t, tb.HS1, r.room).state["m.room.join_rules|"] != jr; {
		if time.Now().After(deadline) {
			t.Fatal("hs1 did not take the re-sent join rule")
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, _ = execMedic(t, cfg, "--yes", "!state heal "+r.room.String())
	t.Logf("!state heal again:\n%s", out)
	for deadline := time.Now().Add(30 * time.Second); !slices.Contains(joinedRooms(t, alice), r.room); {
		if time.Now().After(deadline) {
			t.Fatal("alice does not see the room after the join rule was re-sent and the room healed again")
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitMember(t, tb.HS2, r.room, alice.UserID, "join")
	out, code = execMedic(t, cfg, "!state audit "+r.room.String())
	t.Logf("!state audit at the end:\n%s", out)
	if code != 0 || !strings.Contains(out, "clean ✅") {
		t.Fatalf("the room is not clean at the end (exit %d)", code)
	}
}
