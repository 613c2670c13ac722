package synapse

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// What a restore of Synapse's database leaves behind, read (and, with Synapse stopped,
// repaired) by `medic exec aftercare`.

// StreamSequence is a PostgreSQL sequence Synapse checks at start-up against its tables and,
// when it has a stream, against stream_positions (synapse/storage/util/sequence.py:
// check_consistency, called by every MultiWriterIdGenerator and build_sequence_generator with a
// table). A sequence behind its tables Synapse moves forward itself; one behind
// stream_positions stops it with IncorrectDatabaseSetup.
type StreamSequence struct {
	Name string
	// Tables are "table.column" pairs whose values the sequence handed out.
	Tables []string
	// Stream is the stream_positions.stream_name ("" when the sequence has none).
	Stream string
	// Negative sequences count backwards (backfilled events): the tables hold -value.
	Negative bool
}

// StreamSequences are the sequences Synapse 1.160 checks at start-up, from its source:
// synapse/storage/databases/main/{events_worker,account_data,devices,deviceinbox,receipts,
// presence,push_rule,pusher,end_to_end_keys,cache,profile,room,sticky_events,
// thread_subscriptions,appservice}.py and databases/state/store.py.
var StreamSequences = []StreamSequence{
	{Name: "events_stream_seq", Stream: "events", Tables: []string{"events.stream_ordering", "current_state_delta_stream.stream_id", "ex_outlier_stream.event_stream_ordering"}},
	{Name: "events_backfill_stream_seq", Stream: "backfill", Negative: true, Tables: []string{"events.stream_ordering", "ex_outlier_stream.event_stream_ordering"}},
	{Name: "account_data_sequence", Stream: "account_data", Tables: []string{"room_account_data.stream_id", "room_tags_revisions.stream_id", "account_data.stream_id"}},
	{Name: "device_lists_sequence", Stream: "device_lists_stream", Tables: []string{"device_lists_stream.stream_id", "user_signature_stream.stream_id",
		"device_lists_outbound_pokes.stream_id", "device_lists_changes_in_room.stream_id", "device_lists_remote_pending.stream_id"}},
	{Name: "device_inbox_sequence", Stream: "to_device", Tables: []string{"device_inbox.stream_id", "device_federation_outbox.stream_id"}},
	{Name: "receipts_sequence", Stream: "receipts", Tables: []string{"receipts_linearized.stream_id"}},
	{Name: "presence_stream_sequence", Stream: "presence_stream", Tables: []string{"presence_stream.stream_id"}},
	{Name: "push_rules_stream_sequence", Stream: "push_rules_stream", Tables: []string{"push_rules_stream.stream_id"}},
	{Name: "pushers_sequence", Stream: "pushers", Tables: []string{"pushers.id", "deleted_pushers.stream_id"}},
	{Name: "e2e_cross_signing_keys_sequence", Stream: "e2e_cross_signing_keys", Tables: []string{"e2e_cross_signing_keys.stream_id"}},
	{Name: "cache_invalidation_stream_seq", Stream: "caches", Tables: []string{"cache_invalidation_stream_by_instance.stream_id"}},
	{Name: "profile_updates_sequence", Stream: "profile_updates", Tables: []string{"profile_updates.stream_id"}},
	{Name: "un_partial_stated_event_stream_sequence", Stream: "un_partial_stated_event_stream", Tables: []string{"un_partial_stated_event_stream.stream_id"}},
	{Name: "un_partial_stated_room_stream_sequence", Stream: "un_partial_stated_room_stream", Tables: []string{"un_partial_stated_room_stream.stream_id"}},
	{Name: "quarantined_media_id_seq", Stream: "quarantined_media", Tables: []string{"quarantined_media_changes.stream_id"}},
	{Name: "sticky_events_sequence", Stream: "sticky_events", Tables: []string{"sticky_events.stream_id"}},
	{Name: "thread_subscriptions_sequence", Stream: "thread_subscriptions", Tables: []string{"thread_subscriptions.stream_id"}},
	{Name: "event_auth_chain_id", Tables: []string{"event_auth_chains.chain_id"}},
	{Name: "application_services_txn_id_seq", Tables: []string{"application_services_txns.txn_id"}},
	{Name: "state_group_id_seq", Tables: []string{"state_groups.id"}},
}

