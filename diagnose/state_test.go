package diagnose

import (
	"slices"
	"testing"

	"github.com/synapse-medic/medic/synapse"
)

// The comparison rules of the state audit, without Synapse: which differences count, as
// what kind, and which are left out.

const self = "here.test"

func ev(id, typ, sk string, membership ...string) synapse.StateEvent {
	e := synapse.StateEvent{EventID: id, Type: typ, StateKey: sk, Sender: "@admin:there.test"}
	if len(membership) > 0 {
		e.Membership = membership[0]
	}
	return e
}

func stateOf(events ...synapse.StateEvent) map[string]synapse.StateEvent {
	out := map[string]synapse.StateEvent{}
	for _, e := range events {
		out[e.Key()] = e
	}
	return out
}

var (
	create   = ev("$create", "m.room.create", "")
	pl       = ev("$pl", "m.room.power_levels", "")
	jrPublic = ev("$jr", "m.room.join_rules", "")
	admin    = ev("$admin", "m.room.member", "@admin:there.test", "join")
	alice    = ev("$alice", "m.room.member", "@alice:"+self, "join")
	base     = []synapse.StateEvent{create, pl, jrPublic, admin}
)

func with(extra ...synapse.StateEvent) map[string]synapse.StateEvent {
	return stateOf(append(slices.Clone(base), extra...)...)
}

func remote(server string, state map[string]synapse.StateEvent) *RemoteView {
	return &RemoteView{Server: server, At: "$latest", State: state}
}

func kinds(c *Comparison) []DiffKind {
	var out []DiffKind
	for _, d := range c.Diffs {
		out = append(out, d.Kind)
	}
	return out
}

func TestCompareStateClean(t *testing.T) {
	c := CompareState(self, with(alice), []*RemoteView{remote("a", with(alice)), remote("b", with(alice))}, false)
	if !c.Clean() || len(c.Unsettled) > 0 || c.NotInRoom {
		t.Fatalf("identical state: %+v", c)
	}
}

func TestCompareStateLocalMember(t *testing.T) {
	aliceLeft := ev("$alice-leave", "m.room.member", alice.StateKey, "leave")
	aliceAgain := ev("$alice-again", "m.room.member", alice.StateKey, "join")
	for _, tc := range []struct {
		name    string
		local   map[string]synapse.StateEvent
		remotes []*RemoteView
		want    []DiffKind
		heal    []string
	}{
		{"reset out, no membership here", with(), []*RemoteView{remote("a", with(alice))}, []DiffKind{MemberMissing}, []string{alice.StateKey}},
		{"reset to an older leave", with(aliceLeft), []*RemoteView{remote("a", with(alice))}, []DiffKind{MemberMissing}, []string{alice.StateKey}},
		// Another join event of the same user is not a divergence that matters: she is in.
		{"joined through another event", with(aliceAgain), []*RemoteView{remote("a", with(alice))}, nil, nil},
		{"joined only here", with(alice), []*RemoteView{remote("a", with(aliceLeft))}, []DiffKind{MemberExtra}, nil},
		{"joined here, unknown there", with(alice), []*RemoteView{remote("a", with())}, []DiffKind{MemberExtra}, nil},
		// Servers that disagree among themselves do not make a divergence of this one.
		{"servers disagree", with(aliceLeft), []*RemoteView{remote("a", with(alice)), remote("b", with(aliceLeft))}, nil, nil},
		{"both servers agree", with(aliceLeft), []*RemoteView{remote("a", with(alice)), remote("b", with(aliceAgain))}, []DiffKind{MemberMissing}, []string{alice.StateKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := CompareState(self, tc.local, tc.remotes, false)
			if got := kinds(c); !slices.Equal(got, tc.want) {
				t.Fatalf("kinds %v, want %v", got, tc.want)
			}
			if got := c.Healable(); !slices.Equal(got, tc.heal) {
				t.Fatalf("healable %v, want %v", got, tc.heal)
			}
		})
	}
}

