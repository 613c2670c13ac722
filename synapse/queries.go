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