// The sequence queries are built from StreamSequences (fixed names, never input): one
// template each, filled per sequence and table.
const (
	// aftercareRelExistsQuery: a table or sequence of a later or earlier Synapse may not exist.
	aftercareRelExistsQuery = `SELECT to_regclass($1) IS NOT NULL`
	// aftercareSeqLastQuery is the sequence's last handed-out value, as Synapse reads it.
	aftercareSeqLastQuery = `SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s`
	// aftercareTableMaxQuery is Synapse's own table check (GREATEST(MAX(col), 0), or -MIN).
	aftercareTableMaxQuery = `SELECT coalesce(GREATEST(%s(%s), 0), 0) FROM %s`
	// aftercareIndexedQuery: whether a (non-partial) index leads with the column, so that its
	// MAX is one index probe rather than a scan of the table.
	aftercareIndexedQuery = `SELECT EXISTS (SELECT 1 FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = $1::regclass AND a.attname = $2 AND i.indpred IS NULL)`
	// aftercareStreamMaxQuery: the highest position Synapse recorded for the stream.
	aftercareStreamMaxQuery = `SELECT coalesce(MAX(stream_id), 0) FROM stream_positions WHERE stream_name = $1`
	// aftercareSetvalQuery moves a sequence forward to $2, never back.
	aftercareSetvalQuery = `SELECT setval($1::regclass, GREATEST($2::bigint, (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s)))`
)

// SequenceLag is a stream sequence behind what Synapse expects of it.
type SequenceLag struct {
	Name string `json:"name"`
	Last int64  `json:"last"`
	// Table is the highest value its tables hold (TableName's); Position its stream's highest
	// stream_positions entry.
	Table     int64  `json:"table"`
	TableName string `json:"table_name,omitempty"`
	Position  int64  `json:"position"`
	Stream    string `json:"stream,omitempty"`
	// ClientsSeen is the highest position of the stream that clients' sync tokens hold
	// (Synapse's access log) when it is above everything the database has, else 0.
	ClientsSeen int64 `json:"clients_seen,omitempty"`
}

// ClientMargin is how far past the highest position seen in clients' sync tokens a sequence
// is moved: a client's newest token is the one its last response returned, which the access
// log shows only once the client uses it. Positions are bigints; a gap is as harmless as the
// ones rolled-back transactions leave.
const ClientMargin = 10000

// Want is the value the sequence must have: nothing in use, nor recorded, nor held by a
// client, above it.
func (l SequenceLag) Want() int64 {
	if l.ClientsSeen > 0 {
		return max(l.Table, l.Position, l.ClientsSeen+ClientMargin)
	}
	return max(l.Table, l.Position)
}

// StopsSynapse tells whether Synapse refuses to start on it (a stream position above the
// sequence) rather than repairing it itself (only a table above it).
func (l SequenceLag) StopsSynapse() bool { return l.Position > l.Last }

func relExists(ctx context.Context, q querier, name string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, aftercareRelExistsQuery, name).Scan(&ok)
	return ok, err
}

