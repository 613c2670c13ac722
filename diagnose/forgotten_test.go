package diagnose

import (
	"testing"
	"time"

	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapselog"
)

// TestJoinLost: a join the access log shows is lost when the database has no membership of
// the user in the room, or one other than join from before the join; a join, or a leave or
// kick after it, is the database being right.
func TestJoinLost(t *testing.T) {
	at := time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)
	j := &synapselog.Join{RoomID: "!r:hs2", User: "@a:hs1", Time: at}
	for _, c := range []struct {
		m    synapse.Membership
		lost bool
	}{
		{synapse.Membership{}, true},
		{synapse.Membership{Membership: "join", Received: at.Add(-24 * time.Hour)}, false},
		{synapse.Membership{Membership: "join", Received: at}, false},
		{synapse.Membership{Membership: "leave", Received: at.Add(time.Hour)}, false},
		{synapse.Membership{Membership: "leave", Received: at.Add(-30 * time.Second)}, false},
		{synapse.Membership{Membership: "leave", Received: at.Add(-24 * time.Hour)}, true},
		{synapse.Membership{Membership: "invite", Received: at.Add(-2 * time.Minute)}, true},
	} {
		if got := joinLost(c.m, j); got != c.lost {
			t.Errorf("%+v: lost = %v, want %v", c.m, got, c.lost)
		}
	}
}
