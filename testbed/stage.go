package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/synapse/adminapi"
)

// The three incidents medic heals, staged on the testbed (docs/incidents.md): the tests of
// each repair and `make demo` (testbed/stage) use these, so the demo shows what the tests
// prove.

// WaitRows polls a count query on h's database until it returns want (90 s at most).
func WaitRows(t T, h *Homeserver, want int, what, sql string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		n := h.Count(t, sql, args...)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d rows, want %d", what, n, want)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// ForgottenRoom is incident 1: a room on hs2 that a user of hs1 joined after the backup hs1's
// database was then restored from. hs1 has forgotten the room and drops hs2's traffic for it.
type ForgottenRoom struct {
	Room   id.RoomID
	User   *mautrix.Client // the member on hs1 (a fresh user, registered before the backup)
	Remote *mautrix.Client // hs2's admin, who created the room
	tb     *Testbed
}

// StageForgottenRoom dumps hs1's database, has a new user join a new room on hs2, restores
// the dump (Synapse stopped and started), and has hs2 speak in the room until hs1's log shows
// it dropping the traffic. hs1 restarts: run it before starting medic.
func StageForgottenRoom(t T, tb *Testbed) *ForgottenRoom {
	t.Helper()
	ctx := context.Background()
	f := &ForgottenRoom{User: tb.Register(t, tb.HS1, UniqueName("alice"), false), Remote: tb.Admin(t, tb.HS2), tb: tb}
	dump := filepath.Join(t.TempDir(), "hs1.dump")
	tb.Dump(t, tb.HS1, dump)
	room, err := f.Remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: UniqueName("forgotten")})
	if err != nil {
		t.Fatal(err)
	}
	f.Room = room.RoomID
	f.join(t)
	tb.Restore(t, tb.HS1, dump)
	f.WaitDropped(t)
	return f
}

// join joins the user to the room via hs2, retrying for a minute while federation settles.
func (f *ForgottenRoom) join(t T) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		_, err := f.User.JoinRoom(context.Background(), f.Room.String(), &mautrix.ReqJoinRoom{Via: []string{f.tb.HS2.Name}})
		if err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("join %s: %v", f.Room, err)
		}
	}
}

// Say has hs2's admin send a message in the room.
func (f *ForgottenRoom) Say(t T, body string) {
	t.Helper()
	if _, err := f.Remote.SendText(context.Background(), f.Room, body); err != nil {
		t.Fatalf("hs2 says %q in %s: %v", body, f.Room, err)
	}
}

// WaitDropped has hs2 speak in the room (and drop its backoff from hs1, which was down for
// the restore) until hs1's log shows it ignoring the room's traffic.
func (f *ForgottenRoom) WaitDropped(t T) {
	t.Helper()
	log := f.tb.HS1.LogPath()
	start := fileSize(log)
	for deadline := time.Now().Add(90 * time.Second); ; {
		_ = adminapi.New(f.Remote).ResetConnection(context.Background(), f.tb.HS1.Name)
		f.Say(t, "anyone there?")
		for until := time.Now().Add(5 * time.Second); time.Now().Before(until); time.Sleep(250 * time.Millisecond) {
			if bytes.Contains(tail(log, start), []byte(f.Room.String())) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("hs1's log never showed hs2's traffic for the forgotten room %s", f.Room)
		}
	}
}