func TestCompareStateKinds(t *testing.T) {
	plOld := ev("$pl-old", "m.room.power_levels", "")
	jrInvite := ev("$jr-invite", "m.room.join_rules", "")
	hv := ev("$hv", "m.room.history_visibility", "")
	hvOther := ev("$hv-other", "m.room.history_visibility", "")
	acl := ev("$acl", "m.room.server_acl", "")
	topic := ev("$topic", "m.room.topic", "")
	name := ev("$name", "m.room.name", "")
	nameOther := ev("$name-other", "m.room.name", "")
	bob := ev("$bob", "m.room.member", "@bob:there.test", "join")

	local := stateOf(create, plOld, jrInvite, admin, hv, acl, topic, name)
	room := stateOf(create, pl, jrPublic, admin, hvOther, bob, nameOther)
	c := CompareState(self, local, []*RemoteView{remote("a", room)}, false)
	want := []DiffKind{PowerLevels, JoinRules, HistoryVisibility, ServerACL, OnlyHere, MissingHere, OtherDiffers}
	if got := kinds(c); !slices.Equal(got, want) {
		t.Fatalf("kinds %v, want %v", got, want)
	}
	for _, d := range c.Diffs {
		switch d.Kind {
		case PowerLevels:
			if d.Here.EventID != "$pl-old" || d.Room.EventID != "$pl" || !slices.Equal(d.Servers, []string{"a"}) {
				t.Errorf("power levels: the events behind each side are wrong: %+v", d)
			}
		case ServerACL:
			if d.Room != nil || d.Here.EventID != "$acl" {
				t.Errorf("server ACL only here: %+v", d)
			}
		case MissingHere:
			if d.Here != nil || d.Room.EventID != "$bob" {
				t.Errorf("bob's membership missing here: %+v", d)
			}
		}
	}
	if len(c.Healable()) != 0 {
		t.Errorf("nothing here is for medic to heal: %v", c.Healable())
	}
}

// A server that holds no current state for a room (its last local member left or was
// reset out) compares only local users' memberships: everything else is "missing" there
// by design, not a divergence.
func TestCompareStateNotInRoom(t *testing.T) {
	c := CompareState(self, map[string]synapse.StateEvent{}, []*RemoteView{remote("a", with(alice))}, false)
	if !c.NotInRoom || !slices.Equal(kinds(c), []DiffKind{MemberMissing}) {
		t.Fatalf("not in the room: %+v", c)
	}
	c = CompareState(self, map[string]synapse.StateEvent{}, []*RemoteView{remote("a", with())}, false)
	if !c.Clean() {
		t.Fatalf("not in the room, and no local member there either: %+v", c)
	}
}

func TestCompareStateNoRemote(t *testing.T) {
	if c := CompareState(self, with(alice), nil, false); !c.Clean() {
		t.Fatalf("nothing to compare with: %+v", c)
	}
}

func TestRoomAuditDiverges(t *testing.T) {
	a := &RoomAudit{Comparison: &Comparison{}, Resets: []synapse.ResetMembership{{UserID: alice.StateKey, Now: "join"}}}
	if a.Diverges() {
		t.Fatal("a reset that was healed since is history, not a divergence")
	}
	a.Resets = append(a.Resets, synapse.ResetMembership{UserID: "@bob:" + self, Now: "leave"})
	if !a.Diverges() || len(a.OpenResets()) != 1 {
		t.Fatal("a user still reset out is a divergence")
	}
	if (&RoomAudit{}).Diverges() {
		t.Fatal("a room that could not be compared does not diverge")
	}
}

func TestParseStateEvent(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		ok   bool
		want synapse.StateEvent
	}{
		{`{"type":"m.room.member","state_key":"@a:x","sender":"@a:x","content":{"membership":"join"}}`, true,
			synapse.StateEvent{EventID: "$e", Type: "m.room.member", StateKey: "@a:x", Sender: "@a:x", Membership: "join"}},
		{`{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"invite"}}`, true,
			synapse.StateEvent{EventID: "$e", Type: "m.room.join_rules", Value: "invite"}},
		{`{"type":"m.room.message","content":{}}`, false, synapse.StateEvent{}},
		{`{"type":"m.room.name","state_key":5}`, false, synapse.StateEvent{}},
		{`[]`, false, synapse.StateEvent{}},
		{`not json`, false, synapse.StateEvent{}},
	} {
		got, ok := ParseStateEvent("$e", []byte(tc.raw))
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseStateEvent(%s) = %+v, %v", tc.raw, got, ok)
		}
	}
}

func FuzzParseStateEvent(f *testing.F) {
	for _, s := range []string{`{"type":"m.room.member","state_key":"@a:x","content":{"membership":"join"}}`, `{}`, `[`, `{"state_key":""}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		e, ok := ParseStateEvent("$e", []byte(raw))
		if ok && e.EventID != "$e" {
			t.Fatal("event ID lost")
		}
	})
}

// A partial-state join holds no other servers' members yet: their memberships are not
// compared (they would all be "missing here"); local members and other state still are.
func TestCompareStatePartialState(t *testing.T) {
	bob := ev("$bob", "m.room.member", "@bob:there.test", "join")
	jrInvite := ev("$jr-invite", "m.room.join_rules", "")
	local := stateOf(create, pl, jrInvite, admin)
	room := with(bob, alice)
	c := CompareState(self, local, []*RemoteView{remote("a", room)}, true)
	if want := []DiffKind{MemberMissing, JoinRules}; !slices.Equal(kinds(c), want) || !c.PartialState {
		t.Fatalf("partial state: kinds %v, want %v", kinds(c), want)
	}
	if c := CompareState(self, local, []*RemoteView{remote("a", room)}, false); !slices.Contains(kinds(c), MissingHere) {
		t.Fatalf("full state: bob's membership must count as missing here: %v", kinds(c))
	}
}
