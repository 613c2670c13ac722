package main

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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
	dump := filepath.Join(t.TempDir(), "hs1.dump")
	tb.Dump(t, tb.HS1, dump)

	// An invite-only room: every rejoin must go through a minted token (no admin join).
	remote := tb.Admin(t, tb.HS2)
	room, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if _, err = remote.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: u.UserID}); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		joinHonouring429(t, u, room.RoomID, tb.HS2.Name)
	}
	tb.Restore(t, tb.HS1, dump)
	if _, err = remote.SendMessageEvent(ctx, room.RoomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "hi"}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	p := &medicProcess{bin: buildMedic(t), cfg: tb.MedicConfig(t, dir, tb.HS1.UserID("medic"), tb.MedicPassword), dataDir: filepath.Join(dir, "data")}
	p.cmd = exec.Command(p.bin, "exec", "-c", p.cfg, "--yes", "!recover room "+room.RoomID.String()+" via "+tb.HS2.Name)
	var out testbed.Buffer
	p.cmd.Stdout, p.cmd.Stderr = &out, &out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("medic output:\n%s", out.String())
		}
	})
	if err = p.cmd.Start(); err != nil {
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
	if code := run([]string{"exec", "-c", p.cfg, "!jobs"}, nil, os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("restart exit %d", code)
	}
	if n := inFlight(); n != 0 {
		t.Errorf("%d tokens still recorded after restart", n)
	}
	if n := live(); n != 0 {
		t.Errorf("%d minted tokens are still valid after restart", n)
	}
}