// SequenceLags lists the stream sequences behind their tables or their stream's position.
// With indexedOnly it reads only the table columns an index leads with (one probe each) and
// skips the others (account_data, room_account_data, room_tags_revisions and
// application_services_txns in Synapse 1.160), whose MAX is a scan of the table: room_account_data
// has a row per user and room. The health check reads them so, while Synapse runs: a sequence
// behind a table Synapse moves forward itself when it starts (check_consistency), and it
// allocates through the sequence after; only a sequence behind stream_positions stops it.
// The offline aftercare reads every column.
//
// clients are the highest positions per stream (stream_positions names) that clients' sync
// tokens hold, nil if unknown: a stream they are ahead of gets its sequence moved past them,
// so that Synapse, which takes its position from the sequence at start-up, neither gives
// what arrives next positions those clients think they have seen, nor waits for them.
func (db *DB) SequenceLags(ctx context.Context, indexedOnly bool, clients map[string]int64) ([]SequenceLag, error) {
	var lags []SequenceLag
	for _, s := range StreamSequences {
		ok, err := relExists(ctx, db.Pool, s.Name)
		if err != nil {
			return nil, fmt.Errorf("look for sequence %s: %w", s.Name, err)
		} else if !ok {
			continue
		}
		l := SequenceLag{Name: s.Name, Stream: s.Stream}
		if err = db.Pool.QueryRow(ctx, fmt.Sprintf(aftercareSeqLastQuery, pgx.Identifier{s.Name}.Sanitize())).Scan(&l.Last); err != nil {
			return nil, fmt.Errorf("read sequence %s: %w", s.Name, err)
		}
		for _, tc := range s.Tables {
			tbl, col, _ := strings.Cut(tc, ".")
			if ok, err = relExists(ctx, db.Pool, tbl); err != nil {
				return nil, fmt.Errorf("look for table %s: %w", tbl, err)
			} else if !ok {
				continue
			}
			if indexedOnly {
				if err = db.Pool.QueryRow(ctx, aftercareIndexedQuery, tbl, col).Scan(&ok); err != nil {
					return nil, fmt.Errorf("look for an index on %s: %w", tc, err)
				} else if !ok {
					continue
				}
			}
			agg := "MAX"
			if s.Negative {
				agg = "-MIN"
			}
			var v int64
			q := fmt.Sprintf(aftercareTableMaxQuery, agg, pgx.Identifier{col}.Sanitize(), pgx.Identifier{tbl}.Sanitize())
			if err = db.Pool.QueryRow(ctx, q).Scan(&v); err != nil {
				return nil, fmt.Errorf("read the highest %s: %w", tc, err)
			}
			if v > l.Table {
				l.Table, l.TableName = v, tc
			}
		}
		if s.Stream != "" {
			if err = db.Pool.QueryRow(ctx, aftercareStreamMaxQuery, s.Stream).Scan(&l.Position); err != nil {
				return nil, fmt.Errorf("read stream_positions of %s: %w", s.Stream, err)
			}
		}
		if c := clients[s.Stream]; s.Stream != "" && c > max(l.Want(), l.Last) {
			l.ClientsSeen = c
		}
		if l.Want() > l.Last {
			lags = append(lags, l)
		}
	}
	return lags, nil
}

// AdvanceSequences sets each sequence to the value Synapse expects (never backwards), in one
// transaction. A sequence is no row: nothing is journaled, and undo does not put it back
// (behind again, it would stop Synapse or hand out ids already in use).
func (db *DB) AdvanceSequences(ctx context.Context, lags []SequenceLag) error {
	return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		for _, l := range lags {
			q := fmt.Sprintf(aftercareSetvalQuery, pgx.Identifier{l.Name}.Sanitize())
			if _, err := tx.Exec(ctx, q, l.Name, l.Want()); err != nil {
				return fmt.Errorf("setval %s: %w", l.Name, err)
			}
		}
		return nil
	})
}

const (
	// aftercareForeignQuery lists Synapse's tables, views, sequences not tied to a table
	// column (those follow their table) and functions owned by another role than the one
	// connected, with whether that role may hand them over (superuser, or member of the owner).
	aftercareForeignQuery = `
		WITH me AS (SELECT oid, rolsuper FROM pg_roles WHERE rolname = current_user)
		SELECT c.relkind::text, c.oid::regclass::text, pg_get_userbyid(c.relowner),
			(SELECT rolsuper FROM me) OR pg_has_role(current_user, c.relowner, 'MEMBER')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
			AND c.relowner <> (SELECT oid FROM me)
			AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d
				WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
		UNION ALL
		SELECT 'f', p.oid::regprocedure::text, pg_get_userbyid(p.proowner),
			(SELECT rolsuper FROM me) OR pg_has_role(current_user, p.proowner, 'MEMBER')
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'public' AND p.proowner <> (SELECT oid FROM me)
		ORDER BY 2`
)

