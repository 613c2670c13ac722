package importer

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3" // "sqlite3" driver for SQLite import sources
)

// Source is another Synapse's database that history is imported from, opened read-only:
// PostgreSQL (production) or SQLite (small or retired servers). Synapse's schema is the same
// on both for the tables read here, except that SQLite keeps booleans as integers (which
// database/sql converts) and full-text search in an FTS table (not read: the search rows are
// rebuilt from the events, as Synapse builds them).
type Source struct {
	db     *sql.DB
	sqlite bool
}

// Source types.
const (
	SourcePostgres = "postgres"
	SourceSQLite   = "sqlite"
)

// OpenSource opens an import source: a PostgreSQL DSN, or the path of a SQLite file.
func OpenSource(ctx context.Context, kind, dsn string) (*Source, error) {
	var db *sql.DB
	var err error
	switch kind {
	case SourcePostgres:
		var cfg *pgx.ConnConfig
		if cfg, err = pgx.ParseConfig(dsn); err != nil {
			return nil, fmt.Errorf("import source DSN: %w", err)
		}
		// The reads are a few thousand rows by index: parallel workers (processes the
		// source's PostgreSQL starts for each query) cost more than they save.
		cfg.RuntimeParams["max_parallel_workers_per_gather"] = "0"
		// The plan reads the whole room sorted, joined with its JSON sizes: with the default
		// 4 MB, a 142k-event room's hash join and sort spilled 60 MB to temporary files.
		// Only a few source queries run at once (the two chunks in flight and a prefetch).
		cfg.RuntimeParams["work_mem"] = "64MB"
		db = stdlib.OpenDB(*cfg)
	case SourceSQLite:
		// Read-only: medic never writes to the source.
		db, err = sql.Open("sqlite3", "file:"+dsn+"?mode=ro&_busy_timeout=5000")
	default:
		return nil, fmt.Errorf("unknown import source type %q (postgres or sqlite)", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("open import source: %w", err)
	}
	if err = db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to import source: %w", err)
	}
	var v int
	if err = db.QueryRowContext(ctx, srcSchemaVersionQuery).Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("import source is not a Synapse database (no schema_version): %w", err)
	}
	return &Source{db: db, sqlite: kind == SourceSQLite}, nil
}

func (s *Source) Close() error { return s.db.Close() }

// SQLite tells whether the source is a SQLite database.
func (s *Source) SQLite() bool { return s.sqlite }

