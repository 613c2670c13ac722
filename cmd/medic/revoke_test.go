package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

// joinHonouring429 joins as a user, waiting as long as Synapse asks on 429.
func joinHonouring429(t *testing.T, cli *mautrix.Client, roomID id.RoomID, via string) {
	t.Helper()
	for attempt := 0; attempt < 60; attempt++ {
		_, err := cli.JoinRoom(context.Background(), roomID.String(), &mautrix.ReqJoinRoom{Via: []string{via}})
		var httpErr mautrix.HTTPError
		if err == nil {
			return
		} else if !errors.As(err, &httpErr) || httpErr.RespError == nil || httpErr.RespError.ErrCode != "M_LIMIT_EXCEEDED" {
			t.Fatalf("%s join: %v", cli.UserID, err)
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s could not join", cli.UserID)
}

// forgottenPrivateRoom is incident 1 with an invite-only room (so every rejoin goes through a
// minted token, never the admin join): after a dump of hs1, hs2 invites the users and they
// join; then hs1's database is restored. It returns the room and hs2's admin.
func forgottenPrivateRoom(t *testing.T, tb *testbed.Testbed, users []*mautrix.Client) (*mautrix.RespCreateRoom, *mautrix.Client) {
	t.Helper()
	ctx := context.Background()
	dump := filepath.Join(t.TempDir(), "hs1.dump")
	tb.Dump(t, tb.HS1, dump)
	remote := tb.Admin(t, tb.HS2)
	room, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(users))
	for i, u := range users {
		if _, err = remote.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: u.UserID}); err != nil {
			t.Fatal(err)
		}
		ids[i] = u.UserID.String()
	}
	for _, u := range users {
		joinHonouring429(t, u, room.RoomID, tb.HS2.Name)
	}
	// Joins after the first are local to hs1 (already in the room) and reach hs2 by federation
	// transactions: wait for them before the restore throws hs1's queue away.
	waitRows(t, tb.HS2, len(users), "hs2 has every join", `SELECT count(*) FROM current_state_events c JOIN room_memberships m USING (event_id)
		WHERE c.room_id = $1 AND m.membership = 'join' AND c.state_key = ANY($2)`, room.RoomID, ids)
	tb.Restore(t, tb.HS1, dump)
	return room, remote
}

// TestRecoverKillRevokesTokens kills medic (SIGKILL) while it joins users with minted tokens;
// the next start logs every such token out.
func TestRecoverKillRevokesTokens(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	const n = 25
	var users []*mautrix.Client
	var ids []string
	for i := 0; i < n; i++ {
		u := tb.Register(t, tb.HS1, testbed.UniqueName("k"), false)
		users = append(users, u)
		ids = append(ids, u.UserID.String())
	}
	room, remote := forgottenPrivateRoom(t, tb, users)
	if _, err := remote.SendMessageEvent(ctx, room.RoomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "hi"}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	p := &medicProcess{bin: testbed.MedicBinary(t), cfg: tb.MedicConfig(t, dir, tb.HS1.UserID("medic"), tb.MedicPassword), dataDir: filepath.Join(dir, "data")}
	p.cmd = exec.Command(p.bin, "exec", "-c", p.cfg, "--yes", "!recover room "+room.RoomID.String()+" via "+tb.HS2.Name)
	var out testbed.Buffer
	p.cmd.Stdout, p.cmd.Stderr = &out, &out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("medic output:\n%s", out.String())
		}
	})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })

	db, err := sql.Open("sqlite3-fk-wal", "file:"+filepath.Join(p.dataDir, "medic.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	inFlight := func() int {
		var c int
		_ = db.QueryRow(`SELECT count(*) FROM minted_token`).Scan(&c)
		return c
	}
	live := func() int {
		return tb.HS1.Count(t, `SELECT count(*) FROM access_tokens WHERE puppets_user_id = ANY($1)`, ids)
	}
	// Kill while Synapse holds a live minted token (between its login and its logout).
	for deadline := time.Now().Add(90 * time.Second); live() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("medic never minted a token")
		}
	}
	p.kill(t)
	left, stillLive := inFlight(), live()
	t.Logf("killed with %d recorded tokens, %d live minted tokens in Synapse", left, stillLive)
	if stillLive == 0 {
		t.Fatal("no minted token was live at the kill")
	}

	// Any start of medic logs them out (here the terminal; the bot does the same).
	var stdout, stderr bytes.Buffer
	if code := run([]string{"exec", "-c", p.cfg, "!jobs"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("restart exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if n := inFlight(); n != 0 {
		t.Errorf("%d tokens still recorded after restart", n)
	}
	if n := live(); n != 0 {
		t.Errorf("%d minted tokens are still valid after restart", n)
	}
}

// TestRecoverReplansOnHostApproval changes the room between the plan and the approval on the
// terminal (hs2 bans one of the users after the plan was shown): the approval re-plans, so the
// old plan never runs; the changed plan is shown and asked again, and once approved it
// rejoins the other user only. No minted token stays valid.
//
// Before the spine redesign the terminal ran the stale plan without checking it again, so
// the banned user's join failed mid-job (this test then checked that the token minted for
// that failed join was logged out; minted tokens are still checked below).
func TestRecoverReplansOnHostApproval(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	banned := tb.Register(t, tb.HS1, testbed.UniqueName("fb"), false)
	fine := tb.Register(t, tb.HS1, testbed.UniqueName("ff"), false)
	ids := []string{banned.UserID.String(), fine.UserID.String()}
	room, remote := forgottenPrivateRoom(t, tb, []*mautrix.Client{banned, fine})

	dir := t.TempDir()
	cfg := tb.MedicConfig(t, dir, tb.HS1.UserID("medic"), tb.MedicPassword)
	stdin, answer := io.Pipe()
	var out testbed.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"exec", "-c", cfg, "!recover room " + room.RoomID.String() + " via " + tb.HS2.Name}, stdin, &out, &out)
	}()
	t.Cleanup(func() { _ = answer.Close() })
	waitPrompt := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); strings.Count(out.String(), "Approve? [y/N]") < n; {
			if time.Now().After(deadline) {
				t.Fatalf("no approval prompt %d:\n%s", n, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitPrompt(1)
	plan := out.String()
	if !strings.Contains(plan, banned.UserID.String()) && !strings.Contains(plan, "2 users") {
		t.Fatalf("the plan does not rejoin both users:\n%s", plan)
	}
	// Between the plan and the approval, hs2 bans one of them.
	if _, err := remote.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: banned.UserID, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(answer, "y\n"); err != nil {
		t.Fatal(err)
	}
	waitPrompt(2)
	if second := out.String()[len(plan):]; !strings.Contains(second, "The situation changed") || !strings.Contains(second, "1 banned") {
		t.Fatalf("the approval did not re-plan:\n%s", second)
	}
	if _, err := io.WriteString(answer, "y\n"); err != nil {
		t.Fatal(err)
	}
	code := <-done
	report := out.String()
	t.Logf("medic output:\n%s", report)
	if code != 0 || !strings.Contains(report, "1 of 1 steps done") {
		t.Fatalf("the new plan did not run cleanly (exit %d)", code)
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND user_id = $2 AND membership = 'join'`, room.RoomID, fine.UserID); n != 1 {
		t.Errorf("%s was not rejoined", fine.UserID)
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND user_id = $2 AND membership = 'join'`, room.RoomID, banned.UserID); n != 0 {
		t.Errorf("%s, banned before the approval, was joined", banned.UserID)
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM access_tokens WHERE puppets_user_id = ANY($1)`, ids); n != 0 {
		t.Errorf("%d minted tokens are still valid", n)
	}
}
