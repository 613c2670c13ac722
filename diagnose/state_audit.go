package diagnose

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/synapse"
)

// StateAuditor compares rooms' current state here with the state other servers in the
// rooms hold, asking them over federation with requests signed by the server's own key.
// It changes nothing.
type StateAuditor struct {
	DB         *synapse.DB
	Federation func() (*federation.Client, error)
	ServerName string
	// Servers is how many other servers to ask per room (they must agree for a
	// difference to count); 0 means 2. At most twice as many candidates are tried.
	Servers int
	// Lookback is how far back current_state_delta_stream is read for the reset pattern
	// (0: 7 days).
	Lookback time.Duration
	// RoomTimeout bounds one room's audit (0: 30 s).
	RoomTimeout time.Duration
}

// ServerAnswer is how one server asked about a room answered.
type ServerAnswer struct {
	Server string
	At     string // the event its state is after
	Err    string
}

// RoomAudit is what the audit found in one room.
type RoomAudit struct {
	RoomID string
	Local  int // entries in this server's current state
	Asked  []ServerAnswer
	*Comparison
	// Resets are the reset pattern's occurrences in the room since Lookback.
	Resets []synapse.ResetMembership
	// Err is why the room could not be compared (no server answered, a database error).
	Err  error
	Took time.Duration
}

// Diverges tells whether the room's state here differs from the room's, or a local user
// reset out of it is still out.
func (a *RoomAudit) Diverges() bool {
	return a.Comparison != nil && !a.Clean() || len(a.OpenResets()) > 0
}

// OpenResets are the resets whose user is still not joined here.
func (a *RoomAudit) OpenResets() []synapse.ResetMembership {
	var out []synapse.ResetMembership
	for _, r := range a.Resets {
		if r.Now != "join" {
			out = append(out, r)
		}
	}
	return out
}

// Answered lists the servers whose state was compared.
func (a *RoomAudit) Answered() []ServerAnswer {
	var out []ServerAnswer
	for _, s := range a.Asked {
		if s.Err == "" {
			out = append(out, s)
		}
	}
	return out
}

// resetLimit bounds the reset rows read at once.
const resetLimit = 1000

func (sa *StateAuditor) servers() int {
	if sa.Servers > 0 {
		return sa.Servers
	}
	return 2
}

func (sa *StateAuditor) since() time.Time {
	if sa.Lookback > 0 {
		return time.Now().Add(-sa.Lookback)
	}
	return time.Now().Add(-7 * 24 * time.Hour)
}

func (sa *StateAuditor) client() (*federation.Client, error) {
	if sa.DB == nil {
		return nil, fmt.Errorf("the state audit needs Synapse's database: set synapse.database in medic's config")
	}
	if sa.Federation == nil {
		return nil, fmt.Errorf("the state audit asks other servers, signed with the server's key: set synapse.signing_key_path in medic's config")
	}
	fc, err := sa.Federation()
	if err != nil {
		return nil, err
	} else if fc == nil {
		return nil, fmt.Errorf("the state audit asks other servers, signed with the server's key: set synapse.signing_key_path in medic's config")
	}
	return fc, nil
}

// AuditRoom audits one room.
func (sa *StateAuditor) AuditRoom(ctx context.Context, room string) (*RoomAudit, error) {
	fc, err := sa.client()
	if err != nil {
		return nil, err
	}
	resets, err := sa.DB.ResetMemberships(ctx, sa.ServerName, room, sa.since(), resetLimit)
	if err != nil {
		return nil, err
	}
	return sa.auditRoom(ctx, fc, room, resets), nil
}

func (sa *StateAuditor) auditRoom(ctx context.Context, fc *federation.Client, room string, resets []synapse.ResetMembership) *RoomAudit {
	start := time.Now()
	a := &RoomAudit{RoomID: room, Resets: resets}
	defer func() { a.Took = time.Since(start) }()
	timeout := sa.RoomTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	local, err := sa.DB.CurrentStateEvents(ctx, room)
	if err != nil {
		a.Err = err
		return a
	}
	a.Local = len(local)
	partial, err := sa.DB.PartialState(ctx, room)
	if err != nil {
		a.Err = err
		return a
	}
	candidates, err := sa.DB.CandidateServers(ctx, room, sa.ServerName)
	if err != nil {
		a.Err = err
		return a
	}
	var remotes []*RemoteView
	for _, server := range candidates {
		if len(remotes) == sa.servers() || len(a.Asked) == 2*sa.servers() {
			break
		}
		rv, err := RemoteState(ctx, fc, sa.DB, server, room)
		if err != nil {
			a.Asked = append(a.Asked, ServerAnswer{Server: server, Err: ShortErr(err)})
			continue
		}
		a.Asked = append(a.Asked, ServerAnswer{Server: server, At: rv.At})
		remotes = append(remotes, rv)
	}
	if len(remotes) == 0 {
		if len(candidates) == 0 {
			a.Err = errors.New("this server knows no other server in the room")
		} else {
			a.Err = errors.New("no other server gave the room's state")
		}
		return a
	}
	a.Comparison = CompareState(sa.ServerName, local, remotes, partial)
	return a
}

// StateReport is the audit of many rooms.
type StateReport struct {
	Rooms []*RoomAudit
	// Skipped are rooms left out when the time budget ran out.
	Skipped []string
	// Considered is how many rooms were listed for the audit.
	Considered int
	Took       time.Duration
}

// Counts says how many audited rooms diverge and how many could not be audited.
func (r *StateReport) Counts() (diverging, failed int) {
	for _, a := range r.Rooms {
		switch {
		case a.Err != nil:
			failed++
		case a.Diverges():
			diverging++
		}
	}
	return diverging, failed
}

