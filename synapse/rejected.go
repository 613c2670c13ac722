package synapse

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// Rejections. `rejections` has no room column: every query scopes by joining `events`
// (synapse-reference.md). Synapse writes both `rejections` and `events.rejection_reason`; the
// per-room queries read either, so an inconsistent pair is still seen.
const (
	// rejectedGroupsQuery starts from `rejections` (small) and looks each event up by its
	// unique event_id; the LATERAL ... OFFSET 0 fence keeps it a per-row index lookup (a plain
	// join hashes a sequential scan of events on big databases; see HealthRejectionsQuery).
	rejectedGroupsQuery = `
		SELECT e.room_id, r.reason, e.type, count(*), min(e.received_ts), max(e.received_ts),
			coalesce((SELECT s.name FROM room_stats_state s WHERE s.room_id = e.room_id), '')
		FROM rejections AS r
		CROSS JOIN LATERAL (SELECT ev.room_id, ev.type, ev.received_ts FROM events ev WHERE ev.event_id = r.event_id OFFSET 0) AS e
		WHERE e.received_ts >= $1 AND ($2 = '' OR e.room_id = $2)
		GROUP BY e.room_id, r.reason, e.type
		ORDER BY e.room_id, count(*) DESC`
	// roomRejectedFrom walks one room's events in depth order (index events_order_room) and
	// keeps the rejected ones.
	roomRejectedFrom = `
		FROM events AS e
		LEFT JOIN rejections AS r USING (event_id)
		JOIN event_json AS j USING (event_id)
		WHERE e.room_id = $1 AND (e.rejection_reason IS NOT NULL OR r.event_id IS NOT NULL)
		ORDER BY e.topological_ordering, e.stream_ordering`
	// roomRejectedQuery: the rejected events with the IDs of their auth events.
	roomRejectedQuery = `SELECT e.event_id, e.type, e.state_key, e.sender, e.depth, coalesce(r.reason, e.rejection_reason),
		e.received_ts, coalesce(j.json::json -> 'auth_events', '[]'::json)` + roomRejectedFrom
	// roomRejectedJSONQuery: the same walk with the events' JSON, for the auth checker, which
	// reads the auth events from the JSON itself (medic, not PostgreSQL, parses it: the
	// checker's feed is the walk).
	roomRejectedJSONQuery = `SELECT e.event_id, e.type, e.state_key, e.sender, e.depth, coalesce(r.reason, e.rejection_reason),
		e.received_ts, j.json` + roomRejectedFrom
	eventsByIDQuery = `
		SELECT e.event_id, j.json, (e.rejection_reason IS NOT NULL OR r.event_id IS NOT NULL)
		FROM events AS e
		LEFT JOIN rejections AS r USING (event_id)
		JOIN event_json AS j USING (event_id)
		WHERE e.event_id = ANY($1)`
	roomVersionQuery = `SELECT room_version FROM rooms WHERE room_id = $1`
	// Keys Synapse has fetched: server_keys_json holds the servers' signed key responses.
	serverKeysQuery = `SELECT server_name, key_id, ts_valid_until_ms, key_json FROM server_keys_json`
	// currentStateQuery is the room's current state (indexed by room).
	currentStateQuery = `SELECT type, state_key, event_id FROM current_state_events WHERE room_id = $1`
	// rejectedCountQuery counts a set of events of a room that are rejected either way.
	rejectedCountQuery = `
		SELECT count(*) FROM events AS e
		WHERE e.room_id = $1 AND e.event_id = ANY($2)
			AND (e.rejection_reason IS NOT NULL OR EXISTS (SELECT 1 FROM rejections r WHERE r.event_id = e.event_id))`
)

// RejectedGroup counts a room's rejected events of one reason and type.
type RejectedGroup struct {
	RoomID, Name, Reason, Type string
	Count                      int
	First, Last                time.Time
}

// RejectedGroups counts rejected events received since a time, by room, reason and type
// (room "" for every room).
func (db *DB) RejectedGroups(ctx context.Context, since time.Time, room string) ([]RejectedGroup, error) {
	rows, err := db.Pool.Query(ctx, rejectedGroupsQuery, since.UnixMilli(), room)
	if err != nil {
		return nil, fmt.Errorf("count rejected events: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (g RejectedGroup, err error) {
		var first, last int64
		err = row.Scan(&g.RoomID, &g.Reason, &g.Type, &g.Count, &first, &last, &g.Name)
		g.First, g.Last = time.UnixMilli(first), time.UnixMilli(last)
		return
	})
}

// RejectedEvent is a rejected event of a room, without its JSON.
type RejectedEvent struct {
	EventID    string
	Type       string
	StateKey   *string
	Sender     string
	Depth      int64
	Reason     string
	Received   time.Time
	AuthEvents []string
}

// RoomRejected calls fn for each rejected event of a room, in depth order.
func (db *DB) RoomRejected(ctx context.Context, room string, fn func(RejectedEvent) error) error {
	return db.walkRejected(ctx, roomRejectedQuery, room, func(rows pgx.Rows) error {
		var ev RejectedEvent
		var received int64
		var auth []byte
		if err := rows.Scan(&ev.EventID, &ev.Type, &ev.StateKey, &ev.Sender, &ev.Depth, &ev.Reason, &received, &auth); err != nil {
			return err
		}
		ev.Received = time.UnixMilli(received)
		ev.AuthEvents = authEventIDs(auth)
		return fn(ev)
	})
}

