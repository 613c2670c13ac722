package synapse

import (
	"context"
	"fmt"
	"time"

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
	// membershipsQuery: for (room, user) pairs, the user's current membership in the room and
	// when its event arrived ('' and 0 when the database has none): one primary-key lookup in
	// local_current_membership and one in events per pair.
	membershipsQuery = `
		SELECT p.room_id, p.user_id, coalesce(m.membership, ''), coalesce(e.received_ts, 0)
		FROM unnest($1::text[], $2::text[]) AS p(room_id, user_id)
		LEFT JOIN local_current_membership m ON m.room_id = p.room_id AND m.user_id = p.user_id
		LEFT JOIN events e ON e.event_id = m.event_id`
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

// Membership is a local user's current membership of a room as Synapse's database has it.
type Membership struct {
	Membership string    // "" when the database has none
	Received   time.Time // when its event arrived (zero when none)
}

// Memberships looks up local users' current memberships, keyed by [room, user].
func (db *DB) Memberships(ctx context.Context, pairs [][2]string) (map[[2]string]Membership, error) {
	rooms, users := make([]string, len(pairs)), make([]string, len(pairs))
	for i, p := range pairs {
		rooms[i], users[i] = p[0], p[1]
	}
	rows, err := db.Pool.Query(ctx, membershipsQuery, rooms, users)
	if err != nil {
		return nil, fmt.Errorf("look up memberships: %w", err)
	}
	out := make(map[[2]string]Membership, len(pairs))
	var key [2]string
	var m Membership
	var ms int64
	_, err = pgx.ForEachRow(rows, []any{&key[0], &key[1], &m.Membership, &ms}, func() error {
		m.Received = time.Time{}
		if ms > 0 {
			m.Received = time.UnixMilli(ms)
		}
		out[key] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up memberships: %w", err)
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

const (
	// candidateServersQuery names servers likely to be in a room, from what Synapse still
	// has: the federation queue's per-room destinations, servers of members it has seen,
	// and the senders of invites its users got. Primary-key or indexed lookups by room.
	candidateServersQuery = `
		SELECT server FROM (
			SELECT destination AS server, 1 AS prio FROM destination_rooms WHERE room_id = $1
			UNION ALL
			SELECT substring(user_id FROM position(':' IN user_id) + 1), 2 FROM room_memberships
				WHERE room_id = $1 AND membership = 'join'
			UNION ALL
			SELECT substring(e.sender FROM position(':' IN e.sender) + 1), 3 FROM local_current_membership m
				JOIN events e ON e.event_id = m.event_id WHERE m.room_id = $1 AND m.membership = 'invite'
			UNION ALL
			SELECT server_name, 4 FROM partial_state_rooms_servers WHERE room_id = $1
		) s
		WHERE server <> $2
		GROUP BY server ORDER BY min(prio), count(*) DESC, server`
	// localUsersQuery says which of the given local users exist and whether they are deactivated.
	localUsersQuery = `SELECT name, deactivated = 1 FROM users WHERE name = ANY($1)`
	// localMembershipQuery gives local users' current membership in a room.
	localMembershipQuery = `SELECT user_id, membership FROM local_current_membership WHERE room_id = $1`
)

// CandidateServers lists servers that may be in a room, best first, excluding ourselves.
func (db *DB) CandidateServers(ctx context.Context, roomID, ownServer string) ([]string, error) {
	rows, err := db.Pool.Query(ctx, candidateServersQuery, roomID, ownServer)
	if err != nil {
		return nil, fmt.Errorf("find servers in %s: %w", roomID, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// LocalUsers returns, for each given user that exists locally, whether it is deactivated.
func (db *DB) LocalUsers(ctx context.Context, users []string) (map[string]bool, error) {
	rows, err := db.Pool.Query(ctx, localUsersQuery, users)
	if err != nil {
		return nil, fmt.Errorf("look up local users: %w", err)
	}
	out := map[string]bool{}
	var name string
	var deactivated bool
	_, err = pgx.ForEachRow(rows, []any{&name, &deactivated}, func() error {
		out[name] = deactivated
		return nil
	})
	return out, err
}

// LocalMemberships returns local users' current membership in a room.
func (db *DB) LocalMemberships(ctx context.Context, roomID string) (map[string]string, error) {
	rows, err := db.Pool.Query(ctx, localMembershipQuery, roomID)
	if err != nil {
		return nil, fmt.Errorf("local memberships of %s: %w", roomID, err)
	}
	out := map[string]string{}
	var user, membership string
	_, err = pgx.ForEachRow(rows, []any{&user, &membership}, func() error {
		out[user] = membership
		return nil
	})
	return out, err
}

// puppetTokensQuery finds login-as-user tokens an admin account minted and nobody logged out
// (Synapse stores the minting admin in user_id and the user acted as in puppets_user_id).
const puppetTokensQuery = `SELECT token, puppets_user_id FROM access_tokens WHERE user_id = $1 AND puppets_user_id IS NOT NULL`

// PuppetTokens returns (token, user) pairs of tokens minted by admin with login-as-user.
func (db *DB) PuppetTokens(ctx context.Context, admin string) ([][2]string, error) {
	rows, err := db.Pool.Query(ctx, puppetTokensQuery, admin)
	if err != nil {
		return nil, fmt.Errorf("find minted tokens: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var p [2]string
		return p, r.Scan(&p[0], &p[1])
	})
}

// Health report queries (issue 7). Each is cheap on a big database: catalog statistics,
// small tables, primary-key or index lookups, or a sample; never a full scan of events or
// state_groups_state (the bench checks their plans).
const (
	// HealthRejectionsQuery counts rejected events per room received since $1. rejections is
	// small and has no room column: each row is looked up in events by its unique event_id.
	// LATERAL with OFFSET 0 (which stops PostgreSQL from flattening it into a join) keeps it a
	// per-row index lookup whatever the planner estimates: a plain join (rejectedGroupsQuery)
	// hashes a sequential scan of events once rejections has ~20k rows (bench, 5M events).
	// last_check (text milliseconds, written when Synapse rejected the event, so never before
	// it was received) skips older rejections before any lookup; 13 digits compare as text.
	HealthRejectionsQuery = `
		SELECT e.room_id, count(*), min(e.received_ts), max(e.received_ts)
		FROM rejections r
		CROSS JOIN LATERAL (SELECT ev.room_id, ev.received_ts FROM events ev WHERE ev.event_id = r.event_id OFFSET 0) e
		WHERE (length(r.last_check) <> 13 OR r.last_check >= $1::bigint::text) AND e.received_ts >= $1
		GROUP BY e.room_id
		ORDER BY count(*) DESC, e.room_id`
	// HealthChainRoomsQuery: of the rooms other than $2 (the ones whose chains are walked in
	// full), those with a rejected event received since $1 that cites a rejected event among
	// its auth events — the mark of a rejection chain (an event is rejected because an event
	// it relies on was). Auth events are state events, so every event of a chain after its
	// root cites another rejected event, and a room without such an event has no active chain.
	// Same per-row lookups as HealthRejectionsQuery, plus one event_json row and a few
	// rejections lookups per rejected event of those rooms.
	HealthChainRoomsQuery = `
		SELECT DISTINCT e.room_id
		FROM rejections r
		CROSS JOIN LATERAL (SELECT ev.room_id, ev.received_ts FROM events ev WHERE ev.event_id = r.event_id OFFSET 0) e
		WHERE (length(r.last_check) <> 13 OR r.last_check >= $1::bigint::text) AND e.received_ts >= $1
			AND e.room_id <> ALL($2::text[])
			AND EXISTS (
				SELECT 1 FROM event_json ej, json_array_elements_text(ej.json::json->'auth_events') a(event_id)
				JOIN rejections ra ON ra.event_id = a.event_id
				WHERE ej.event_id = r.event_id)`
	// UndeliveredQuery: for destination $1, the rooms whose latest PDU queued for it was sent
	// after $2 (ms), and the oldest of those. destination_rooms has one row per destination and
	// room (primary key (destination, room_id)), updated with every PDU Synapse queues for it;
	// each row's event is one lookup by the unique stream_ordering.
	UndeliveredQuery = `
		SELECT count(*), min(e.origin_server_ts)
		FROM destination_rooms dr
		CROSS JOIN LATERAL (SELECT ev.origin_server_ts FROM events ev WHERE ev.stream_ordering = dr.stream_ordering OFFSET 0) e
		WHERE dr.destination = $1 AND e.origin_server_ts > $2`
	// HealthRejectionsPerDayQuery: rejected events per room and UTC day since $1 (for the chart).
	HealthRejectionsPerDayQuery = `
		SELECT e.room_id, (e.received_ts / 86400000)::bigint AS day, count(*)
		FROM rejections r
		CROSS JOIN LATERAL (SELECT ev.room_id, ev.received_ts FROM events ev WHERE ev.event_id = r.event_id OFFSET 0) e
		WHERE e.received_ts >= $1
		GROUP BY 1, 2
		ORDER BY 2, 1`
	// HealthPartialJoinsQuery lists rooms in a partial (faster) join, aged by their join event.
	HealthPartialJoinsQuery = `
		SELECT p.room_id, coalesce(p.joined_via, ''), e.received_ts
		FROM partial_state_rooms p LEFT JOIN events e ON e.event_id = p.join_event_id
		ORDER BY p.room_id`
	// HealthDatabaseSizeQuery: the database's size (pg_database_size reads file sizes only).
	HealthDatabaseSizeQuery = `SELECT pg_database_size(current_database())`
	// HealthLargestTablesQuery: biggest tables by total size with the planner's row estimate.
	HealthLargestTablesQuery = `
		SELECT c.relname, pg_total_relation_size(c.oid), greatest(c.reltuples, 0)::bigint
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public'
		ORDER BY 2 DESC
		LIMIT $1`
	// HealthTableEstimateQuery: the planner's row estimate for one table.
	HealthTableEstimateQuery = `SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass($1)`
	// HealthRoomStateSampleQuery estimates state_groups_state rows per room from a block
	// sample of $1 percent (TABLESAMPLE SYSTEM reads only the sampled pages).
	HealthRoomStateSampleQuery = `
		SELECT room_id, count(*) FROM state_groups_state TABLESAMPLE SYSTEM ($1)
		GROUP BY room_id ORDER BY 2 DESC LIMIT $2`
	// HealthRoomStateExactQuery counts exactly; only used while state_groups_state is small.
	HealthRoomStateExactQuery = `
		SELECT room_id, count(*) FROM state_groups_state
		GROUP BY room_id ORDER BY 2 DESC LIMIT $1`
	// HealthCollationQuery: the database's collation, ctype and owner.
	HealthCollationQuery = `
		SELECT datcollate, datctype, pg_get_userbyid(datdba), current_user
		FROM pg_database WHERE datname = current_database()`
	// HealthForeignOwnersQuery: Synapse's tables, sequences and views not owned by the role
	// medic connects as (Synapse's own role).
	HealthForeignOwnersQuery = `
		SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
			AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
		ORDER BY c.relname
		LIMIT 200`
	// HealthSequencesQuery compares the stream-ordering and state-group sequences with the
	// highest value in use (max/min through the unique/primary-key indexes). A sequence that
	// was never called has not handed out last_value yet.
	HealthSequencesQuery = `
		SELECT 'events_stream_seq', (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM events_stream_seq),
			coalesce((SELECT max(stream_ordering) FROM events), 0)
		UNION ALL
		SELECT 'events_backfill_stream_seq', (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM events_backfill_stream_seq),
			coalesce((SELECT -min(stream_ordering) FROM events), 0)
		UNION ALL
		SELECT 'state_group_id_seq', (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM state_group_id_seq),
			coalesce((SELECT max(id) FROM state_groups), 0)`
	// HealthDataDirectoryQuery: where PostgreSQL keeps its files (needs superuser or
	// pg_read_all_settings; the disk check uses it when the directory is on this host).
	HealthDataDirectoryQuery = `SELECT current_setting('data_directory')`
	// HealthBackgroundUpdatesQuery: background updates Synapse still has to run.
	HealthBackgroundUpdatesQuery = `SELECT update_name, coalesce(depends_on, '') FROM background_updates ORDER BY ordering, update_name`
)

// HealthQueries names every health query with example arguments, so the bench can EXPLAIN each.
var HealthQueries = []struct {
	Name string
	SQL  string
	Args []any
}{
	{"rejections per room", HealthRejectionsQuery, []any{int64(0)}},
	{"rooms with a chain", HealthChainRoomsQuery, []any{int64(0), []string{"!room1:bench.example"}}},
	{"room chain walk", roomRejectedQuery, []any{"!room1:bench.example"}},
	{"rejections per day", HealthRejectionsPerDayQuery, []any{int64(0)}},
	{"undelivered PDUs", UndeliveredQuery, []any{"peer.bench.example", int64(0)}},
	{"partial joins", HealthPartialJoinsQuery, nil},
	{"extremities", roomsWithExtremitiesQuery, []any{10, 20}},
	{"database size", HealthDatabaseSizeQuery, nil},
	{"largest tables", HealthLargestTablesQuery, []any{10}},
	{"table estimate", HealthTableEstimateQuery, []any{"state_groups_state"}},
	{"room state (sample)", HealthRoomStateSampleQuery, []any{1.0, 10}},
	{"collation", HealthCollationQuery, nil},
	{"owners", HealthForeignOwnersQuery, nil},
	{"sequences", HealthSequencesQuery, nil},
	{"background updates", HealthBackgroundUpdatesQuery, nil},
	// The state check (synapse/state.go).
	{"state: rooms to audit", auditRoomsQuery, []any{200}},
	{"state: stream since", streamSinceQuery, []any{int64(0)}},
	{"state: resets", resetMembershipsQuery, []any{int64(0), ":bench.example", "", 1000}},
	{"state: current state", currentStateIDsQuery, []any{"!room1:bench.example"}},
	{"state: state events", stateEventsQuery, []any{[]string{"$a", "$b"}}},
}
