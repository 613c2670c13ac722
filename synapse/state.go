package synapse

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reads for the state audit (!state audit, the state health check). All read-only; every
// one is an indexed lookup by room, event ID or stream position.
const (
	// stateEventsQuery describes state events by ID: type, state key, the membership of
	// member events, the sender, and for the few types the audit quotes (join rules,
	// history visibility) the value that matters. events and room_memberships by event ID.
	stateEventsQuery = `
		SELECT e.event_id, e.type, e.state_key, coalesce(m.membership, ''), e.sender,
			CASE e.type
				WHEN 'm.room.join_rules' THEN coalesce(j.json::json -> 'content' ->> 'join_rule', '')
				WHEN 'm.room.history_visibility' THEN coalesce(j.json::json -> 'content' ->> 'history_visibility', '')
				ELSE '' END
		FROM events AS e
		LEFT JOIN room_memberships AS m USING (event_id)
		LEFT JOIN event_json AS j ON j.event_id = e.event_id AND e.type IN ('m.room.join_rules', 'm.room.history_visibility')
		WHERE e.event_id = ANY($1) AND e.state_key IS NOT NULL`
	// partialStateQuery tells whether a room is in a partial-state (faster) join.
	partialStateQuery = `SELECT EXISTS (SELECT 1 FROM partial_state_rooms WHERE room_id = $1)`
	// currentStateIDsQuery is the room's current state as event IDs (indexed by room).
	currentStateIDsQuery = `SELECT event_id FROM current_state_events WHERE room_id = $1`
	// auditRoomsQuery lists rooms worth auditing, newest activity first: rooms where local
	// and remote users are joined (room_stats_current, one row per room), by their newest
	// event (one backward probe of the (room_id, stream_ordering) index per room, never a
	// join over events). Rooms the server was reset out of have no local member any more;
	// the reset query finds those.
	auditRoomsQuery = `
		SELECT s.room_id, coalesce((SELECT e.stream_ordering FROM events AS e WHERE e.room_id = s.room_id
			ORDER BY e.stream_ordering DESC LIMIT 1), 0) AS last
		FROM room_stats_current AS s
		WHERE s.local_users_in_room > 0 AND s.joined_members > s.local_users_in_room
		ORDER BY last DESC, s.room_id
		LIMIT $1`
	// streamSinceQuery maps a time to a position in the events stream: the first event
	// sent at or after it (events_ts index), or past the end when there is none.
	streamSinceQuery = `
		SELECT coalesce(
			(SELECT stream_ordering FROM events WHERE origin_server_ts >= $1 ORDER BY origin_server_ts, stream_ordering LIMIT 1),
			(SELECT max(stream_ordering) + 1 FROM events), 0)`
	// resetMembershipsQuery finds the state-reset pattern in current_state_delta_stream: a
	// local user's membership in the current state changed from join to something else
	// (another, older event, or none at all) while no membership event of that user in that
	// room was persisted since their join. A leave, kick or ban is such an event, sent by
	// the user or by someone the auth rules let do it; a reset has none: state resolution
	// (or a missed event) took the membership away. Rows from $1 on (stream_id index, or
	// (room_id, stream_id) when $3 names a room), newest first.
	resetMembershipsQuery = `
		SELECT d.stream_id, d.room_id, d.state_key, coalesce(d.event_id, ''), coalesce(nm.membership, ''), d.prev_event_id,
			coalesce((SELECT l.membership FROM local_current_membership AS l WHERE l.room_id = d.room_id AND l.user_id = d.state_key), '')
		FROM current_state_delta_stream AS d
		JOIN room_memberships AS pm ON pm.event_id = d.prev_event_id AND pm.membership = 'join'
		JOIN events AS pe ON pe.event_id = d.prev_event_id
		LEFT JOIN room_memberships AS nm ON nm.event_id = d.event_id
		WHERE d.stream_id >= $1 AND ($3 = '' OR d.room_id = $3)
			AND d.type = 'm.room.member' AND right(d.state_key, length($2)) = $2
			AND coalesce(nm.membership, '') <> 'join'
			AND NOT EXISTS (
				SELECT 1 FROM room_memberships AS m JOIN events AS e ON e.event_id = m.event_id
				WHERE m.user_id = d.state_key AND m.room_id = d.room_id
					AND e.stream_ordering > pe.stream_ordering AND e.stream_ordering <= d.stream_id)
		ORDER BY d.stream_id DESC
		LIMIT $4`
)

