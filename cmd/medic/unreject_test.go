package main

import (
	"context"
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

func waitRows(t *testing.T, h *testbed.Homeserver, want int, what, sql string, args ...any) {
	t.Helper()
	testbed.WaitRows(t, h, want, what, sql, args...)
}

// legitRejection delivers to hs1, over federation signed by hs2, a power-levels change by a
// user without the power, which hs1 rightly rejects.
func legitRejection(t *testing.T, tb *testbed.Testbed) (id.RoomID, string) {
	t.Helper()
	ctx := context.Background()
	remote := tb.Admin(t, tb.HS2)
	bob := tb.Login(t, tb.HS2, "bob", tb.UserPassword)
	alice := tb.Login(t, tb.HS1, "alice", tb.UserPassword)
	resp, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: testbed.UniqueName("legit")})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	testbed.JoinVia(t, bob, room, tb.HS2.Name)
	testbed.JoinVia(t, alice, room, tb.HS2.Name)
	var version string
	var depth int64
	var prev []string
	auth := map[string]string{}
	for deadline := time.Now().Add(30 * time.Second); ; {
		// hs2's view: the latest event must be alice's join, which hs1 has.
		tb.HS2.WithConn(t, func(ctx context.Context, q *pgx.Conn) error {
			if err := q.QueryRow(ctx, `SELECT room_version FROM rooms WHERE room_id = $1`, room).Scan(&version); err != nil {
				return err
			}
			if err := q.QueryRow(ctx, `SELECT max(depth) FROM events WHERE room_id = $1`, room).Scan(&depth); err != nil {
				return err
			}
			rows, err := q.Query(ctx, `SELECT event_id FROM event_forward_extremities WHERE room_id = $1`, room)
			if err != nil {
				return err
			}
			prev = prev[:0]
			for rows.Next() {
				var e string
				_ = rows.Scan(&e)
				prev = append(prev, e)
			}
			rows.Close()
			rows, err = q.Query(ctx, `SELECT type || '|' || state_key, event_id FROM current_state_events WHERE room_id = $1`, room)
			if err != nil {
				return err
			}
			for rows.Next() {
				var k, e string
				_ = rows.Scan(&k, &e)
				auth[k] = e
			}
			rows.Close()
			return nil
		})
		if auth["m.room.member|"+alice.UserID.String()] != "" && len(prev) == 1 && tb.HS1.Count(t, `SELECT count(*) FROM events WHERE event_id = $1`, prev[0]) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("room did not settle")
		}
		time.Sleep(300 * time.Millisecond)
	}
	authEvents := []string{auth["m.room.power_levels|"], auth["m.room.member|"+bob.UserID.String()]}
	if version != "12" {
		authEvents = append([]string{auth["m.room.create|"]}, authEvents...)
	}
	var pl map[string]any
	if err = remote.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	users, _ := pl["users"].(map[string]any)
	users[bob.UserID.String()] = 100 // bob has 0: he may not do this
	eventID, pdu := testbed.CraftEvent(t, tb.HS2, version, map[string]any{
		"type": "m.room.power_levels", "state_key": "", "sender": bob.UserID, "room_id": room, "content": pl,
		"auth_events": authEvents, "prev_events": prev, "depth": depth + 1, "origin_server_ts": time.Now().UnixMilli(),
	})
	fc, err := synapse.NewFederationClient(tb.HS2.Name, tb.HS2.SigningKeyPath(), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = fc.SendTransaction(ctx, &federation.ReqSendTransaction{Destination: tb.HS1.Name, TxnID: testbed.UniqueName("txn"),
		Origin: tb.HS2.Name, PDUs: []federation.PDU{pdu}}); err != nil {
		t.Fatal(err)
	}
	waitRows(t, tb.HS1, 1, "hs1 rejected the crafted power-levels event", `SELECT count(*) FROM rejections WHERE event_id = $1`, eventID)
	return room, eventID
}