// walkRejected runs one of the room walks (roomRejectedFrom) and calls each for every row.
// Where the room is most of the table, PostgreSQL sorts the rows instead of walking the index:
// in memory (the default 4 MB work_mem would spill 100k events' JSON to disk), in a read-only
// transaction so the setting ends with it.
func (db *DB) walkRejected(ctx context.Context, query, room string, each func(pgx.Rows) error) error {
	return pgx.BeginTxFunc(ctx, db.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '128MB'`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, query, room)
		if err != nil {
			return fmt.Errorf("read rejected events of %s: %w", room, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err = each(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// authEventIDs reads auth_events in either form: ["$id", …] (room v3+) or [["$id", {hashes}], …].
func authEventIDs(raw []byte) []string {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil
	}
	ids := make([]string, 0, len(list))
	for _, item := range list {
		var s string
		if json.Unmarshal(item, &s) == nil {
			ids = append(ids, s)
			continue
		}
		var pair []json.RawMessage
		if json.Unmarshal(item, &pair) == nil && len(pair) > 0 && json.Unmarshal(pair[0], &s) == nil {
			ids = append(ids, s)
		}
	}
	return ids
}

// RoomRejectedJSON calls fn for each rejected event of a room with its JSON, in depth order:
// the walk RoomRejected makes, with each event's JSON (its auth events read from it). js is
// the row's own buffer, valid only until fn returns: 100k events' JSON is not copied once
// more on its way to the checker.
func (db *DB) RoomRejectedJSON(ctx context.Context, room string, fn func(ev RejectedEvent, js []byte) error) error {
	return db.walkRejected(ctx, roomRejectedJSONQuery, room, func(rows pgx.Rows) error {
		var ev RejectedEvent
		var received int64
		if err := rows.Scan(&ev.EventID, &ev.Type, &ev.StateKey, &ev.Sender, &ev.Depth, &ev.Reason, &received, nil); err != nil {
			return err
		}
		js := rows.RawValues()[7]
		ev.Received = time.UnixMilli(received)
		ev.AuthEvents = authEventIDs([]byte(gjson.GetBytes(js, "auth_events").Raw))
		return fn(ev, js)
	})
}

// StoredEvent is an event as Synapse stored it.
type StoredEvent struct {
	EventID  string
	JSON     []byte
	Rejected bool
}

// EventsByID loads events with their JSON and rejection status.
func (db *DB) EventsByID(ctx context.Context, ids []string) ([]StoredEvent, error) {
	rows, err := db.Pool.Query(ctx, eventsByIDQuery, ids)
	if err != nil {
		return nil, fmt.Errorf("load events: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (e StoredEvent, err error) {
		err = row.Scan(&e.EventID, &e.JSON, &e.Rejected)
		return
	})
}

// RoomVersion returns a room's version ("" if Synapse does not know the room).
func (db *DB) RoomVersion(ctx context.Context, room string) (string, error) {
	var v string
	err := db.Pool.QueryRow(ctx, roomVersionQuery, room).Scan(&v)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	return v, err
}

// VerifyKey is a server's public signing key.
type VerifyKey struct {
	Key        string // unpadded base64
	ValidUntil int64  // ms
}

// ServerKeys returns the signing keys Synapse has fetched: server → key ID → key. Keys are
// taken from each stored response's verify_keys and old_verify_keys.
func (db *DB) ServerKeys(ctx context.Context) (map[string]map[string]VerifyKey, error) {
	rows, err := db.Pool.Query(ctx, serverKeysQuery)
	if err != nil {
		return nil, fmt.Errorf("read server keys: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]VerifyKey{}
	for rows.Next() {
		var server, keyID string
		var validUntil int64
		var raw []byte
		if err = rows.Scan(&server, &keyID, &validUntil, &raw); err != nil {
			return nil, err
		}
		var resp federation.ServerKeyResponse
		if json.Unmarshal(raw, &resp) != nil {
			continue
		}
		if out[server] == nil {
			out[server] = map[string]VerifyKey{}
		}
		if k, ok := resp.VerifyKeys[id.KeyID(keyID)]; ok {
			out[server][keyID] = VerifyKey{Key: string(k.Key), ValidUntil: validUntil}
		} else if k, ok := resp.OldVerifyKeys[id.KeyID(keyID)]; ok {
			out[server][keyID] = VerifyKey{Key: string(k.Key), ValidUntil: k.ExpiredTS.UnixMilli()}
		}
	}
	return out, rows.Err()
}

// CurrentState returns a room's current state: "type\x00state_key" → event ID.
func (db *DB) CurrentState(ctx context.Context, room string) (map[string]string, error) {
	rows, err := db.Pool.Query(ctx, currentStateQuery, room)
	if err != nil {
		return nil, fmt.Errorf("read current state of %s: %w", room, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var typ, key, eventID string
		if err = rows.Scan(&typ, &key, &eventID); err != nil {
			return nil, err
		}
		out[typ+"\x00"+key] = eventID
	}
	return out, rows.Err()
}

// RejectedCount counts how many of the given events of a room are rejected.
func (db *DB) RejectedCount(ctx context.Context, room string, ids []string) (int, error) {
	var n int
	err := db.Pool.QueryRow(ctx, rejectedCountQuery, room, ids).Scan(&n)
	return n, err
}