// StateEvent is what the state audit needs of one state event.
type StateEvent struct {
	EventID    string
	Type       string
	StateKey   string
	Membership string // of member events
	Sender     string
	Value      string // the join rule or history visibility, for those types
}

// Key is the event's place in a room's state: "type\x00state_key".
func (e StateEvent) Key() string { return e.Type + "\x00" + e.StateKey }

// StateEvents describes the given state events Synapse has, by event ID.
func (db *DB) StateEvents(ctx context.Context, ids []string) (map[string]StateEvent, error) {
	rows, err := db.Pool.Query(ctx, stateEventsQuery, ids)
	if err != nil {
		return nil, fmt.Errorf("describe state events: %w", err)
	}
	out := make(map[string]StateEvent, len(ids))
	var e StateEvent
	_, err = pgx.ForEachRow(rows, []any{&e.EventID, &e.Type, &e.StateKey, &e.Membership, &e.Sender, &e.Value}, func() error {
		out[e.EventID] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("describe state events: %w", err)
	}
	return out, nil
}

// CurrentStateEvents is a room's current state as Synapse holds it (current_state_events),
// by key ("type\x00state_key"). Empty when the server is not in the room: Synapse clears a
// room's current state when its last local member leaves.
func (db *DB) CurrentStateEvents(ctx context.Context, room string) (map[string]StateEvent, error) {
	rows, err := db.Pool.Query(ctx, currentStateIDsQuery, room)
	if err != nil {
		return nil, fmt.Errorf("read current state of %s: %w", room, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read current state of %s: %w", room, err)
	}
	byID, err := db.StateEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]StateEvent, len(byID))
	for _, e := range byID {
		out[e.Key()] = e
	}
	return out, nil
}

// PartialState tells whether Synapse is still joining a room with partial state: it joined
// without the full member list and is still fetching it (the row goes once the resync is
// complete), so it cannot check other local users' joins yet.
func (db *DB) PartialState(ctx context.Context, room string) (bool, error) {
	var partial bool
	if err := db.Pool.QueryRow(ctx, partialStateQuery, room).Scan(&partial); err != nil {
		return false, fmt.Errorf("read partial state of %s: %w", room, err)
	}
	return partial, nil
}

// AuditRooms lists up to limit rooms with local and remote members, newest activity first.
func (db *DB) AuditRooms(ctx context.Context, limit int) ([]string, error) {
	rows, err := db.Pool.Query(ctx, auditRoomsQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("list rooms with remote members: %w", err)
	}
	var out []string
	var room string
	var last int64
	_, err = pgx.ForEachRow(rows, []any{&room, &last}, func() error {
		out = append(out, room)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list rooms with remote members: %w", err)
	}
	return out, nil
}

// ResetMembership is one occurrence of the state-reset pattern: a local user's membership
// left join without a membership event of theirs.
type ResetMembership struct {
	Stream     int64
	RoomID     string
	UserID     string
	EventID    string // the membership event the state went back to ("" for none)
	Membership string // its membership ("" for none)
	PrevJoin   string // the join event the user had before
	// Now is the user's local membership now ("" when Synapse records none): "join" once
	// the user is back in.
	Now string
}

// ResetMemberships finds the state-reset pattern for users of server since a time, in one
// room or (room "") every room, newest first, at most limit rows.
func (db *DB) ResetMemberships(ctx context.Context, server, room string, since time.Time, limit int) ([]ResetMembership, error) {
	var from int64
	if err := db.Pool.QueryRow(ctx, streamSinceQuery, since.UnixMilli()).Scan(&from); err != nil {
		return nil, fmt.Errorf("find the stream position of %s: %w", since.UTC().Format(time.DateTime), err)
	}
	rows, err := db.Pool.Query(ctx, resetMembershipsQuery, from, ":"+server, room, limit)
	if err != nil {
		return nil, fmt.Errorf("read membership changes: %w", err)
	}
	var out []ResetMembership
	var r ResetMembership
	_, err = pgx.ForEachRow(rows, []any{&r.Stream, &r.RoomID, &r.UserID, &r.EventID, &r.Membership, &r.PrevJoin, &r.Now}, func() error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read membership changes: %w", err)
	}
	return out, nil
}
