package synapse

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/synapse-medic/medic/testbed"
)

// TestUnrejectDigests: the digests !unreject's verdict cache keys on change with every row
// the verification reads, not with rows it does not read, and a snapshot keeps its view.
func TestUnrejectDigests(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	dsn := testbed.ScratchDB(t, tb.HS1, "events", "rejections", "event_json", "rooms", "server_keys_json")
	db, err := OpenDB(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	const room, other = "!r:hs2.test", "!other:hs2.test"
	event := func(stream int, id, room, typ string, stateKey any, rejected bool, content string) {
		t.Helper()
		var reason any
		if rejected {
			reason = "auth_error"
		}
		exec(`INSERT INTO events (stream_ordering, topological_ordering, event_id, type, room_id, processed, outlier, depth,
			origin_server_ts, received_ts, sender, instance_name, state_key, rejection_reason)
			VALUES ($1, $1, $2, $3, $4, true, false, $1, 1795000000000, 1795000000000, '@mod:hs2.test', 'master', $5, $6)`,
			stream, id, typ, room, stateKey, reason)
		exec(`INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version) VALUES ($1, $2, '{}', $3, 3)`,
			id, room, fmt.Sprintf(`{"type":%q,"content":%s,"auth_events":["$create"]}`, typ, content))
		if rejected {
			exec(`INSERT INTO rejections (event_id, reason, last_check) VALUES ($1, 'auth_error', '1')`, id)
		}
	}
	exec(`INSERT INTO rooms (room_id, is_public, creator, room_version) VALUES ($1, false, '@mod:hs2.test', '10'), ($2, false, '@mod:hs2.test', '10')`, room, other)
	event(1, "$create", room, "m.room.create", "", false, `{}`)
	event(2, "$pl", room, "m.room.power_levels", "", true, `{"users":{}}`)
	event(3, "$msg", room, "m.room.message", nil, true, `{"body":"hi"}`)
	event(4, "$join", room, "m.room.member", "@bob:hs3.test", true, `{"membership":"join","join_authorised_via_users_server":"@mod:hs2.test"}`)
	event(5, "$otherpl", other, "m.room.power_levels", "", true, `{}`)
	exec(`INSERT INTO server_keys_json (server_name, key_id, from_server, ts_added_ms, ts_valid_until_ms, key_json)
		VALUES ('hs2.test', 'ed25519:a', 'hs2.test', 1, 2, '\x7b7d'), ('hs9.test', 'ed25519:a', 'hs9.test', 1, 2, '\x7b7d')`)

	type digests struct {
		rejected RejectedDigest
		events   string
		keys     string
	}
	read := func(s *Snapshot) digests {
		t.Helper()
		var d digests
		var err error
		if d.rejected, err = s.RejectedDigest(ctx, room); err != nil {
			t.Fatal(err)
		}
		if d.events, err = s.EventsDigest(ctx, []string{"$create", "$missing"}); err != nil {
			t.Fatal(err)
		}
		if d.keys, _, err = s.ServerKeysDigest(ctx, []string{"hs2.test", "hs3.test"}); err != nil {
			t.Fatal(err)
		}
		return d
	}
	now := func() digests {
		t.Helper()
		s, err := db.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return read(s)
	}

	base := now()
	if base.rejected.RoomVersion != "10" || base.rejected.Count != 3 || base.rejected.Digest == "" {
		t.Fatalf("rejected digest: %+v", base.rejected)
	}
	if again := now(); again != base {
		t.Fatalf("digests differ without a change: %+v vs %+v", base, again)
	}
	s, err := db.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }() // the snapshot s is at the end
	if users, err := s.AuthorisingUsers(ctx, room); err != nil || !slices.Equal(users, []string{"@mod:hs2.test"}) {
		t.Fatalf("authorising users: %v, %v", users, err)
	}
	if _, stored, err := s.ServerKeysDigest(ctx, []string{"hs2.test", "hs3.test"}); err != nil || !slices.Equal(stored, []string{"hs2.test"}) {
		t.Fatalf("servers with stored keys: %v, %v", stored, err)
	}

	// Rows the verification does not read leave the digests alone.
	exec(`UPDATE event_json SET json = '{"changed":1}' WHERE event_id = '$otherpl'`)
	exec(`DELETE FROM rejections WHERE event_id = '$otherpl'`)
	exec(`UPDATE server_keys_json SET ts_valid_until_ms = 3 WHERE server_name = 'hs9.test'`)
	exec(`UPDATE rejections SET last_check = '2'`)
	if d := now(); d != base {
		t.Fatalf("digests changed with rows the verification does not read: %+v vs %+v", base, d)
	}

	// A rejected event's JSON counts by its row version: a change, and even a rewrite of the
	// same JSON, is a new digest (a new verification, never a stale one reused).
	for _, change := range []string{`UPDATE event_json SET json = json || ' ' WHERE event_id = '$msg'`,
		`UPDATE event_json SET json = rtrim(json) WHERE event_id = '$msg'`, `UPDATE event_json SET json = json WHERE event_id = '$msg'`} {
		exec(change)
		d := now()
		if d.rejected == base.rejected {
			t.Errorf("%s: the rejected events' digest did not change", change)
		}
		if dd := read(s); dd != base {
			t.Errorf("%s: the earlier snapshot sees the change: %+v", change, dd)
		}
		if d.events != base.events || d.keys != base.keys {
			t.Errorf("%s: other digests changed: %+v vs %+v", change, d, base)
		}
		base = d
		s.Close()
		if s, err = db.Snapshot(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Each other row the verification reads changes its digest, by value.
	for _, tc := range []struct {
		what, change, undo string
		field              func(d digests) any
	}{
		{"a rejections row", `DELETE FROM rejections WHERE event_id = '$msg'`,
			`INSERT INTO rejections (event_id, reason, last_check) VALUES ('$msg', 'auth_error', '1')`, func(d digests) any { return d.rejected }},
		{"a rejection reason", `UPDATE rejections SET reason = 'other' WHERE event_id = '$msg'`,
			`UPDATE rejections SET reason = 'auth_error' WHERE event_id = '$msg'`, func(d digests) any { return d.rejected }},
		{"events.rejection_reason", `UPDATE events SET rejection_reason = NULL WHERE event_id = '$msg'`,
			`UPDATE events SET rejection_reason = 'auth_error' WHERE event_id = '$msg'`, func(d digests) any { return d.rejected }},
		{"the order", `UPDATE events SET topological_ordering = 10 WHERE event_id = '$pl'`,
			`UPDATE events SET topological_ordering = 2 WHERE event_id = '$pl'`, func(d digests) any { return d.rejected }},
		{"the room version", `UPDATE rooms SET room_version = '11' WHERE room_id = '!r:hs2.test'`,
			`UPDATE rooms SET room_version = '10' WHERE room_id = '!r:hs2.test'`, func(d digests) any { return d.rejected }},
		{"a cited event's JSON", `UPDATE event_json SET json = json || ' ' WHERE event_id = '$create'`,
			`UPDATE event_json SET json = rtrim(json) WHERE event_id = '$create'`, func(d digests) any { return d.events }},
		{"a cited event rejected", `UPDATE events SET rejection_reason = 'auth_error' WHERE event_id = '$create'`,
			`UPDATE events SET rejection_reason = NULL WHERE event_id = '$create'`, func(d digests) any { return d.events }},
		{"a cited event arriving", `INSERT INTO events (stream_ordering, topological_ordering, event_id, type, room_id, processed, outlier, depth,
			origin_server_ts, received_ts, sender, instance_name) VALUES (9, 9, '$missing', 'm.room.member', '!r:hs2.test', true, false, 9, 1, 1, '@a:hs2.test', 'master');
			INSERT INTO event_json (event_id, room_id, internal_metadata, json) VALUES ('$missing', '!r:hs2.test', '{}', '{}')`,
			`DELETE FROM event_json WHERE event_id = '$missing'; DELETE FROM events WHERE event_id = '$missing'`, func(d digests) any { return d.events }},
		{"a stored key", `UPDATE server_keys_json SET key_json = '\x7b2022227d' WHERE server_name = 'hs2.test'`,
			`UPDATE server_keys_json SET key_json = '\x7b7d' WHERE server_name = 'hs2.test'`, func(d digests) any { return d.keys }},
		{"a key's validity", `UPDATE server_keys_json SET ts_valid_until_ms = 5 WHERE server_name = 'hs2.test'`,
			`UPDATE server_keys_json SET ts_valid_until_ms = 2 WHERE server_name = 'hs2.test'`, func(d digests) any { return d.keys }},
		{"a new key", `INSERT INTO server_keys_json VALUES ('hs3.test', 'ed25519:b', 'hs3.test', 1, 2, '\x7b7d')`,
			`DELETE FROM server_keys_json WHERE server_name = 'hs3.test'`, func(d digests) any { return d.keys }},
	} {
		exec(tc.change)
		changed := now()
		if tc.field(changed) == tc.field(base) {
			t.Errorf("%s changed, digest did not: %+v", tc.what, tc.field(changed))
		}
		// The snapshot taken before still sees the rows as they were.
		if d := read(s); d != base {
			t.Errorf("%s: the earlier snapshot sees the change: %+v", tc.what, d)
		}
		exec(tc.undo)
		if d := now(); d != base {
			t.Errorf("%s undone, digests differ: %+v vs %+v", tc.what, d, base)
		}
	}
}
