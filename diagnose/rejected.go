// Package diagnose holds medic's read-only findings: rejection chains, rooms Synapse forgot,
// destinations it backs off from, rooms with many forward extremities. Commands show them,
// health checks judge them, and repairs (package recovery) plan from them; nothing here
// changes anything.
package diagnose

import (
	"context"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapselog"
)

// Chain is a rejection chain: a root rejected event (one whose own auth events are all
// accepted) and the rejected events that cite it, directly or through other rejected events.
// A root with no descendants is a lone rejection (often a legitimate one).
type Chain struct {
	Root        synapse.RejectedEvent
	Descendants int
	ByType      map[string]int // the descendants' event types
	Last        time.Time      // newest rejection in the chain
	// Servers signed the chain's events; Cites are the auth events its events cite that are
	// not rejected (what verifying the chain needs besides the chain).
	Servers map[string]bool
	Cites   map[string]bool
	// Log is what Synapse's logs say about events refused because of this chain (nil when no
	// logs are configured or none mention it).
	Log *synapselog.RejectedTrace
}

// RoomRejections is one room's rejected events, as chains.
type RoomRejections struct {
	RoomID string
	Total  int
	Chains []*Chain // biggest first
	// member maps every rejected event of the room to its chain's root.
	member map[string]string
	byRoot map[string]*Chain
}

// RootOf returns the root of the chain an event belongs to ("" if it is not rejected).
func (r *RoomRejections) RootOf(eventID string) string { return r.member[eventID] }

// Chain returns the chain with the given root.
func (r *RoomRejections) Chain(root string) *Chain { return r.byRoot[root] }

// RoomChains walks a room's rejected events in depth order and groups them into chains: an
// event whose auth events include a rejected event joins that event's chain. The walk keeps
// only event IDs, so it stays small for long chains.
func RoomChains(ctx context.Context, db *synapse.DB, room string) (*RoomRejections, error) {
	w := NewChainWalk(room)
	if err := db.RoomRejected(ctx, room, func(ev synapse.RejectedEvent) error {
		w.Add(ev)
		return nil
	}); err != nil {
		return nil, err
	}
	return w.Done(), nil
}

// ChainWalk groups a room's rejected events into chains as a walk in depth order meets them
// (RoomChains, or a walk that also feeds the events to the auth checker).
type ChainWalk struct{ rr *RoomRejections }

// NewChainWalk starts grouping the rejected events of a room.
func NewChainWalk(room string) *ChainWalk {
	return &ChainWalk{rr: &RoomRejections{RoomID: room, member: map[string]string{}, byRoot: map[string]*Chain{}}}
}

// RootOf returns the root of the chain of an event met so far ("" if none).
func (w *ChainWalk) RootOf(eventID string) string { return w.rr.member[eventID] }

// Add places the next rejected event of the walk in its chain and returns the chain's root:
// the chain of the first of its auth events that is rejected, or a new chain it roots.
func (w *ChainWalk) Add(ev synapse.RejectedEvent) (root string) {
	rr := w.rr
	rr.Total++
	for _, a := range ev.AuthEvents {
		if r, ok := rr.member[a]; ok {
			root = r
			break
		}
	}
	var c *Chain
	if root == "" {
		root = ev.EventID
		c = &Chain{Root: ev, ByType: map[string]int{}, Last: ev.Received, Servers: map[string]bool{}, Cites: map[string]bool{}}
		rr.byRoot[root] = c
		rr.Chains = append(rr.Chains, c)
	} else {
		c = rr.byRoot[root]
		c.Descendants++
		c.ByType[ev.Type]++
		if ev.Received.After(c.Last) {
			c.Last = ev.Received
		}
	}
	c.Servers[id.UserID(ev.Sender).Homeserver()] = true
	for _, a := range ev.AuthEvents {
		if _, rejected := rr.member[a]; !rejected {
			c.Cites[a] = true
		}
	}
	rr.member[ev.EventID] = root
	return root
}

// Done ends the walk: the chains, biggest first.
func (w *ChainWalk) Done() *RoomRejections {
	slices.SortStableFunc(w.rr.Chains, func(a, b *Chain) int { return b.Descendants - a.Descendants })
	return w.rr
}

// AttachLogs adds the logs' "found rejected event … in the state" counts to the chains of
// the events they name.
func (r *RoomRejections) AttachLogs(rep *synapselog.Report) {
	if rep == nil {
		return
	}
	for rejectedID, tr := range rep.RejectedInState {
		root, ok := r.member[rejectedID]
		if !ok {
			continue
		}
		c := r.Chain(root)
		if c.Log == nil {
			cp := *tr
			c.Log = &cp
			continue
		}
		c.Log.Count += tr.Count
		c.Log.Events += tr.Events
		if tr.Last.After(c.Log.Last) {
			c.Log.Last = tr.Last
		}
	}
}
