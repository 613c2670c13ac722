package bot

import (
	"slices"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestRoomViewNews: each outsider is announced once while they stay (an invite that becomes
// a join is no news), their going is said when the last one has gone, a room medic has not
// read is never judged clean, and leaving a room forgets it.
func TestRoomViewNews(t *testing.T) {
	const room = id.RoomID("!r:x")
	v := newRoomView()
	check := func(step string, wantArrived, wantGone []id.UserID) {
		t.Helper()
		arrived, gone := v.news(room)
		if !slices.Equal(arrived, wantArrived) || !slices.Equal(gone, wantGone) {
			t.Errorf("%s: arrived %v gone %v, want %v and %v", step, arrived, gone, wantArrived, wantGone)
		}
	}
	v.update([]memberChange{{Room: room, User: "@eve:x", Membership: event.MembershipJoin}}, nil)
	if _, ok := v.get(room); ok {
		t.Fatal("a room never read is known from one member event")
	}
	check("unread room", nil, nil)

	v.load(room, map[id.UserID]event.Membership{})
	check("clean room", nil, nil)
	v.update([]memberChange{{Room: room, User: "@eve:x", Membership: event.MembershipInvite}}, nil)
	check("invited", []id.UserID{"@eve:x"}, nil)
	v.update([]memberChange{{Room: room, User: "@eve:x", Membership: event.MembershipJoin}, {Room: room, User: "@bob:x", Membership: event.MembershipInvite}}, nil)
	check("eve joins, bob invited", []id.UserID{"@bob:x"}, nil)
	v.update([]memberChange{{Room: room, User: "@eve:x", Membership: event.MembershipLeave}}, nil)
	check("eve leaves, bob stays", nil, nil)
	v.update([]memberChange{{Room: room, User: "@bob:x", Membership: event.MembershipLeave}}, nil)
	check("bob leaves", nil, []id.UserID{"@bob:x"})
	// A sync replaying an old join and leave ends where it began: nothing to say.
	v.update([]memberChange{{Room: room, User: "@old:x", Membership: event.MembershipJoin}, {Room: room, User: "@old:x", Membership: event.MembershipLeave}}, nil)
	check("replay", nil, nil)
	if out, ok := v.get(room); !ok || len(out) != 0 {
		t.Errorf("clean room reads %v (%v)", out, ok)
	}

	// A member event delivered again after a newer one (timestamps say so) changes nothing.
	v.update([]memberChange{{Room: room, User: "@dan:x", Membership: event.MembershipJoin, TS: 100}}, nil)
	check("dan joins", []id.UserID{"@dan:x"}, nil)
	v.update([]memberChange{{Room: room, User: "@dan:x", Membership: event.MembershipLeave, TS: 200}}, nil)
	check("dan leaves", nil, []id.UserID{"@dan:x"})
	v.update([]memberChange{{Room: room, User: "@dan:x", Membership: event.MembershipJoin, TS: 100}}, nil)
	check("dan's old join again", nil, nil)

	v.update(nil, []id.RoomID{room})
	if _, ok := v.get(room); ok {
		t.Error("a room medic left is still known")
	}
}