// AuditAll audits up to limit rooms with remote members, newest activity first, with the
// rooms where a local user was reset out (and is still out) first of all; workers rooms at
// a time. No room is started once budget has passed; those left are Skipped.
func (sa *StateAuditor) AuditAll(ctx context.Context, limit int, budget time.Duration, workers int) (*StateReport, error) {
	start := time.Now()
	fc, err := sa.client()
	if err != nil {
		return nil, err
	}
	resets, err := sa.DB.ResetMemberships(ctx, sa.ServerName, "", sa.since(), resetLimit)
	if err != nil {
		return nil, err
	}
	byRoom := map[string][]synapse.ResetMembership{}
	var rooms []string
	for _, r := range resets {
		if len(byRoom[r.RoomID]) == 0 && r.Now != "join" {
			rooms = append(rooms, r.RoomID)
		}
		byRoom[r.RoomID] = append(byRoom[r.RoomID], r)
	}
	active, err := sa.DB.AuditRooms(ctx, limit)
	if err != nil {
		return nil, err
	}
	for _, r := range active {
		if !slices.Contains(rooms, r) {
			rooms = append(rooms, r)
		}
	}
	if len(rooms) > limit {
		rooms = rooms[:limit]
	}
	rep := &StateReport{Considered: len(rooms), Rooms: make([]*RoomAudit, len(rooms))}
	deadline := start.Add(budget)
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rep.Rooms[i] = sa.auditRoom(ctx, fc, rooms[i], byRoom[rooms[i]])
			}
		}()
	}
	var skipped []int
	for i := range rooms {
		if budget > 0 && time.Now().After(deadline) || ctx.Err() != nil {
			skipped = append(skipped, i)
			continue
		}
		next <- i
	}
	close(next)
	wg.Wait()
	for _, i := range skipped {
		rep.Skipped = append(rep.Skipped, rooms[i])
	}
	rep.Rooms = slices.DeleteFunc(rep.Rooms, func(a *RoomAudit) bool { return a == nil })
	rep.Took = time.Since(start)
	return rep, nil
}

// RemoteState asks server for a room's state after the room's latest event there (federation
// /state_ids answers with the state before an event, so the event itself is laid over it),
// naming the events from Synapse's own tables and fetching from server only the ones
// Synapse lacks.
func RemoteState(ctx context.Context, fc *federation.Client, db *synapse.DB, server, room string) (*RemoteView, error) {
	latest, err := fc.TimestampToEvent(ctx, server, id.RoomID(room), time.Now(), mautrix.DirectionBackward)
	if err != nil {
		return nil, fmt.Errorf("timestamp_to_event: %w", err)
	}
	ids, err := fc.GetStateIDs(ctx, server, id.RoomID(room), latest.EventID)
	if err != nil {
		return nil, fmt.Errorf("state_ids at %s: %w", latest.EventID, err)
	}
	want := make([]string, 0, len(ids.PDUs)+1)
	for _, e := range ids.PDUs {
		want = append(want, e.String())
	}
	want = append(want, latest.EventID.String())
	known, err := db.StateEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	describe := func(eventID string) (synapse.StateEvent, bool, error) {
		if e, ok := known[eventID]; ok {
			return e, true, nil
		}
		evt, err := fc.GetEvent(ctx, server, id.EventID(eventID))
		if err != nil {
			return synapse.StateEvent{}, false, fmt.Errorf("event %s: %w", eventID, err)
		} else if len(evt.PDUs) == 0 {
			return synapse.StateEvent{}, false, fmt.Errorf("event %s: %s returned no event", eventID, server)
		}
		// (A version 12 create event has no room_id: its ID names the room.)
		if r := gjson.GetBytes(evt.PDUs[0], "room_id").Str; r != room && (r != "" || gjson.GetBytes(evt.PDUs[0], "type").Str != "m.room.create") {
			return synapse.StateEvent{}, false, fmt.Errorf("event %s: %s returned an event of another room", eventID, server)
		}
		e, ok := ParseStateEvent(eventID, evt.PDUs[0])
		return e, ok, nil
	}
	rv := &RemoteView{Server: server, At: latest.EventID.String(), State: make(map[string]synapse.StateEvent, len(want))}
	for _, eventID := range want[:len(want)-1] {
		e, ok, err := describe(eventID)
		if err != nil {
			return nil, err
		}
		if ok {
			rv.State[e.Key()] = e
		}
	}
	// The latest event is often a state event itself (the last user to join): lay it over.
	if e, ok, err := describe(latest.EventID.String()); err == nil && ok {
		rv.State[e.Key()] = e
	}
	return rv, nil
}

// ParseStateEvent reads what the audit needs from an event's JSON (from another server:
// anything may be missing); false when it is no state event.
func ParseStateEvent(eventID string, raw []byte) (synapse.StateEvent, bool) {
	ev := gjson.ParseBytes(raw)
	sk := ev.Get("state_key")
	if !ev.IsObject() || sk.Type != gjson.String {
		return synapse.StateEvent{}, false
	}
	e := synapse.StateEvent{EventID: eventID, Type: ev.Get("type").String(), StateKey: sk.Str, Sender: ev.Get("sender").String()}
	switch e.Type {
	case "m.room.member":
		e.Membership = ev.Get("content.membership").String()
	case "m.room.join_rules":
		e.Value = ev.Get("content.join_rule").String()
	case "m.room.history_visibility":
		e.Value = ev.Get("content.history_visibility").String()
	}
	return e, true
}

// ShortErr is an error in one line for a report: the Matrix error code and message of an
// HTTP error, else the error cut at 120 characters.
func ShortErr(err error) string {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.Response != nil {
		return fmt.Sprintf("%d %s %s", httpErr.Response.StatusCode, httpErr.RespError.ErrCode, httpErr.RespError.Err)
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "…"
	}
	return msg
}