// Rejoin logs the user in again (its session may not have survived the restore) and joins
// the room again: the manual fix.
func (f *ForgottenRoom) Rejoin(t T) {
	t.Helper()
	f.User = f.tb.Login(t, f.tb.HS1, f.User.UserID.Localpart(), f.tb.UserPassword)
	f.join(t)
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// tail returns the file's bytes from offset on.
func tail(path string, offset int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err = f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(f)
	return b
}

// PoisonedRoom is incident 2: a room on hs2 that alice@hs1 is in, whose power-levels change
// hs1 marked rejected (auth_error) while stopped, so that after its restart hs1 rejects hs2's
// new messages with "found rejected event … in the state".
type PoisonedRoom struct {
	Room        id.RoomID
	PowerLevels id.EventID
	Lost        []string // bodies of hs2's messages that hs1 rejected
	LostIDs     []string
	Remote      *mautrix.Client // admin@hs2
	Alice       *mautrix.Client // alice@hs1
	ChainIDs    []string        // PowerLevels + LostIDs
}

// StagePoisonedRoom stages incident 2 with the given number of hs2 messages rejected after
// the power levels. hs1 restarts: run it before starting medic.
func StagePoisonedRoom(t T, tb *Testbed, messages int) *PoisonedRoom {
	t.Helper()
	ctx := context.Background()
	p := &PoisonedRoom{Remote: tb.Admin(t, tb.HS2), Alice: tb.Login(t, tb.HS1, "alice", tb.UserPassword)}
	resp, err := p.Remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: UniqueName("poisoned"),
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}}}}})
	if err != nil {
		t.Fatal(err)
	}
	p.Room = resp.RoomID
	JoinVia(t, p.Alice, p.Room, tb.HS2.Name)
	var pl event.PowerLevelsEventContent
	if err = p.Remote.StateEvent(ctx, p.Room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	pl.SetEventLevel(event.StateRoomName, 60)
	plResp, err := p.Remote.SendStateEvent(ctx, p.Room, event.StatePowerLevels, "", &pl)
	if err != nil {
		t.Fatal(err)
	}
	p.PowerLevels = plResp.EventID
	WaitRows(t, tb.HS1, 1, "hs1 has the power-levels change", `SELECT count(*) FROM events WHERE event_id = $1`, p.PowerLevels)

	// The incident: the power-levels event is rejected locally while hs1 is down.
	tb.Stop(t, tb.HS1)
	tb.HS1.Exec(t, `UPDATE events SET rejection_reason = 'auth_error' WHERE event_id = $1`, p.PowerLevels)
	tb.HS1.Exec(t, `INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'auth_error', $2)`, p.PowerLevels, fmt.Sprint(time.Now().UnixMilli()))
	tb.Start(t, tb.HS1)
	// hs2 may have started backing off from hs1 while it was down; hs2's messages must go now.
	if err = adminapi.New(p.Remote).ResetConnection(ctx, tb.HS1.Name); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < messages; i++ {
		body := fmt.Sprintf("lost message %d %s", i, UniqueName(""))
		r, err := p.Remote.SendMessageEvent(ctx, p.Room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		p.Lost = append(p.Lost, body)
		p.LostIDs = append(p.LostIDs, r.EventID.String())
	}
	WaitRows(t, tb.HS1, messages, "hs1 rejected hs2's new messages",
		`SELECT count(*) FROM rejections WHERE event_id = ANY($1)`, p.LostIDs)
	p.ChainIDs = append([]string{p.PowerLevels.String()}, p.LostIDs...)
	return p
}

// Demo is the three incidents `make demo` stages on hs1.
type Demo struct {
	Forgotten *ForgottenRoom
	Poisoned  *PoisonedRoom
	Proxy     *Proxy // incident 3: a URI-normalising nginx in front of hs1's federation port
}

// StageDemo stages the three incidents, the proxy's files in dir (it keeps running after the
// script: stop it with Proxy.Stop). hs1 restarts twice: run it before starting medic.
func StageDemo(t T, tb *Testbed, dir string) *Demo {
	t.Helper()
	d := &Demo{}
	t.Logf("staging 1/3: a room forgotten after a restore of %s's database...", tb.HS1.Name)
	d.Forgotten = StageForgottenRoom(t, tb)
	t.Logf("staging 2/3: a room poisoned by a wrongly rejected power-levels event...")
	d.Poisoned = StagePoisonedRoom(t, tb, 2)
	t.Logf("staging 3/3: a URI-normalising nginx in front of %s's federation port...", tb.HS1.Name)
	d.Proxy = StartProxy(t, tb.HS1, dir, FreePort(t), 0)
	return d
}

// Config writes the demo's medic config into dir (data in dir/data) and returns its path:
// hs1 with its database, signing key, logs and restart command, the testing-only federation
// switch on, Synapse's metrics as a source for failing destinations, and the proxy as
// health.federation_address, so the self-test goes through it as remote servers would.
// authChecker empty: medic-authcheck next to medic. extra is more YAML.
func (d *Demo) Config(t T, tb *Testbed, dir string, bot id.UserID, password, authChecker, extra string) string {
	t.Helper()
	return tb.medicConfig(t, dir, bot, password, authChecker, fmt.Sprintf("  metrics_url: %q\n", tb.HS1.MetricsURL()),
		fmt.Sprintf("health: {federation_address: %q}\n", d.Proxy.Address())+extra)
}
