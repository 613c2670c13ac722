package testbed

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"
)

// Forgotten is incident 1 with many members: users of hs1 joined rooms on hs2 (an
// invite-only one, and a public one if asked for) after a backup of hs1's database, which was
// then restored.
type Forgotten struct {
	Invite, Public id.RoomID   // Public is empty unless asked for
	Users          []id.UserID // hs1's admin included: it invited them into the invite-only room
	dump           string
}

// Rooms are the forgotten rooms.
func (f *Forgotten) Rooms() []id.RoomID {
	if f.Public == "" {
		return []id.RoomID{f.Invite}
	}
	return []id.RoomID{f.Invite, f.Public}
}

// StageForgotten creates n users on hs1 (admin API: no password hashing, so quick), takes
// the backup, joins them to the rooms with the admin join API (not rate limited; for the
// invite-only room hs1's admin, a room admin there, invites them), waits until hs2 lists
// every join, and restores the backup. medic's account gets a rate-limit exemption first, as
// the README advises for login-as-user joins, so that it survives the restore.
func (tb *Testbed) StageForgotten(t testing.TB, n int, public bool) *Forgotten {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	admin1 := tb.Admin(t, tb.HS1)
	adm1 := AdminAPI(admin1)
	if err := adm1.SetUserRatelimit(ctx, tb.HS1.UserID("medic"), synapseadmin.ReqSetRatelimit{}); err != nil {
		t.Fatal(err)
	}
	f := &Forgotten{Users: []id.UserID{admin1.UserID}, dump: filepath.Join(t.TempDir(), "hs1.dump")}
	prefix := UniqueName("big")
	for i := 0; i < n; i++ {
		f.Users = append(f.Users, tb.HS1.UserID(fmt.Sprintf("%s_%d", prefix, i)))
	}
	Parallel(t, f.Users[1:], func(u id.UserID) error {
		return adm1.CreateOrModifyAccount(ctx, u, synapseadmin.ReqCreateOrModifyAccount{})
	})
	tb.Dump(t, tb.HS1, f.dump)

	remote := tb.Admin(t, tb.HS2)
	invite, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "big invite-only",
		Invite: []id.UserID{admin1.UserID},
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users: map[id.UserID]int{remote.UserID: 100, admin1.UserID: 100},
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.Invite = invite.RoomID
	if public {
		resp, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "big public"})
		if err != nil {
			t.Fatal(err)
		}
		f.Public = resp.RoomID
	}
	for _, r := range f.Rooms() {
		JoinVia(t, admin1, r, tb.HS2.Name)
	}
	tb.HS1.WaitFullState(t, f.Rooms()...)
	for _, r := range f.Rooms() {
		Parallel(t, f.Users[1:], func(u id.UserID) error {
			return adm1.JoinUserToRoom(ctx, r, synapseadmin.ReqJoinUserToRoom{UserID: u})
		})
	}
	// hs1 sends its joins to hs2 in the background: the backup is restored once hs2 lists
	// every one of them, as in an incident long after the joins.
	for _, r := range f.Rooms() {
		for deadline := time.Now().Add(2 * time.Minute); tb.HS2.Count(t, `SELECT count(*) FROM current_state_events
			WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join' AND state_key LIKE $2`, r, "%:"+tb.HS1.Name) < len(f.Users); {
			if time.Now().After(deadline) {
				t.Fatalf("hs2 does not list every join of hs1's users in %s", r)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("staging: %d users joined to %d room(s) after %s", n, len(f.Rooms()), time.Since(start).Round(time.Second))
	f.Restore(t, tb)
	return f
}

// Restore puts hs1's backup back and has hs2 speak in the rooms, so hs1's log shows them
// forgotten. hs2 restarts too: it counted every join into its rooms against its per-room
// join rate limit (rc_joins_per_room, 1/s), which in a real incident has long drained.
func (f *Forgotten) Restore(t testing.TB, tb *Testbed) {
	t.Helper()
	tb.Restart(t, tb.HS2)
	tb.Restore(t, tb.HS1, f.dump)
	remote := tb.Admin(t, tb.HS2)
	// hs2 may have tried to reach hs1 while it was down and be backing off from it.
	_, err := remote.MakeRequest(context.Background(), http.MethodPost,
		AdminAPI(remote).BuildAdminURL("v1", "federation", "destinations", tb.HS1.Name, "reset_connection"), struct{}{}, nil)
	if err != nil && !strings.Contains(err.Error(), "does not need to be reset") && !strings.Contains(err.Error(), "Unknown destination") {
		t.Fatalf("reset hs2's backoff from hs1: %v", err)
	}
	for _, r := range f.Rooms() {
		if _, err := remote.SendMessageEvent(context.Background(), r, event.EventMessage,
			&event.MessageEventContent{MsgType: event.MsgText, Body: "anyone there?"}); err != nil {
			t.Fatal(err)
		}
	}
}

// Joined counts the users joined to room on hs1.
func (f *Forgotten) Joined(t testing.TB, tb *Testbed, room id.RoomID) int {
	t.Helper()
	users := make([]string, len(f.Users))
	for i, u := range f.Users {
		users[i] = u.String()
	}
	return tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND membership = 'join' AND user_id = ANY($2)`,
		room, users)
}

// Parallel runs fn for every user, 8 at a time, and fails the test if any failed.
func Parallel(t testing.TB, users []id.UserID, fn func(id.UserID) error) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	sem := make(chan struct{}, 8)
	for _, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(u); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s: %v", u, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d failed, e.g. %s", len(errs), len(users), errs[0])
	}
}

// WaitFullState waits until the homeserver has no partial-state row for the rooms.
func (h *Homeserver) WaitFullState(t testing.TB, rooms ...id.RoomID) {
	t.Helper()
	ids := make([]string, len(rooms))
	for i, r := range rooms {
		ids[i] = r.String()
	}
	for deadline := time.Now().Add(2 * time.Minute); h.Count(t, `SELECT count(*) FROM partial_state_rooms WHERE room_id = ANY($1)`, ids) > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the rooms stayed partial-state for 2 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