// rejectionRows is a byte-exact image of every rejected event row and every rejections row.
func rejectionRows(t *testing.T, h *testbed.Homeserver) string {
	t.Helper()
	var out string
	h.WithConn(t, func(ctx context.Context, q *pgx.Conn) error {
		return q.QueryRow(ctx, `SELECT
			coalesce((SELECT string_agg(to_jsonb(e)::text, E'\n' ORDER BY e.event_id) FROM events e WHERE e.rejection_reason IS NOT NULL), '') || E'\n--\n' ||
			coalesce((SELECT string_agg(to_jsonb(r)::text, E'\n' ORDER BY r.event_id) FROM rejections r), '')`).Scan(&out)
	})
	return out
}

func execMedic(t *testing.T, cfg string, args ...string) (string, int) {
	t.Helper()
	var out testbed.Buffer
	code := run(append([]string{"exec", "-c", cfg}, args...), nil, &out, &out)
	return out.String(), code
}

func TestUnrejectPoisonedRoom(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	p := testbed.StagePoisonedRoom(t, tb, 3)
	legitRoom, legitEvent := legitRejection(t, tb)
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)

	// Diagnosis: the poisoned room, with the power-levels event as the root.
	out, code := execMedic(t, cfg, "!rejected --since 1h")
	t.Logf("!rejected:\n%s", out)
	if code != 0 || !strings.Contains(out, p.Room.String()) || !strings.Contains(out, "Chain root `"+p.PowerLevels.String()+"` (`m.room.power_levels`") ||
		!strings.Contains(out, "3 later event(s)") {
		t.Fatalf("!rejected does not show the chain (exit %d)", code)
	}
	if !strings.Contains(out, "found rejected event `"+p.PowerLevels.String()+"` in the state\" line(s)") {
		t.Errorf("!rejected does not quote the log lines")
	}

	// The legitimate rejection is refused by the verification, with or without --root.
	out, _ = execMedic(t, cfg, "--yes", "!unreject "+legitRoom.String()+" --root "+legitEvent)
	t.Logf("!unreject legit:\n%s", out)
	if !strings.Contains(out, "Verification refuses") || !strings.Contains(out, legitEvent) || !strings.Contains(out, "rule 10") && !strings.Contains(out, "rule 8") {
		t.Fatalf("the legitimate rejection was not refused by the auth rules")
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM rejections WHERE event_id = $1`, legitEvent); n != 1 {
		t.Fatal("the legitimate rejection changed")
	}

	before := rejectionRows(t, tb.HS1)
	out, code = execMedic(t, cfg, "--yes", "!unreject "+p.Room.String())
	t.Logf("!unreject:\n%s", out)
	if code != 0 || !strings.Contains(out, "Un-reject 4 event(s)") || !strings.Contains(out, "element-hq/synapse#13797") ||
		!strings.Contains(out, "Synapse 1.") || !strings.Contains(out, "Post-check") {
		t.Fatalf("!unreject failed (exit %d)", code)
	}
	m := jobIDPattern.FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no job ID in the output")
	}
	jobID := m[1]

	// Only the chain changed: the legitimate rejection and every other row are as before.
	after := rejectionRows(t, tb.HS1)
	for _, e := range p.ChainIDs {
		if strings.Contains(after, e) {
			t.Errorf("%s is still rejected", e)
		}
	}
	var kept []string
	for _, line := range strings.Split(before, "\n") {
		inChain := false
		for _, e := range p.ChainIDs {
			inChain = inChain || strings.Contains(line, `"`+e+`"`)
		}
		if !inChain {
			kept = append(kept, line)
		}
	}
	stripped := strings.Join(kept, "\n")
	if stripped != after {
		t.Errorf("rows outside the chain changed:\nbefore (chain removed):\n%s\nafter:\n%s", stripped, after)
	}

	// alice@hs1 sees the lost messages when paginating, and new messages arrive.
	seen := func() map[string]bool {
		msgs, err := p.Alice.Messages(ctx, p.Room, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, ev := range msgs.Chunk {
			if body, ok := ev.Content.Raw["body"].(string); ok {
				got[body] = true
			}
		}
		return got
	}
	got := seen()
	for _, body := range p.Lost {
		if !got[body] {
			t.Errorf("alice does not see %q after the repair", body)
		}
	}
	fresh := "after the repair " + testbed.UniqueName("")
	if _, err := p.Remote.SendMessageEvent(ctx, p.Room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: fresh}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); !seen()[fresh]; {
		if time.Now().After(deadline) {
			t.Fatal("a new message from hs2 did not reach alice@hs1")
		}
		time.Sleep(500 * time.Millisecond)
	}

	// !undo restores the rows byte for byte.
	out, code = execMedic(t, cfg, "--yes", "!undo "+jobID)
	t.Logf("!undo:\n%s", out)
	if code != 0 {
		t.Fatalf("!undo failed (exit %d)", code)
	}
	if restored := rejectionRows(t, tb.HS1); restored != before {
		t.Errorf("undo did not restore the rows exactly:\nbefore:\n%s\nafter undo:\n%s", before, restored)
	}
	tb.Restart(t, tb.HS1) // drop Synapse's caches of the re-rejected events
}

// TestUnrejectKilled kills medic at points inside and around the repair's transaction: the
// room is never half-changed, and the job resumes from where it stopped.
func TestUnrejectKilled(t *testing.T) {
	tb := testbed.Get(t)
	p := testbed.StagePoisonedRoom(t, tb, 2)
	bin := testbed.MedicBinary(t)
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	state := func() (events, rejections int) {
		return tb.HS1.Count(t, `SELECT count(*) FROM events WHERE event_id = ANY($1) AND rejection_reason IS NOT NULL`, p.ChainIDs),
			tb.HS1.Count(t, `SELECT count(*) FROM rejections WHERE event_id = ANY($1)`, p.ChainIDs)
	}
	all := len(p.ChainIDs)
	var jobID string
	for _, point := range []string{"before changing events", "after changing events", "after changing rejections", "before commit", "before restart"} {
		out := execKilledAt(t, bin, cfg, "!unreject "+p.Room.String(), point)
		ev, rej := state()
		t.Logf("killed at %q: %d/%d events and %d/%d rejections rows still rejected", point, ev, all, rej, all)
		if point == "before restart" {
			if ev != 0 || rej != 0 {
				t.Fatalf("committed change is not complete after a kill at %q", point)
			}
			if m := jobIDPattern.FindStringSubmatch(out); m != nil {
				jobID = m[1]
			}
		} else if ev != all || rej != all {
			t.Fatalf("half-changed room after a kill at %q: %d events, %d rejections rows of %d", point, ev, rej, all)
		}
	}
	if jobID == "" {
		t.Fatal("no job ID")
	}
	// The committed job resumes with the restart and the post-check.
	out, code := execMedic(t, cfg, "--yes", "!resume "+jobID)
	t.Logf("!resume:\n%s", out)
	if code != 0 || !strings.Contains(out, "back up after the restart") {
		t.Fatalf("resume did not finish the job (exit %d)", code)
	}
	if ev, rej := state(); ev != 0 || rej != 0 {
		t.Fatalf("after resume: %d events, %d rejections rows still rejected", ev, rej)
	}
}

// TestUnrejectAsksForRestart: without a restart command medic asks the admin to restart
// Synapse, waits until it has gone down and come back, and only then runs the post-check.
func TestUnrejectAsksForRestart(t *testing.T) {
	tb := testbed.Get(t)
	p := testbed.StagePoisonedRoom(t, tb, 1)
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	testbed.ClearRestartCommand(t, cfg)
	var out testbed.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"exec", "-c", cfg, "--yes", "!unreject " + p.Room.String()}, nil, &out, &out)
	}()
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(out.String(), "Restart Synapse now"); {
		if time.Now().After(deadline) {
			t.Fatalf("medic did not ask for a restart:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// It waits: no post-check before the restart.
	time.Sleep(3 * time.Second)
	if strings.Contains(out.String(), "Post-check") {
		t.Fatalf("medic went on without the restart:\n%s", out.String())
	}
	tb.Restart(t, tb.HS1)
	code := <-done
	t.Logf("output:\n%s", out.String())
	if code != 0 || !strings.Contains(out.String(), "back up after the restart") || !strings.Contains(out.String(), "Post-check") {
		t.Fatalf("the job did not finish after the restart (exit %d)", code)
	}
}