// Owned is an object of Synapse's schema owned by another role than Synapse's.
type Owned struct {
	Kind  string `json:"kind"` // TABLE, VIEW, MATERIALIZED VIEW, SEQUENCE, FUNCTION
	Name  string `json:"name"` // as PostgreSQL prints it (functions with their arguments)
	Owner string `json:"owner"`
	// CanFix is false when the role medic connects as may not take it over (neither a
	// superuser nor a member of the owner): then a superuser must.
	CanFix bool `json:"can_fix"`
}

// AlterStatement is the statement that gives the object to the role connected (Synapse's).
func (o Owned) AlterStatement(role string) string {
	return fmt.Sprintf("ALTER %s %s OWNER TO %s", o.Kind, o.Name, pgx.Identifier{role}.Sanitize())
}

// TakeOverScript is the statement a superuser runs in Synapse's database to give every
// object of its schema to role, when that role may not take them itself (a restore as
// postgres with --no-owner). REASSIGN OWNED BY postgres cannot do it: postgres also owns the
// system's objects. Tables go first: their column sequences follow them.
func TakeOverScript(role string) string {
	r := strings.ReplaceAll(pgx.Identifier{role}.Sanitize(), "'", "''")
	return `DO $$DECLARE o record; BEGIN ` +
		`FOR o IN SELECT c.oid::regclass AS name, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind ` +
		`FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') ` +
		`ORDER BY c.relkind = 'S' LOOP EXECUTE format('ALTER %s %s OWNER TO ` + r + `', o.kind, o.name); END LOOP; ` +
		`FOR o IN SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ` +
		`LOOP EXECUTE format('ALTER FUNCTION %s OWNER TO ` + r + `', o.name); END LOOP; END$$`
}

// ForeignOwnedObjects lists Synapse's objects owned by another role (all of them: unlike the
// health check's list, it is what a repair works through).
func (db *DB) ForeignOwnedObjects(ctx context.Context) ([]Owned, error) {
	rows, err := db.Pool.Query(ctx, aftercareForeignQuery)
	if err != nil {
		return nil, fmt.Errorf("list objects owned by other roles: %w", err)
	}
	kinds := map[string]string{"r": "TABLE", "p": "TABLE", "S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FUNCTION"}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Owned, error) {
		var o Owned
		var kind string
		err := r.Scan(&kind, &o.Name, &o.Owner, &o.CanFix)
		o.Kind = kinds[kind]
		return o, err
	})
}

// TakeOwnership gives the objects to the role connected (Synapse's), in one transaction.
// Tables take their indexes and column sequences with them. Ownership is no row: nothing is
// journaled; the report lists the previous owners.
func (db *DB) TakeOwnership(ctx context.Context, objs []Owned) error {
	return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var role string
		if err := tx.QueryRow(ctx, `SELECT current_user`).Scan(&role); err != nil {
			return err
		}
		for _, o := range objs {
			if _, err := tx.Exec(ctx, o.AlterStatement(role)); err != nil {
				return fmt.Errorf("%s: %w", o.AlterStatement(role), err)
			}
		}
		return nil
	})
}