// q adapts a query written with ? placeholders to the driver (PostgreSQL wants $n).
func (s *Source) q(query string) string {
	if s.sqlite {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// inList returns "?, ?, …" for n values.
func inList(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

func anys[T any](vals []T) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v
	}
	return out
}

// srcBatch is how many IDs go into one IN list (SQLite allows 32766 host parameters).
const srcBatch = 5000

// queryIn runs a query whose only IN list is written as (%s), over ids in batches, before
// which come the fixed args.
func (s *Source) queryIn(ctx context.Context, query string, ids []string, scan func(*sql.Rows) error, fixed ...any) error {
	for start := 0; start < len(ids); start += srcBatch {
		batch := ids[start:min(start+srcBatch, len(ids))]
		var q string
		var args []any
		if s.sqlite {
			q, args = fmt.Sprintf(query, inList(len(batch))), append(slices.Clip(fixed), anys(batch)...)
		} else {
			// One array parameter: PostgreSQL parses and plans an IN list of thousands of
			// parameters anew every time, which cost the source more than reading the rows.
			// As a semi-join on unnest, not = ANY: for 5000 IDs PostgreSQL seq-scanned the
			// whole table behind = ANY (35-130 ms a query on a 142k-event room) and looks
			// them up by index here (11-20 ms).
			q, args = strings.Replace(query, "IN (%s)", "IN (SELECT unnest(?::text[]))", 1), append(slices.Clip(fixed), batch)
		}
		rows, err := s.db.QueryContext(ctx, s.q(q), args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err = scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		if err = rows.Close(); err != nil {
			return err
		}
		if err = rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// EventKey orders a room's events as Synapse's pagination does: topological ordering (the
// depth), then stream ordering.
type EventKey struct {
	Depth  int64 `json:"d"`
	Stream int64 `json:"s"`
}

// Compare orders k and o as cmp.Compare does.
func (k EventKey) Compare(o EventKey) int {
	return cmp.Or(cmp.Compare(k.Depth, o.Depth), cmp.Compare(k.Stream, o.Stream))
}

// Less tells whether k sorts before o.
func (k EventKey) Less(o EventKey) bool { return k.Compare(o) < 0 }

// newestFirst orders events by their keys, newest first (for slices.SortFunc).
func newestFirst(a, b SourceEvent) int { return b.Key.Compare(a.Key) }

// SourceEventInfo is one event of the room in the source, for planning.
type SourceEventInfo struct {
	EventID string
	Key     EventKey
	Type    string
	TS      int64
	Outlier bool
	Size    int64
}

// RoomVersion returns the room's version in the source ("" when the room is unknown there).
func (s *Source) RoomVersion(ctx context.Context, roomID string) (string, error) {
	var v sql.NullString
	err := s.db.QueryRowContext(ctx, s.q(srcRoomVersionQuery), roomID).Scan(&v)
	if err == sql.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read room from import source: %w", err)
	}
	return v.String, nil
}

// RoomEvents lists the room's events in the source, newest first.
func (s *Source) RoomEvents(ctx context.Context, roomID string) ([]SourceEventInfo, error) {
	rows, err := s.db.QueryContext(ctx, s.q(srcRoomEventsQuery), roomID)
	if err != nil {
		return nil, fmt.Errorf("list the room's events in the import source: %w", err)
	}
	defer rows.Close()
	var out []SourceEventInfo
	for rows.Next() {
		var e SourceEventInfo
		var ts sql.NullInt64
		if err = rows.Scan(&e.EventID, &e.Key.Depth, &e.Key.Stream, &e.Type, &ts, &e.Outlier, &e.Size); err != nil {
			return nil, fmt.Errorf("list the room's events in the import source: %w", err)
		}
		e.TS = ts.Int64
		out = append(out, e)
	}
	return out, rows.Err()
}

// SourceEvent is everything the import copies about one event.
type SourceEvent struct {
	EventID       string
	Key           EventKey
	Type          string
	StateKey      *string
	Sender        string
	TS            int64
	Outlier       bool
	ContainsURL   bool
	Rejection     *string
	JSON          string
	InternalMeta  string
	FormatVersion *int64
	StateGroup    *int64
}

// EventsInRange reads the room's events with lo < key <= hi, with their JSON and state group,
// newest first.
func (s *Source) EventsInRange(ctx context.Context, roomID string, lo, hi EventKey) ([]SourceEvent, error) {
	rows, err := s.db.QueryContext(ctx, s.q(srcEventsRangeQuery), roomID, lo.Depth, hi.Depth,
		hi.Depth, hi.Depth, hi.Stream, lo.Depth, lo.Depth, lo.Stream)
	if err != nil {
		return nil, fmt.Errorf("read events from the import source: %w", err)
	}
	defer rows.Close()
	var out []SourceEvent
	for rows.Next() {
		var e SourceEvent
		var stateKey, rejection, sender sql.NullString
		var ts, fv, sg sql.NullInt64
		var containsURL sql.NullBool
		if err = rows.Scan(&e.EventID, &e.Key.Depth, &e.Key.Stream, &e.Type, &stateKey, &sender, &ts, &e.Outlier,
			&containsURL, &rejection, &e.JSON, &e.InternalMeta, &fv, &sg); err != nil {
			return nil, fmt.Errorf("read events from the import source: %w", err)
		}
		e.Sender, e.TS, e.ContainsURL = sender.String, ts.Int64, containsURL.Bool
		if stateKey.Valid {
			e.StateKey = &stateKey.String
		}
		if rejection.Valid {
			e.Rejection = &rejection.String
		}
		if fv.Valid {
			e.FormatVersion = &fv.Int64
		}
		if sg.Valid {
			e.StateGroup = &sg.Int64
		}
		out = append(out, e)
	}
	slices.SortFunc(out, newestFirst)
	return out, rows.Err()
}

// EventJSON reads the JSON of the given events (for conflict checks).
func (s *Source) EventJSON(ctx context.Context, ids []string) (map[string]string, error) {
	out := map[string]string{}
	err := s.queryIn(ctx, srcEventJSONQuery, ids, func(r *sql.Rows) error {
		var id, js string
		if err := r.Scan(&id, &js); err != nil {
			return err
		}
		out[id] = js
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read event JSON from the import source: %w", err)
	}
	return out, nil
}

// NonOutliers returns which of ids the source has as non-outlier events.
func (s *Source) NonOutliers(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.queryIn(ctx, srcNonOutliersQuery, ids, func(r *sql.Rows) error {
		var id string
		if err := r.Scan(&id); err != nil {
			return err
		}
		out[id] = true
		return nil
	}, false)
	if err != nil {
		return nil, fmt.Errorf("look up events in the import source: %w", err)
	}
	return out, nil
}

// Edge is a prev_events row.
type Edge struct {
	EventID, PrevID string
	RoomID          *string
	IsState         bool
}

// Relation is an event_relations row.
type Relation struct {
	EventID, RelatesTo, Type string
	AggregationKey           *string
}

// Redaction is a redactions row.
type Redaction struct {
	EventID, Redacts      string
	HaveCensored, Recheck bool
	ReceivedTS            *int64
}

// Rejection is a rejections row.
type Rejection struct{ EventID, Reason, LastCheck string }

// Membership is a room_memberships row.
type Membership struct {
	EventID, UserID, Sender, Membership string
	DisplayName, AvatarURL              *string
}

// EventRows are the rows of other tables that belong to a set of events.
type EventRows struct {
	Edges       []Edge
	Auth        [][2]string // event_id, auth_id
	Relations   []Relation
	Redactions  []Redaction
	Rejections  []Rejection
	Memberships []Membership
	// Vectors are a PostgreSQL source's event_search vectors (text form) by event and key:
	// what Synapse computed with to_tsvector, so the import need not compute them again.
	Vectors map[[2]string]string
}

// RowsFor reads the edges, auth events, relations, redactions, rejections and memberships of ids.
func (s *Source) RowsFor(ctx context.Context, ids []string) (*EventRows, error) {
	var out EventRows
	type step struct {
		what, query string
		scan        func(*sql.Rows) error
	}
	steps := []step{
		{"event_edges", srcEdgesQuery, func(r *sql.Rows) error {
			var e Edge
			var room sql.NullString
			var isState sql.NullBool
			if err := r.Scan(&e.EventID, &e.PrevID, &room, &isState); err != nil {
				return err
			}
			if room.Valid {
				e.RoomID = &room.String
			}
			e.IsState = isState.Bool
			out.Edges = append(out.Edges, e)
			return nil
		}},
		{"event_auth", srcAuthQuery, func(r *sql.Rows) error {
			var a [2]string
			if err := r.Scan(&a[0], &a[1]); err != nil {
				return err
			}
			out.Auth = append(out.Auth, a)
			return nil
		}},
		{"event_relations", srcRelationsQuery, func(r *sql.Rows) error {
			var rel Relation
			var key sql.NullString
			if err := r.Scan(&rel.EventID, &rel.RelatesTo, &rel.Type, &key); err != nil {
				return err
			}
			if key.Valid {
				rel.AggregationKey = &key.String
			}
			out.Relations = append(out.Relations, rel)
			return nil
		}},
		{"redactions", srcRedactionsQuery, func(r *sql.Rows) error {
			var red Redaction
			var ts sql.NullInt64
			var censored, recheck sql.NullBool
			if err := r.Scan(&red.EventID, &red.Redacts, &censored, &ts, &recheck); err != nil {
				return err
			}
			red.HaveCensored, red.Recheck = censored.Bool, recheck.Bool
			if ts.Valid {
				red.ReceivedTS = &ts.Int64
			}
			out.Redactions = append(out.Redactions, red)
			return nil
		}},
		{"rejections", srcRejectionsQuery, func(r *sql.Rows) error {
			var rej Rejection
			var lastCheck sql.NullString
			if err := r.Scan(&rej.EventID, &rej.Reason, &lastCheck); err != nil {
				return err
			}
			rej.LastCheck = lastCheck.String
			out.Rejections = append(out.Rejections, rej)
			return nil
		}},
		{"room_memberships", srcMembershipsQuery, func(r *sql.Rows) error {
			var m Membership
			var dn, av sql.NullString
			if err := r.Scan(&m.EventID, &m.UserID, &m.Sender, &m.Membership, &dn, &av); err != nil {
				return err
			}
			if dn.Valid {
				m.DisplayName = &dn.String
			}
			if av.Valid {
				m.AvatarURL = &av.String
			}
			out.Memberships = append(out.Memberships, m)
			return nil
		}},
	}
	if !s.sqlite {
		// SQLite's event_search is an FTS table: nothing to reuse there.
		out.Vectors = map[[2]string]string{}
		steps = append(steps, step{"event_search", srcSearchVectorsQuery, func(r *sql.Rows) error {
			var id, key, vec string
			if err := r.Scan(&id, &key, &vec); err != nil {
				return err
			}
			out.Vectors[[2]string{id, key}] = vec
			return nil
		}})
	}
	for _, st := range steps {
		if err := s.queryIn(ctx, st.query, ids, st.scan); err != nil {
			return nil, fmt.Errorf("read %s from the import source: %w", st.what, err)
		}
	}
	return &out, nil
}

// StateEntry is one (type, state_key) → event_id entry of a state group.
type StateEntry struct{ Type, StateKey, EventID string }

// StateGraph is a room's state groups: each group's creating event, its parent (delta base)
// and the delta rows loaded so far.
type StateGraph struct {
	Event  map[int64]string
	Parent map[int64]int64
	Delta  map[int64][]StateEntry
}

// StateGroups reads the room's state groups and their edges from the source.
func (s *Source) StateGroups(ctx context.Context, roomID string) (*StateGraph, error) {
	g := &StateGraph{Event: map[int64]string{}, Parent: map[int64]int64{}, Delta: map[int64][]StateEntry{}}
	rows, err := s.db.QueryContext(ctx, s.q(srcStateGroupsQuery), roomID)
	if err != nil {
		return nil, fmt.Errorf("read state groups from the import source: %w", err)
	}
	for rows.Next() {
		var id int64
		var ev string
		if err = rows.Scan(&id, &ev); err != nil {
			rows.Close()
			return nil, err
		}
		g.Event[id] = ev
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, s.q(srcStateGroupEdgesQuery), roomID)
	if err != nil {
		return nil, fmt.Errorf("read state group edges from the import source: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sg, prev int64
		if err = rows.Scan(&sg, &prev); err != nil {
			return nil, err
		}
		g.Parent[sg] = prev
	}
	return g, rows.Err()
}

// LoadDeltas reads the delta rows of the given groups into g.
func (s *Source) LoadDeltas(ctx context.Context, g *StateGraph, groups []int64) error {
	ids := make([]string, len(groups))
	for i, sg := range groups {
		ids[i] = strconv.FormatInt(sg, 10)
		g.Delta[sg] = g.Delta[sg][:0]
	}
	// Bind as numbers: PostgreSQL compares bigint to bigint, SQLite to its integer column.
	for start := 0; start < len(groups); start += srcBatch {
		batch := groups[start:min(start+srcBatch, len(groups))]
		rows, err := s.db.QueryContext(ctx, s.q(fmt.Sprintf(srcStateDeltasQuery, inList(len(batch)))), anys(batch)...)
		if err != nil {
			return fmt.Errorf("read state from the import source: %w", err)
		}
		for rows.Next() {
			var sg int64
			var e StateEntry
			if err = rows.Scan(&sg, &e.Type, &e.StateKey, &e.EventID); err != nil {
				rows.Close()
				return err
			}
			g.Delta[sg] = append(g.Delta[sg], e)
		}
		rows.Close()
		if err = rows.Err(); err != nil {
			return err
		}
	}
	return nil
}
