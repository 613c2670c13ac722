package synapse

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SQL against Synapse's schema (Synapse 1.160, schema_version 94). Each query stays cheap on
// big databases: it reads small tables or uses their indexes.
const (
	// event_forward_extremities is small (a few rows per room) and indexed by room.
	roomsWithExtremitiesQuery = `
		SELECT efe.room_id, count(*) AS n
		FROM event_forward_extremities AS efe
		GROUP BY efe.room_id
		HAVING count(*) >= $1
		ORDER BY n DESC, efe.room_id
		LIMIT $2`
)

const (
	// roomStatusQuery tells, for rooms named in the logs, whether Synapse knows them, how
	// many local users are joined, and their name: small primary-key lookups per room.
	roomStatusQuery = `
		SELECT r.room_id,
			EXISTS (SELECT 1 FROM rooms WHERE rooms.room_id = r.room_id),
			(SELECT count(*) FROM local_current_membership m WHERE m.room_id = r.room_id AND m.membership = 'join'),
			coalesce((SELECT s.name FROM room_stats_state s WHERE s.room_id = r.room_id), '')
		FROM unnest($1::text[]) AS r(room_id)`
)

// RoomStatus is what Synapse's database knows of a room.
type RoomStatus struct {
	Known       bool
	LocalJoined int
	Name        string
}

// RoomStatuses looks rooms up in Synapse's database.
func (db *DB) RoomStatuses(ctx context.Context, roomIDs []string) (map[string]RoomStatus, error) {
	rows, err := db.Pool.Query(ctx, roomStatusQuery, roomIDs)
	if err != nil {
		return nil, fmt.Errorf("look up rooms: %w", err)
	}
	out := make(map[string]RoomStatus, len(roomIDs))
	var roomID string
	var st RoomStatus
	_, err = pgx.ForEachRow(rows, []any{&roomID, &st.Known, &st.LocalJoined, &st.Name}, func() error {
		out[roomID] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up rooms: %w", err)
	}
	return out, nil
}

// RoomCount is a room with a count of something.
type RoomCount struct {
	RoomID string
	Count  int
}

// RoomsWithExtremities lists rooms with at least min forward extremities, most first.
func (db *DB) RoomsWithExtremities(ctx context.Context, min, limit int) ([]RoomCount, error) {
	rows, err := db.Pool.Query(ctx, roomsWithExtremitiesQuery, min, limit)
	if err != nil {
		return nil, fmt.Errorf("count forward extremities: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (RoomCount, error) {
		var rc RoomCount
		return rc, r.Scan(&rc.RoomID, &rc.Count)
	})
}