// The one-time keys, device lists and federation backoff a restore brings back.
const (
	// AftercareOneTimeKeysQuery: one-time keys, and the devices that have any.
	AftercareOneTimeKeysQuery = `SELECT count(*), count(DISTINCT (user_id, device_id)) FROM e2e_one_time_keys_json`
	// AftercareRemoteUsersQuery: remote users whose device lists Synapse tracks and that are
	// not yet marked for a resync.
	AftercareRemoteUsersQuery = `SELECT e.user_id FROM device_lists_remote_extremeties e
		WHERE NOT EXISTS (SELECT 1 FROM device_lists_remote_resync r WHERE r.user_id = e.user_id) ORDER BY e.user_id`
	// AftercareMarkResyncQuery marks remote users' device lists stale the way Synapse does
	// (mark_remote_users_device_caches_as_stale): its background loop resyncs them every 30 s.
	AftercareMarkResyncQuery = `INSERT INTO device_lists_remote_resync (user_id, added_ts)
		SELECT u, $2 FROM unnest($1::text[]) AS u ON CONFLICT (user_id) DO NOTHING RETURNING user_id`
	// AftercareBackoffQuery: destinations Synapse backs off from (the admin API's
	// reset_connection criterion, retry_last_ts, or a recorded failure).
	AftercareBackoffQuery = `SELECT destination FROM destinations WHERE retry_last_ts > 0 OR failure_ts IS NOT NULL ORDER BY destination`
	// AftercareBackoffWhere/Set are the reset Synapse's admin API makes (reset_retry_timings).
	AftercareBackoffWhere = `t.destination = ANY($1) AND (t.retry_last_ts > 0 OR t.failure_ts IS NOT NULL)`
	AftercareBackoffSet   = `failure_ts = NULL, retry_last_ts = 0, retry_interval = 0`
	// AftercareLastEventQuery: the newest event the database holds (where a restored
	// database ends: what came after the backup is not in it).
	AftercareLastEventQuery = `SELECT stream_ordering, received_ts FROM events
		WHERE stream_ordering = (SELECT max(stream_ordering) FROM events)`
	// aftercareSessionsQuery: other sessions on this database of Synapse's role, besides
	// medic's own (application_name synapse-medic): Synapse or one of its workers.
	aftercareSessionsQuery = `SELECT coalesce(nullif(application_name, ''), '(no name)') || ' from ' || coalesce(host(client_addr), 'local socket')
		FROM pg_stat_activity
		WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()
			AND application_name NOT LIKE 'synapse-medic%' AND application_name <> current_setting('application_name')
			AND backend_type = 'client backend'
		ORDER BY backend_start`
)

// ApplicationName is what medic's connections to Synapse's database call themselves, so
// that the aftercare can tell its own sessions from Synapse's.
const ApplicationName = "synapse-medic"

// OneTimeKeys counts the one-time keys and the devices that have some.
func (db *DB) OneTimeKeys(ctx context.Context) (keys, devices int, err error) {
	if err = db.Pool.QueryRow(ctx, AftercareOneTimeKeysQuery).Scan(&keys, &devices); err != nil {
		err = fmt.Errorf("count one-time keys: %w", err)
	}
	return
}

// TrackedRemoteUsers lists the remote users whose device lists Synapse caches and that are
// not marked for resync.
func (db *DB) TrackedRemoteUsers(ctx context.Context) ([]string, error) {
	rows, err := db.Pool.Query(ctx, AftercareRemoteUsersQuery)
	if err != nil {
		return nil, fmt.Errorf("list remote device lists: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// BackedOffDestinations lists the servers Synapse backs off from.
func (db *DB) BackedOffDestinations(ctx context.Context) ([]string, error) {
	rows, err := db.Pool.Query(ctx, AftercareBackoffQuery)
	if err != nil {
		return nil, fmt.Errorf("list destinations in backoff: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// LastEvent returns the newest event's stream ordering and when it was received (ms), or
// zeros when there is none.
func (db *DB) LastEvent(ctx context.Context) (ordering, receivedMS int64, err error) {
	err = db.Pool.QueryRow(ctx, AftercareLastEventQuery).Scan(&ordering, &receivedMS)
	if err == pgx.ErrNoRows {
		return 0, 0, nil
	} else if err != nil {
		err = fmt.Errorf("read the newest event: %w", err)
	}
	return
}

// OtherSessions describes the sessions of Synapse's role on its database other than medic's:
// while there are any, Synapse (or a worker, or someone's psql as Synapse's role) is using it.
func (db *DB) OtherSessions(ctx context.Context) ([]string, error) {
	rows, err := db.Pool.Query(ctx, aftercareSessionsQuery)
	if err != nil {
		return nil, fmt.Errorf("list sessions on Synapse's database: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
