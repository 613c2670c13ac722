package diagnose

import (
	"slices"
	"strings"

	"github.com/synapse-medic/medic/synapse"
)

// DiffKind is what a difference between this server's current state of a room and the
// state the other servers hold means, and so what can be done about it.
type DiffKind string

const (
	// MemberMissing: a local user the room lists as joined, whom this server has left,
	// or without membership at all (a state reset): the user no longer sees the room.
	// medic can rejoin them (!state heal).
	MemberMissing DiffKind = "member-missing"
	// MemberExtra: a local user this server has joined but the room does not.
	MemberExtra DiffKind = "member-extra"
	// Key state events that differ: who may do what, who may join, who may read history,
	// which servers may take part.
	PowerLevels       DiffKind = "power-levels"
	JoinRules         DiffKind = "join-rules"
	HistoryVisibility DiffKind = "history-visibility"
	ServerACL         DiffKind = "server-acl"
	OnlyHere          DiffKind = "only-here"    // other state this server has that no server asked has
	MissingHere       DiffKind = "missing-here" // other state every server asked has and this one lacks
	OtherDiffers      DiffKind = "differs"      // other state where this server holds another event
)

// kindOrder is the order differences are reported in: what users notice first.
var kindOrder = []DiffKind{MemberMissing, MemberExtra, PowerLevels, JoinRules, HistoryVisibility, ServerACL, OnlyHere, MissingHere, OtherDiffers}

// keyKinds are the state types compared one by one.
var keyKinds = map[string]DiffKind{
	"m.room.power_levels":       PowerLevels,
	"m.room.join_rules":         JoinRules,
	"m.room.history_visibility": HistoryVisibility,
	"m.room.server_acl":         ServerACL,
}

// RemoteView is one other server's state of the room after its latest event.
type RemoteView struct {
	Server string
	At     string // the event the state is after
	State  map[string]synapse.StateEvent
}

// Difference is one (type, state key) where this server and the room disagree, with the
// events behind each side (Here is nil when this server holds nothing for the key, Room
// when the servers asked hold nothing).
type Difference struct {
	Kind     DiffKind
	Type     string
	StateKey string
	Here     *synapse.StateEvent
	Room     *synapse.StateEvent
	// Servers are the servers whose state says Room.
	Servers []string
}

// Comparison is the outcome of comparing a room's current state here with other servers'.
type Comparison struct {
	Diffs []Difference
	// Unsettled are keys where the servers asked disagree among themselves (events still
	// travelling, or a split between them): not counted as this server's divergence.
	Unsettled []string
	// NotInRoom: this server holds no current state for the room (its last local member
	// left, or was reset out); only local memberships are compared then.
	NotInRoom bool
	// PartialState: the room is still being joined with partial state (a faster join):
	// Synapse does not hold other servers' members yet, so their memberships are not
	// compared.
	PartialState bool
}

// Healable lists the local users medic can bring back (MemberMissing), sorted.
func (c *Comparison) Healable() []string {
	var out []string
	for _, d := range c.Diffs {
		if d.Kind == MemberMissing {
			out = append(out, d.StateKey)
		}
	}
	slices.Sort(out)
	return out
}

// Clean tells whether this server and the room agree.
func (c *Comparison) Clean() bool { return len(c.Diffs) == 0 }

// CompareState compares this server's current state of a room (local, by key) with the
// state other servers hold (at least one). A key counts as a difference only when every
// server that answered agrees on it (the same event, or all lacking it) and this server
// holds something else; where they disagree among themselves the key is unsettled.
// Memberships of local users (server is this server's name) are compared by membership:
// what matters is whether the user is in. partial says the room is in a partial-state join
// here: other servers' members are not compared.
func CompareState(server string, local map[string]synapse.StateEvent, remotes []*RemoteView, partial bool) *Comparison {
	c := &Comparison{NotInRoom: len(local) == 0, PartialState: partial}
	if len(remotes) == 0 {
		return c
	}
	keys := map[string]bool{}
	for k := range local {
		keys[k] = true
	}
	for _, r := range remotes {
		for k := range r.State {
			keys[k] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.Sort(sorted)
	suffix := ":" + server
	for _, k := range sorted {
		typ, sk, _ := strings.Cut(k, "\x00")
		localMember := typ == "m.room.member" && strings.HasSuffix(sk, suffix)
		here, hasHere := local[k]
		// What the room says: the first server's entry, if every server agrees with it.
		first, hasFirst := remotes[0].State[k]
		agree := true
		for _, r := range remotes[1:] {
			e, ok := r.State[k]
			switch {
			case ok != hasFirst:
				agree = false
			case ok && localMember && joined(e) != joined(first):
				agree = false
			case ok && !localMember && e.EventID != first.EventID:
				agree = false
			}
		}
		d := Difference{Type: typ, StateKey: sk}
		if hasHere {
			d.Here = &here
		}
		if hasFirst {
			d.Room = &first
		}
		for _, r := range remotes {
			if _, ok := r.State[k]; ok == hasFirst {
				d.Servers = append(d.Servers, r.Server)
			}
		}
		switch {
		case localMember:
			switch in, roomIn := hasHere && joined(here), hasFirst && joined(first); {
			case in == roomIn:
				continue
			case !agree:
				c.Unsettled = append(c.Unsettled, k)
				continue
			case roomIn:
				d.Kind = MemberMissing
			default:
				d.Kind = MemberExtra
			}
		case c.NotInRoom:
			// Without current state only memberships of local users mean something.
			continue
		case partial && typ == "m.room.member":
			continue
		case hasHere && hasFirst && here.EventID == first.EventID, !hasHere && !hasFirst:
			continue
		case !agree:
			c.Unsettled = append(c.Unsettled, k)
			continue
		case keyKinds[typ] != "":
			d.Kind = keyKinds[typ]
		case !hasFirst:
			d.Kind = OnlyHere
		case !hasHere:
			d.Kind = MissingHere
		default:
			d.Kind = OtherDiffers
		}
		c.Diffs = append(c.Diffs, d)
	}
	slices.SortStableFunc(c.Diffs, func(a, b Difference) int {
		return slices.Index(kindOrder, a.Kind) - slices.Index(kindOrder, b.Kind)
	})
	return c
}

func joined(e synapse.StateEvent) bool { return e.Membership == "join" }
