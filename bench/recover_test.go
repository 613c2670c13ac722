package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/testbed"
)

const recoverUsers = 200

// forgottenRoom sets up incident 1 with many members: n hs1 users join a public room on
// hs2 after a backup of hs1, which is then restored. It returns the room, the users, and a
// function that restores the backup again (for the next method to start from the same place).
func forgottenRoom(b *testing.B, tb *testbed.Testbed, n int) (id.RoomID, []id.UserID, func()) {
	ctx := context.Background()
	users := make([]id.UserID, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	prefix := testbed.UniqueName("r")
	for i := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			cli := tb.Register(b, tb.HS1, fmt.Sprintf("%s_%d", prefix, i), false)
			users[i] = cli.UserID
		}()
	}
	wg.Wait()
	dump := filepath.Join(b.TempDir(), "hs1.dump")
	tb.Dump(b, tb.HS1, dump)

	remote := tb.Admin(b, tb.HS2)
	room, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "big room"})
	if err != nil {
		b.Fatal(err)
	}
	first, err := mautrix.NewClient(tb.HS1.URL, "", "")
	if err != nil {
		b.Fatal(err)
	}
	admin := tb.Admin(b, tb.HS1)
	token, err := adminapi.New(admin).LoginAsUser(ctx, users[0], time.Now().Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	first.UserID, first.AccessToken = users[0], token
	if _, err = first.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{tb.HS2.Name}}); err != nil {
		b.Fatal(err)
	}
	adm := adminapi.New(admin)
	for _, u := range users[1:] { // the admin join API is not rate limited
		if err = adm.JoinUser(ctx, room.RoomID, u, []string{tb.HS2.Name}); err != nil {
			b.Fatalf("setup join %s: %v", u, err)
		}
	}
	restore := func() {
		// hs2 has just seen n joins into its room and applies its per-room join rate limit
		// (default 1/s, burst 10) to the next remote join: let it drain, as it would have
		// long drained in a real incident, so every method starts from the same place.
		time.Sleep(time.Duration(n) * time.Second)
		tb.Restore(b, tb.HS1, dump)
		if _, err := remote.SendMessageEvent(ctx, room.RoomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "still here"}); err != nil {
			b.Fatal(err)
		}
	}
	restore()
	return room.RoomID, users, restore
}

func joinedCount(b *testing.B, tb *testbed.Testbed, room id.RoomID) int {
	return tb.HS1.Count(b, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND membership = 'join'`, room)
}

// BenchmarkRecoverRoom200 prints the time medic takes to rejoin 200 local members of a
// forgotten room, next to the hand method (login-as-user + /join per user, one after another,
// errors ignored) and the floor (parallel joins with pre-minted tokens). Target: medic at
// least 3× faster than the hand method.
func BenchmarkRecoverRoom200(b *testing.B) {
	tb := testbed.Get(b)
	ctx := context.Background()
	room, users, restore := forgottenRoom(b, tb, recoverUsers)

	// medic, as an admin would run it from the host.
	dir := b.TempDir()
	bin := testbed.MedicBinary(b)
	cfg := tb.MedicConfig(b, dir, tb.HS1.UserID("medic"), tb.MedicPassword)
	b.ResetTimer()
	start := time.Now()
	out, err := exec.Command(bin, "exec", "-c", cfg, "--yes", "!recover room "+room.String()+" via "+tb.HS2.Name).CombinedOutput()
	medicSecs := time.Since(start).Seconds()
	b.StopTimer()
	if err != nil {
		b.Fatalf("medic: %v\n%s", err, out)
	}
	medicJoined := joinedCount(b, tb, room)

	// The hand method on the same situation.
	restore()
	admin := adminapi.New(tb.Admin(b, tb.HS1))
	start = time.Now()
	for _, u := range users {
		token, err := admin.LoginAsUser(ctx, u, time.Now().Add(time.Hour))
		if err != nil {
			continue
		}
		cli, _ := mautrix.NewClient(tb.HS1.URL, u, token)
		_, _ = cli.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{tb.HS2.Name}})
	}
	handSecs := time.Since(start).Seconds()
	handJoined := joinedCount(b, tb, room)

	// The floor: tokens minted beforehand, joins 8 at a time, 429 honoured.
	restore()
	admin = adminapi.New(tb.Admin(b, tb.HS1))
	clients := make([]*mautrix.Client, len(users))
	for i, u := range users {
		token, err := admin.LoginAsUser(ctx, u, time.Now().Add(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		clients[i], _ = mautrix.NewClient(tb.HS1.URL, u, token)
	}
	start = time.Now()
	if _, err = clients[0].JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{tb.HS2.Name}}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, cli := range clients[1:] {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			for {
				_, err := cli.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{tb.HS2.Name}})
				var httpErr mautrix.HTTPError
				if err == nil || !asLimit(err, &httpErr) {
					return
				}
				wait := time.Second
				if ms, ok := httpErr.RespError.ExtraData["retry_after_ms"].(float64); ok {
					wait = time.Duration(ms) * time.Millisecond
				}
				time.Sleep(wait)
			}
		}()
	}
	wg.Wait()
	floorSecs := time.Since(start).Seconds()
	floorJoined := joinedCount(b, tb, room)

	b.ReportMetric(medicSecs, "medic-s")
	b.ReportMetric(float64(medicJoined), "medic-joined")
	b.ReportMetric(handSecs, "hand-s")
	b.ReportMetric(float64(handJoined), "hand-joined")
	b.ReportMetric(floorSecs, "floor-parallel-joins-s")
	b.ReportMetric(float64(floorJoined), "floor-joined")
	b.ReportMetric(handSecs/medicSecs, "speedup-vs-hand")
}

func asLimit(err error, into *mautrix.HTTPError) bool {
	if e, ok := err.(mautrix.HTTPError); ok && e.RespError != nil && e.RespError.ErrCode == "M_LIMIT_EXCEEDED" {
		*into = e
		return true
	}
	return false
}
