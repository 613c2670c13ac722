package importer

// Import target (this server's database).
const (
	importTargetRoomQuery  = `SELECT has_auth_chain_index FROM rooms WHERE room_id = $1`
	importRoomVersionQuery = `SELECT coalesce(room_version, '1') FROM rooms WHERE room_id = $1`
	// The instance that writes events (stream writers other than the main process name
	// themselves in instance_name); "master" on a single-process Synapse.
	importInstanceQuery = `
		SELECT coalesce((SELECT instance_name FROM events WHERE stream_ordering > 0 AND instance_name IS NOT NULL
			ORDER BY stream_ordering DESC LIMIT 1), 'master')`
	importTargetEventsQuery = `SELECT event_id, outlier FROM events WHERE room_id = $1`
	importExistingQuery     = `SELECT event_id, outlier FROM events WHERE event_id = ANY($1)`
	importTargetJSONQuery   = `SELECT event_id, json FROM event_json WHERE event_id = ANY($1)`
	// state_groups has a room_id index; state_groups_state is read by state_group.
	importTargetStateGroupsQuery = `
		SELECT g.id, g.event_id, e.prev_state_group FROM state_groups AS g
		LEFT JOIN state_group_edges AS e ON e.state_group = g.id WHERE g.room_id = $1`
	importTargetDeltasQuery   = `SELECT state_group, type, state_key, event_id FROM state_groups_state WHERE state_group = ANY($1)`
	importNextStateGroupQuery = `SELECT nextval('state_group_id_seq')`
	// Backfilled events are filed below every stream position: -nextval(events_backfill_stream_seq).
	importBackfillSeqQuery = `SELECT -nextval('events_backfill_stream_seq') FROM generate_series(1, $1)`
	// Prev events nobody has become backward extremities (Synapse's upsert, keyed by room and event).
	importBackwardExtremitiesQuery = `
		INSERT INTO event_backward_extremities (event_id, room_id)
		SELECT p, $2 FROM unnest($1::text[]) AS p
		WHERE NOT EXISTS (SELECT 1 FROM events WHERE events.event_id = p AND NOT events.outlier)
		ON CONFLICT DO NOTHING
		RETURNING event_id`
	// Synapse's threads upsert (_handle_event_relations) only replaces a row with a later
	// event, and a backfilled event's negative stream ordering is never later: for imported
	// replies it amounts to inserting threads the server does not have yet.
	importThreadsQuery = `
		INSERT INTO threads (room_id, thread_id, latest_event_id, topological_ordering, stream_ordering)
		SELECT $1, t, e, d, s FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS u(t, e, d, s)
		ON CONFLICT (room_id, thread_id) DO NOTHING
		RETURNING thread_id, latest_event_id`
	// Synapse's search row for PostgreSQL: to_tsvector('english', value), or the vector a
	// PostgreSQL source's Synapse already computed for the event (NULL value: use vec).
	importSearchQuery = `
		INSERT INTO event_search (event_id, room_id, key, vector, stream_ordering, origin_server_ts)
		SELECT id, $2, key, COALESCE(vec::tsvector, to_tsvector('english', value)), so, ts
		FROM unnest($1::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[]) AS u(id, key, value, so, ts, vec)`
)

// Import sources (another Synapse's database, PostgreSQL or SQLite): written with ?
// placeholders, which Source.q turns into $n for PostgreSQL; (%s) is an IN list.
const (
	srcSchemaVersionQuery = `SELECT version FROM schema_version`
	srcRoomVersionQuery   = `SELECT room_version FROM rooms WHERE room_id = ?`
	// events_order_room (room_id, topological_ordering, stream_ordering) serves the room scans.
	// octet_length: the JSON's size in bytes without counting its characters.
	srcRoomEventsQuery = `
		SELECT e.event_id, e.topological_ordering, e.stream_ordering, e.type, e.origin_server_ts, e.outlier, octet_length(j.json)
		FROM events AS e JOIN event_json AS j ON j.event_id = e.event_id
		WHERE e.room_id = ?
		ORDER BY e.topological_ordering DESC, e.stream_ordering DESC`
	// Events with lo < (topological_ordering, stream_ordering) <= hi: the BETWEEN bounds let
	// both engines range-scan events_order_room (room_id, topological_ordering, stream_ordering).
	// The state group is a subquery so that it is looked up by event (PostgreSQL
	// underestimates the range and hash-joined the whole event_to_state_groups for a
	// LEFT JOIN), and the caller sorts (PostgreSQL sorted 5000 rows with their JSON).
	srcEventsRangeQuery = `
		SELECT e.event_id, e.topological_ordering, e.stream_ordering, e.type, e.state_key, e.sender, e.origin_server_ts, e.outlier,
			e.contains_url, e.rejection_reason, j.json, j.internal_metadata, j.format_version,
			(SELECT sg.state_group FROM event_to_state_groups AS sg WHERE sg.event_id = e.event_id)
		FROM events AS e
		JOIN event_json AS j ON j.event_id = e.event_id
		WHERE e.room_id = ? AND e.topological_ordering BETWEEN ? AND ?
			AND (e.topological_ordering < ? OR (e.topological_ordering = ? AND e.stream_ordering <= ?))
			AND (e.topological_ordering > ? OR (e.topological_ordering = ? AND e.stream_ordering > ?))`
	srcEventJSONQuery       = `SELECT event_id, json FROM event_json WHERE event_id IN (%s)`
	srcNonOutliersQuery     = `SELECT event_id FROM events WHERE outlier = ? AND event_id IN (%s)`
	srcEdgesQuery           = `SELECT event_id, prev_event_id, room_id, is_state FROM event_edges WHERE event_id IN (%s)`
	srcAuthQuery            = `SELECT event_id, auth_id FROM event_auth WHERE event_id IN (%s)`
	srcRelationsQuery       = `SELECT event_id, relates_to_id, relation_type, aggregation_key FROM event_relations WHERE event_id IN (%s)`
	srcRedactionsQuery      = `SELECT event_id, redacts, have_censored, received_ts, recheck FROM redactions WHERE event_id IN (%s)`
	srcSearchVectorsQuery   = `SELECT event_id, key, vector::text FROM event_search WHERE event_id IN (%s) AND vector IS NOT NULL`
	srcRejectionsQuery      = `SELECT event_id, reason, last_check FROM rejections WHERE event_id IN (%s)`
	srcMembershipsQuery     = `SELECT event_id, user_id, sender, membership, display_name, avatar_url FROM room_memberships WHERE event_id IN (%s)`
	srcStateGroupsQuery     = `SELECT id, event_id FROM state_groups WHERE room_id = ?`
	srcStateGroupEdgesQuery = `
		SELECT e.state_group, e.prev_state_group FROM state_group_edges AS e
		JOIN state_groups AS g ON g.id = e.state_group WHERE g.room_id = ?`
	// state_groups_state has no room_id index: select by state_group (indexed).
	srcStateDeltasQuery = `SELECT state_group, type, state_key, event_id FROM state_groups_state WHERE state_group IN (%s)`
)
