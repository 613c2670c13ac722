package synapse

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// What !unreject's verification reads, as digests, so that a re-plan can tell whether a
// verification's outcome still holds without running it again (recovery/unreject_cache.go).
// Each digest covers exactly the rows the verification reads (RoomRejected, RoomRejectedJSON,
// EventsByID, ServerKeys), with the columns it reads, and in the order it reads them.
const (
	// snapshotWorkMem keeps the digest's sort of a 100k-event room in memory.
	snapshotWorkMem = `SET LOCAL work_mem = '32MB'`
	// snapshotTakeQuery is the first query of a snapshot transaction: it fixes the snapshot.
	snapshotTakeQuery = `SELECT 1`
	// rejectedDigestQuery: the room's version, how many rejected events it has and a digest of
	// them: each one's ID, type, state key, sender, depth, position, received time, both
	// rejection rows (events.rejection_reason and rejections.reason) and its JSON (its auth
	// events, content, hashes and signatures), in depth order (the order they are checked).
	// The JSON counts by its row version (xmin): any write of an event_json row gives it a new
	// one (Synapse writes a row once, and again only to censor a redacted event), and reading
	// xmin instead of hashing 100k events' JSON halves the query (0.6-0.8 s to 0.4 s), which
	// the approval's re-plan waits for. A rewrite with the same JSON then reads as a change: a
	// verification again, never a stale one reused.
	rejectedDigestQuery = `
		SELECT coalesce((SELECT room_version FROM rooms WHERE room_id = $1), ''), count(*),
			coalesce(md5(string_agg(md5(ROW(e.event_id, e.type, e.state_key, e.sender, e.depth,
				e.topological_ordering, e.stream_ordering, e.received_ts, e.rejection_reason, r.reason,
				j.xmin)::text), '' ORDER BY e.topological_ordering, e.stream_ordering)), '')
		FROM events AS e
		LEFT JOIN rejections AS r USING (event_id)
		JOIN event_json AS j USING (event_id)
		WHERE e.room_id = $1 AND (e.rejection_reason IS NOT NULL OR r.event_id IS NOT NULL)`
	// eventsDigestQuery: a digest of events as EventsByID reads them (JSON and whether they
	// are rejected); an event Synapse does not have counts by its absence.
	eventsDigestQuery = `
		SELECT count(*), coalesce(md5(string_agg(md5(ROW(e.event_id,
				e.rejection_reason IS NOT NULL OR r.event_id IS NOT NULL, md5(j.json))::text), '' ORDER BY e.event_id)), '')
		FROM events AS e
		LEFT JOIN rejections AS r USING (event_id)
		JOIN event_json AS j USING (event_id)
		WHERE e.event_id = ANY($1)`
	// serverKeysDigestQuery: a digest of the signing keys Synapse stored for some servers
	// (the rows ServerKeys reads for them), and which of the servers have any.
	serverKeysDigestQuery = `
		SELECT coalesce(md5(string_agg(md5(ROW(k.server_name, k.key_id, k.from_server, k.ts_valid_until_ms,
				md5(k.key_json))::text), '' ORDER BY k.server_name, k.key_id, k.from_server)), ''),
			coalesce(array_agg(DISTINCT k.server_name), '{}')
		FROM server_keys_json AS k
		WHERE k.server_name = ANY($1)`
	// authorisingUsersQuery: the users named by join_authorised_via_users_server in a room's
	// rejected member events; the auth rules check their servers' signatures on those events.
	// Only member events' JSON is parsed.
	authorisingUsersQuery = `
		SELECT DISTINCT a.user_id
		FROM events AS e
		LEFT JOIN rejections AS r USING (event_id)
		JOIN event_json AS j USING (event_id)
		CROSS JOIN LATERAL (SELECT j.json::json -> 'content' ->> 'join_authorised_via_users_server') AS a(user_id)
		WHERE e.room_id = $1 AND e.type = 'm.room.member' AND (e.rejection_reason IS NOT NULL OR r.event_id IS NOT NULL)
			AND a.user_id IS NOT NULL`
)

// Snapshot reads Synapse's database as it was at one moment (a read-only repeatable-read
// transaction): every read through it sees the same rows, whatever changes meanwhile. Close
// it when done; it holds one connection.
type Snapshot struct{ tx pgx.Tx }

// Snapshot takes a snapshot of the database now.
func (db *DB) Snapshot(ctx context.Context) (*Snapshot, error) {
	tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("snapshot of Synapse's database: %w", err)
	}
	for _, q := range []string{snapshotWorkMem, snapshotTakeQuery} {
		if _, err = tx.Exec(ctx, q); err != nil {
			_ = tx.Rollback(context.Background())
			return nil, fmt.Errorf("snapshot of Synapse's database: %w", err)
		}
	}
	return &Snapshot{tx: tx}, nil
}

// Close ends the snapshot.
func (s *Snapshot) Close() { _ = s.tx.Rollback(context.Background()) }

// RejectedDigest describes a room's rejected events as the verification reads them.
type RejectedDigest struct {
	RoomVersion string // "" if Synapse does not know the room
	Count       int
	Digest      string
}

// RejectedDigest digests a room's rejected events: IDs, rejection rows, JSON, order.
func (s *Snapshot) RejectedDigest(ctx context.Context, room string) (RejectedDigest, error) {
	var d RejectedDigest
	if err := s.tx.QueryRow(ctx, rejectedDigestQuery, room).Scan(&d.RoomVersion, &d.Count, &d.Digest); err != nil {
		return d, fmt.Errorf("digest rejected events of %s: %w", room, err)
	}
	return d, nil
}

// EventsDigest digests events by ID as EventsByID reads them (JSON, rejection status).
func (s *Snapshot) EventsDigest(ctx context.Context, ids []string) (string, error) {
	var n int
	var d string
	if err := s.tx.QueryRow(ctx, eventsDigestQuery, ids).Scan(&n, &d); err != nil {
		return "", fmt.Errorf("digest events: %w", err)
	}
	return fmt.Sprintf("%d:%s", n, d), nil
}

// ServerKeysDigest digests the signing keys Synapse stored for servers and says which of
// the servers have any.
func (s *Snapshot) ServerKeysDigest(ctx context.Context, servers []string) (digest string, stored []string, err error) {
	if err = s.tx.QueryRow(ctx, serverKeysDigestQuery, servers).Scan(&digest, &stored); err != nil {
		return "", nil, fmt.Errorf("digest server keys: %w", err)
	}
	return digest, stored, nil
}

// AuthorisingUsers lists the users named by join_authorised_via_users_server in a room's
// rejected member events.
func (s *Snapshot) AuthorisingUsers(ctx context.Context, room string) ([]string, error) {
	rows, err := s.tx.Query(ctx, authorisingUsersQuery, room)
	if err != nil {
		return nil, fmt.Errorf("authorising users of %s: %w", room, err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("authorising users of %s: %w", room, err)
	}
	return users, nil
}
