package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

func joinVia(t *testing.T, cli *mautrix.Client, roomID id.RoomID, via string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cli.JoinRoom(context.Background(), roomID.String(), &mautrix.ReqJoinRoom{Via: []string{via}})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s join %s: %v", cli.UserID, roomID, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

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
	joinVia(t, alice, public.RoomID, tb.HS2.Name)
	joinVia(t, bob, public.RoomID, tb.HS2.Name)
	joinVia(t, alice, invited.RoomID, tb.HS2.Name)
	joinVia(t, alice, v12.RoomID, tb.HS2.Name)

	tb.Restore(t, tb.HS1, dump)
	rooms := []id.RoomID{public.RoomID, invited.RoomID, v12.RoomID}
	for _, r := range rooms {
		if _, err = remote.SendMessageEvent(ctx, r, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "anyone there?"}); err != nil {
			t.Fatal(err)
		}
	}

	cfg := writeConfig(t, fmt.Sprintf(`
homeserver: {url: %q, server_name: %q}
bot: {user_id: "@medic:%s", password: %q}
admins: ["@admin:%s"]
synapse:
  database: %q
  signing_key_path: %q
  logs: [{type: file, path: %q}]
federation: {dangerously_allow_loopback_and_self_signed_testing_only: true}
`, tb.HS1.URL, tb.HS1.Name, tb.HS1.Name, tb.MedicPassword, tb.HS1.Name, tb.HS1.DSN, tb.HS1.SigningKeyPath(), tb.HS1.LogPath()+"*"))

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
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
