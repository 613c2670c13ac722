package synapse

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RoomRejections is a room's rejected events in a time window.
type RoomRejections struct {
	RoomID      string
	Count       int
	First, Last time.Time
}

// RejectionsSince counts rejected events per room received since a time, most first.
func (db *DB) RejectionsSince(ctx context.Context, since time.Time) ([]RoomRejections, error) {
	rows, err := db.Pool.Query(ctx, HealthRejectionsQuery, since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("count rejections: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (RoomRejections, error) {
		var rr RoomRejections
		var first, last int64
		err := r.Scan(&rr.RoomID, &rr.Count, &first, &last)
		rr.First, rr.Last = time.UnixMilli(first), time.UnixMilli(last)
		return rr, err
	})
}

// ChainRoomsSince lists the rooms, other than skip, with a rejected event received since a
// time that cites a rejected auth event: rooms with an active rejection chain.
func (db *DB) ChainRoomsSince(ctx context.Context, since time.Time, skip []string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, HealthChainRoomsQuery, since.UnixMilli(), skip)
	if err != nil {
		return nil, fmt.Errorf("find rooms with a rejection chain: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// DayCount is a count for one room on one UTC day.
type DayCount struct {
	RoomID string
	Day    time.Time
	Count  int
}

// RejectionsPerDay counts rejected events per room and UTC day since a time.
func (db *DB) RejectionsPerDay(ctx context.Context, since time.Time) ([]DayCount, error) {
	rows, err := db.Pool.Query(ctx, HealthRejectionsPerDayQuery, since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("count rejections per day: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DayCount, error) {
		var dc DayCount
		var day int64
		err := r.Scan(&dc.RoomID, &day, &dc.Count)
		dc.Day = time.Unix(day*86400, 0).UTC()
		return dc, err
	})
}

// PartialJoin is a room Synapse has only partially joined.
type PartialJoin struct {
	RoomID, JoinedVia string
	// Since is when the join event arrived; zero when Synapse did not record the join event.
	Since time.Time
}

// PartialJoins lists rooms in a partial (faster) join.
func (db *DB) PartialJoins(ctx context.Context) ([]PartialJoin, error) {
	rows, err := db.Pool.Query(ctx, HealthPartialJoinsQuery)
	if err != nil {
		return nil, fmt.Errorf("list partial joins: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PartialJoin, error) {
		var p PartialJoin
		var ts *int64
		err := r.Scan(&p.RoomID, &p.JoinedVia, &ts)
		if ts != nil {
			p.Since = time.UnixMilli(*ts)
		}
		return p, err
	})
}

// DatabaseSize returns the database's size in bytes.
func (db *DB) DatabaseSize(ctx context.Context) (int64, error) {
	var n int64
	if err := db.Pool.QueryRow(ctx, HealthDatabaseSizeQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("database size: %w", err)
	}
	return n, nil
}

// TableSize is a table's total size (with indexes and TOAST) and estimated rows.
type TableSize struct {
	Name  string
	Bytes int64
	Rows  int64
}

// LargestTables lists the biggest tables.
func (db *DB) LargestTables(ctx context.Context, limit int) ([]TableSize, error) {
	rows, err := db.Pool.Query(ctx, HealthLargestTablesQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("largest tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (TableSize, error) {
		var t TableSize
		return t, r.Scan(&t.Name, &t.Bytes, &t.Rows)
	})
}

// ExactStateCountBelow is the state_groups_state size (planner estimate) under which rooms'
// state rows are counted exactly; above it they are estimated from a sample.
const ExactStateCountBelow = 200_000

// stateSampleRows is about how many state_groups_state rows the estimate samples.
const stateSampleRows = 50_000

// RoomStateRows estimates the biggest rooms by state_groups_state rows. It returns whether
// the figures are estimates (a sample) rather than exact counts.
func (db *DB) RoomStateRows(ctx context.Context, limit int) ([]RoomCount, bool, error) {
	var total int64
	if err := db.Pool.QueryRow(ctx, HealthTableEstimateQuery, "state_groups_state").Scan(&total); err != nil {
		return nil, false, fmt.Errorf("estimate state_groups_state: %w", err)
	}
	scan := func(r pgx.CollectableRow) (RoomCount, error) {
		var rc RoomCount
		return rc, r.Scan(&rc.RoomID, &rc.Count)
	}
	if total < ExactStateCountBelow {
		rows, err := db.Pool.Query(ctx, HealthRoomStateExactQuery, limit)
		if err != nil {
			return nil, false, fmt.Errorf("count state rows per room: %w", err)
		}
		out, err := pgx.CollectRows(rows, scan)
		return out, false, err
	}
	// Sample about 50k rows (at least 0.01 %; SYSTEM sampling reads whole pages, so fewer
	// rows means fewer random reads on a cold cache), then scale the counts back up.
	pct := min(100, max(0.01, float64(stateSampleRows)*100/float64(total)))
	rows, err := db.Pool.Query(ctx, HealthRoomStateSampleQuery, pct, limit)
	if err != nil {
		return nil, true, fmt.Errorf("sample state rows per room: %w", err)
	}
	out, err := pgx.CollectRows(rows, scan)
	for i := range out {
		out[i].Count = int(float64(out[i].Count) * 100 / pct)
	}
	return out, true, err
}

// Locale is the database's locale and ownership.
type Locale struct {
	Collate, Ctype, Owner, CurrentUser string
}

// DatabaseLocale returns the current database's collation, ctype and owner.
func (db *DB) DatabaseLocale(ctx context.Context) (Locale, error) {
	var l Locale
	if err := db.Pool.QueryRow(ctx, HealthCollationQuery).Scan(&l.Collate, &l.Ctype, &l.Owner, &l.CurrentUser); err != nil {
		return l, fmt.Errorf("database locale: %w", err)
	}
	return l, nil
}

// ForeignObject is a table, sequence or view owned by another role than medic's (Synapse's).
type ForeignObject struct {
	Name, Kind, Owner string
}

// ForeignOwned lists Synapse's relations owned by a role other than the one connected.
func (db *DB) ForeignOwned(ctx context.Context) ([]ForeignObject, error) {
	rows, err := db.Pool.Query(ctx, HealthForeignOwnersQuery)
	if err != nil {
		return nil, fmt.Errorf("check owners: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ForeignObject, error) {
		var o ForeignObject
		err := r.Scan(&o.Name, &o.Kind, &o.Owner)
		switch o.Kind {
		case "S":
			o.Kind = "sequence"
		case "v", "m":
			o.Kind = "view"
		default:
			o.Kind = "table"
		}
		return o, err
	})
}

// SequenceState is a sequence's last handed-out value next to the highest value in use.
type SequenceState struct {
	Name        string
	Last, InUse int64
}

// Sequences compares the stream-ordering and state-group sequences with their tables.
func (db *DB) Sequences(ctx context.Context) ([]SequenceState, error) {
	rows, err := db.Pool.Query(ctx, HealthSequencesQuery)
	if err != nil {
		return nil, fmt.Errorf("check sequences: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SequenceState, error) {
		var s SequenceState
		return s, r.Scan(&s.Name, &s.Last, &s.InUse)
	})
}

// BackgroundUpdate is one pending Synapse background update.
type BackgroundUpdate struct {
	Name, DependsOn string
}

// BackgroundUpdates lists pending background updates.
func (db *DB) BackgroundUpdates(ctx context.Context) ([]BackgroundUpdate, error) {
	rows, err := db.Pool.Query(ctx, HealthBackgroundUpdatesQuery)
	if err != nil {
		return nil, fmt.Errorf("list background updates: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (BackgroundUpdate, error) {
		var b BackgroundUpdate
		return b, r.Scan(&b.Name, &b.DependsOn)
	})
}

// DataDirectory returns PostgreSQL's data directory, or an error when the role may not read it.
func (db *DB) DataDirectory(ctx context.Context) (string, error) {
	var dir string
	if err := db.Pool.QueryRow(ctx, HealthDataDirectoryQuery).Scan(&dir); err != nil {
		return "", fmt.Errorf("read data_directory: %w", err)
	}
	return dir, nil
}
