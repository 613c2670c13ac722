package synapselog

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Lines as Synapse 1.160 writes them (from the incidents, reproduced on the testbed).
const sample = `2026-11-21 21:39:36,100 - synapse.federation.transport.server.federation - 118 - INFO - PUT-2 - Received txn 1795293753415 from hs2.test:8482. (PDUs: 1, EDUs: 0)
2026-11-21 21:39:36,120 - synapse.federation.federation_server - 1331 - INFO - PUT-2 - Ignoring PDU for unknown room_id: !cOTYYYiwcKsXEVAnxV:hs2.test:8482
2026-11-21 21:39:36,130 - synapse.handlers.receipts - 160 - INFO - PUT-1 - Ignoring receipt for room '!cOTYYYiwcKsXEVAnxV:hs2.test:8482' from server hs2.test:8482 as we're not in the room
2026-11-21 21:39:36,140 - synapse.access.https.8481 - 473 - INFO - PUT-2 - 127.0.0.1 - 8481 - {hs2.test:8482} Processed request: 0.021sec/0.000sec (0.000sec, 0.000sec) (0.001sec/0.003sec/2) 59B 200 "PUT /_matrix/federation/v1/send/1795293753415 HTTP/1.1" "Synapse/1.160.0" [0 dbevts]
2026-11-21 21:40:00,000 - synapse.handlers.typing - 396 - INFO - PUT-7 - Ignoring typing update for room '!v12roomhashwithoutserverpart' from server hs3.test:8483 as we're not in the room
2026-11-21 21:40:01,000 - synapse.handlers.federation_event - 195 - INFO - _process_incoming_pdus_in_room_inner-3-$AbCdEf123 - Ignoring PDU from hs2.test:8482 as we're not in the room
2026-11-21 21:40:02,000 - synapse.app.homeserver - 398 - INFO - main - ***** STARTING SERVER *****
2026-11-21 21:40:03,000 - synapse.federation.federation_server - 1331 - INFO - PUT-2 - Ignoring PDU for unknown room_id: !second:hs2.test:8482
`

func TestParseLineKinds(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(sample), "\n")
	want := []Line{
		{Kind: KindTxn, Tag: "PUT-2", Server: "hs2.test:8482", PDUs: 1},
		{Kind: KindUnknownRoom, Tag: "PUT-2", RoomID: "!cOTYYYiwcKsXEVAnxV:hs2.test:8482"},
		{Kind: KindReceipt, Tag: "PUT-1", RoomID: "!cOTYYYiwcKsXEVAnxV:hs2.test:8482", Server: "hs2.test:8482"},
		{Kind: KindOther, Tag: "PUT-2"},
		{Kind: KindTyping, Tag: "PUT-7", RoomID: "!v12roomhashwithoutserverpart", Server: "hs3.test:8483"},
		{Kind: KindNotInRoomPDU, Tag: "_process_incoming_pdus_in_room_inner-3-$AbCdEf123", Server: "hs2.test:8482", EventID: "$AbCdEf123"},
		{Kind: KindStart},
		{Kind: KindUnknownRoom, Tag: "PUT-2", RoomID: "!second:hs2.test:8482"},
	}
	for i, raw := range lines {
		got := ParseLine(raw)
		got.Time = time.Time{}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("line %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
	if ts := ParseLine(lines[1]).Time; !ts.Equal(time.Date(2026, 11, 21, 21, 39, 36, 120e6, time.UTC)) {
		t.Errorf("time = %v", ts)
	}
}

func TestPrefixedLines(t *testing.T) {
	journald := "Nov 21 21:39:36 host matrix-synapse[812]: " + strings.Split(sample, "\n")[1]
	docker := `{"log":"` + strings.ReplaceAll(strings.Split(sample, "\n")[2], `'`, `'`) + `\n","stream":"stderr","time":"2026-11-21T21:39:36.1Z"}`
	if l := ParseLine(journald); l.Kind != KindUnknownRoom || l.RoomID != "!cOTYYYiwcKsXEVAnxV:hs2.test:8482" || l.Time.IsZero() {
		t.Errorf("journald line: %+v", l)
	}
	if l := ParseLine(unwrap([]byte(docker + "\n"))); l.Kind != KindReceipt || l.Server != "hs2.test:8482" {
		t.Errorf("container line: %+v", l)
	}
}

// TestScanAttributesOriginsAndRestarts: the origin of an unknown-room PDU comes from its
// request tag; after a restart tags start again and an old tag must not be reused.
func TestScanAttributesOriginsAndRestarts(t *testing.T) {
	sc := NewScanner(time.Time{})
	if err := sc.Scan(strings.NewReader(sample)); err != nil {
		t.Fatal(err)
	}
	rep := sc.Report()
	r := rep.Rooms["!cOTYYYiwcKsXEVAnxV:hs2.test:8482"]
	if r == nil || r.Count != 2 || r.Servers["hs2.test:8482"] != 2 {
		t.Fatalf("room 1: %+v", r)
	}
	second := rep.Rooms["!second:hs2.test:8482"]
	if second == nil || len(second.Servers) != 0 {
		t.Fatalf("after a restart PUT-2 must not map to the old origin: %+v", second)
	}
	if v12 := rep.Rooms["!v12roomhashwithoutserverpart"]; v12 == nil || v12.Servers["hs3.test:8483"] != 1 {
		t.Fatalf("v12 room: %+v", v12)
	}
	if u := rep.Unresolved["$AbCdEf123"]; u == nil || u.Servers["hs2.test:8482"] != 1 {
		t.Fatalf("unresolved: %+v", rep.Unresolved)
	}
	if rep.Lines != 8 {
		t.Errorf("lines = %d", rep.Lines)
	}
}

func TestScanSinceAndRotatedGzipFiles(t *testing.T) {
	dir := t.TempDir()
	lines := strings.SplitAfter(sample, "\n")
	older := strings.Join(lines[:3], "")
	newer := strings.Join(lines[3:], "")
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = w.Write([]byte(older))
	_ = w.Close()
	if err := os.WriteFile(filepath.Join(dir, "homeserver.log.1.gz"), gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	_ = os.Chtimes(filepath.Join(dir, "homeserver.log.1.gz"), old, old)
	if err := os.WriteFile(filepath.Join(dir, "homeserver.log"), []byte(newer), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := ScanSources(t.Context(), []Source{{Type: "file", Path: filepath.Join(dir, "homeserver.log*")}}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Sources) != 2 || rep.Rooms["!cOTYYYiwcKsXEVAnxV:hs2.test:8482"].Count != 2 {
		t.Fatalf("rotated scan: sources %v, rooms %+v", rep.Sources, rep.Rooms)
	}
	rep, err = ScanSources(t.Context(), []Source{{Type: "file", Path: filepath.Join(dir, "homeserver.log*")}},
		time.Date(2026, 11, 21, 21, 39, 59, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.Rooms["!cOTYYYiwcKsXEVAnxV:hs2.test:8482"]; ok || len(rep.Rooms) != 2 {
		t.Fatalf("--since kept old lines: %+v", rep.Rooms)
	}
}

// TestParseJoin: access-log lines of joins, as Synapse 1.160 writes them (Element and
// mautrix-go clients, the admin join API); only joins that succeeded, into a room by its ID.
func TestParseJoin(t *testing.T) {
	const pre = "2026-12-02 13:35:05,294 - synapse.access.http.8038 - 643 - INFO - POST-46 - 127.0.0.1 - 8038 - "
	for _, c := range []struct {
		msg  string
		want Line
	}{
		{`{@alice:hs4.test:8484} Processed request: 0.307sec/0.003sec ru=(0.024sec, 0.002sec) db=(0.018sec/0.102sec/43) 47B 200 "POST /_matrix/client/v3/join/%21kIdvEjffpylsABtSrd:hs5.test:8485?via=hs5.test%3A8485&via=hs6.test HTTP/1.1" "mautrix-go/v0.30.0 go/1.26.8" [0 dbevts]`,
			Line{Kind: KindJoin, Tag: "POST-46", RoomID: "!kIdvEjffpylsABtSrd:hs5.test:8485", User: "@alice:hs4.test:8484", Via: []string{"hs5.test:8485", "hs6.test"}}},
		{`{@alice:hs4.test:8484} Processed request: 0.791sec/0.001sec ru=(0.029sec, 0.007sec) db=(0.048sec/0.182sec/43) 47B 200 "POST /_matrix/client/v3/join/!KylxWIctrBdRNFzCFv%3Ahs5.test%3A8485 HTTP/1.1" "node" [0 dbevts]`,
			Line{Kind: KindJoin, Tag: "POST-46", RoomID: "!KylxWIctrBdRNFzCFv:hs5.test:8485", User: "@alice:hs4.test:8484"}},
		{`{@bob:hs4.test:8484} Processed request: 0.1sec/0.0sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/1) 47B 200 "POST /_matrix/client/r0/rooms/%21abc%3Ahs5.test/join?server_name=hs5.test HTTP/1.1" "Element" [0 dbevts]`,
			Line{Kind: KindJoin, Tag: "POST-46", RoomID: "!abc:hs5.test", User: "@bob:hs4.test:8484", Via: []string{"hs5.test"}}},
		{`{@admin:hs4.test:8484} Processed request: 0.1sec/0.0sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/1) 47B 200 "POST /_synapse/admin/v1/join/%21v12roomwithoutserver HTTP/1.1" "curl" [0 dbevts]`,
			Line{Kind: KindJoin, Tag: "POST-46", RoomID: "!v12roomwithoutserver", User: "@admin:hs4.test:8484"}},
		{`{@medic:hs4.test:8484|@alice:hs4.test:8484} Processed request: 1.090sec/0.001sec ru=(0.037sec, 0.012sec) db=(0.260sec/0.258sec/52) 47B 200 "POST /_matrix/client/v3/join/%21AouxIDgyOGUSoYdXuO:hs5.test:8485?via=hs5.test%3A8485 HTTP/1.1" "mautrix-go/v0.30.0 go/1.26.8" [0 dbevts]`,
			Line{Kind: KindJoin, Tag: "POST-46", RoomID: "!AouxIDgyOGUSoYdXuO:hs5.test:8485", User: "@alice:hs4.test:8484", Via: []string{"hs5.test:8485"}}},
		// Refused, by alias, not a join, no requester: not a join of a room.
		{`{@alice:hs4.test:8484} Processed request: 0.055sec/0.000sec ru=(0.006sec, 0.006sec) db=(0.006sec/0.022sec/11) 69B 403 "POST /_matrix/client/v3/join/!sqVoIbgWukytIVPjDH%3Ahs5.test%3A8485 HTTP/1.1" "node" [0 dbevts]`, Line{Tag: "POST-46"}},
		{`{@alice:hs4.test:8484} Processed request: 0.1sec/0.0sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/1) 47B 200 "POST /_matrix/client/v3/join/%23room%3Ahs5.test HTTP/1.1" "node" [0 dbevts]`, Line{Tag: "POST-46"}},
		{`{@alice:hs4.test:8484} Processed request: 0.1sec/0.0sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/1) 47B 200 "POST /_matrix/client/v3/rooms/%21abc%3Ahs5.test/joined_members HTTP/1.1" "node" [0 dbevts]`, Line{Tag: "POST-46"}},
		{`{None} Processed request: 0.1sec/0.0sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/1) 47B 200 "POST /_matrix/client/v3/join/%21abc%3Ahs5.test HTTP/1.1" "node" [0 dbevts]`, Line{Tag: "POST-46"}},
	} {
		got := ParseLine(pre + c.msg)
		got.Time = time.Time{}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.msg, got, c.want)
		}
	}
	for msg, room := range map[string]string{
		`{@admin:hs4.test:8484} Processed request: 0.010sec/0.000sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/3) 52B 200 "DELETE /_synapse/admin/v2/rooms/%21abc%3Ahs5.test HTTP/1.1" "mautrix-go/v0.30.0" [0 dbevts]`: "!abc:hs5.test",
		`{@admin:hs4.test:8484} Processed request: 1.2sec/0.000sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/3) 52B 200 "DELETE /_synapse/admin/v1/rooms/!abc:hs5.test HTTP/1.1" "curl" [0 dbevts]`:                     "!abc:hs5.test",
		`{@admin:hs4.test:8484} Processed request: 0.010sec/0.000sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/3) 52B 400 "DELETE /_synapse/admin/v2/rooms/%21abc%3Ahs5.test HTTP/1.1" "curl" [0 dbevts]`:               "",
		`{@admin:hs4.test:8484} Processed request: 0.010sec/0.000sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/3) 52B 200 "DELETE /_synapse/admin/v2/rooms/delete_status/abc HTTP/1.1" "curl" [0 dbevts]`:               "",
	} {
		got := ParseLine(pre + msg)
		if (room != "") != (got.Kind == KindRoomDeleted) || got.RoomID != room && room != "" {
			t.Errorf("%s: %+v", msg, got)
		}
	}
	sc := NewScanner(time.Time{})
	if err := sc.Scan(strings.NewReader(pre + `{@alice:hs4.test:8484} Processed request: 0.3sec/0.0sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.1sec/43) 47B 200 "POST /_matrix/client/v3/join/%21abc%3Ahs5.test?via=hs5.test HTTP/1.1" "node" [0 dbevts]` + "\n")); err != nil {
		t.Fatal(err)
	}
	if err := sc.Scan(strings.NewReader(pre + `{@admin:hs4.test:8484} Processed request: 0.010sec/0.000sec ru=(0.0sec, 0.0sec) db=(0.0sec/0.0sec/3) 52B 200 "DELETE /_synapse/admin/v2/rooms/%21gone%3Ahs5.test HTTP/1.1" "mautrix-go/v0.30.0" [0 dbevts]` + "\n")); err != nil {
		t.Fatal(err)
	}
	if d := sc.Report().Deleted["!gone:hs5.test"]; d.IsZero() {
		t.Errorf("the scanner misses the deletion: %v", sc.Report().Deleted)
	}
	if j := sc.Report().Joins[[2]string{"!abc:hs5.test", "@alice:hs4.test:8484"}]; j == nil || j.Time.IsZero() || len(j.Via) != 1 || len(sc.Report().Rooms) != 0 {
		t.Errorf("scanned join: %+v, rooms %v", j, sc.Report().Rooms)
	}
}

// FuzzParseLine: no input may panic the parser or the scanner.
func FuzzParseLine(f *testing.F) {
	for _, l := range strings.Split(sample, "\n") {
		f.Add(l)
	}
	f.Add(`{"log":"x - INFO - PUT-1 - Ignoring receipt for room '`)
	f.Add("2026-11-21 21:39:36,100 - a - 1 - INFO - - Ignoring typing update for room \"")
	f.Fuzz(func(t *testing.T, s string) {
		_ = ParseLine(s)
		sc := NewScanner(time.Time{})
		_ = sc.Scan(strings.NewReader(s))
		_ = sc.Report().SortedRooms()
	})
}

func TestScanGiantLineAndNoFinalNewline(t *testing.T) {
	lines := strings.Split(sample, "\n")
	in := strings.Repeat("x", 9<<20) + "\n" + lines[0] + "\n" + lines[1] // 9 MiB line, then no final newline
	sc := NewScanner(time.Time{})
	if err := sc.Scan(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	rep := sc.Report()
	if r := rep.Rooms["!cOTYYYiwcKsXEVAnxV:hs2.test:8482"]; r == nil || r.Servers["hs2.test:8482"] != 1 {
		t.Fatalf("lines after a giant line were not parsed: %+v", rep.Rooms)
	}
	if rep.Lines != 3 || rep.Bytes != int64(len(in)) {
		t.Errorf("lines=%d bytes=%d, want 3 and %d", rep.Lines, rep.Bytes, len(in))
	}
}

func TestParseRejectedInState(t *testing.T) {
	raw := `2026-11-21 10:00:00,123 - synapse.handlers.federation_event - 1700 - WARNING - PUT-7-$dFuF - While checking auth of <FrozenEventV3 event_id=$dFuF, type=m.room.message> against auth_events: 403: During auth for event $dFuF: found rejected event $oVC6 in the state`
	if !Interesting([]byte(raw)) {
		t.Fatal("not interesting")
	}
	l := ParseLine(raw)
	if l.Kind != KindRejectedInState || l.EventID != "$dFuF" || l.RejectedID != "$oVC6" {
		t.Fatalf("got %+v", l)
	}
	sc := NewScanner(time.Time{})
	if err := sc.Scan(strings.NewReader(raw + "\n" + strings.Replace(raw, "$dFuF", "$other", -1) + "\n")); err != nil {
		t.Fatal(err)
	}
	tr := sc.Report().RejectedInState["$oVC6"]
	if tr == nil || tr.Count != 2 || tr.Events != 2 {
		t.Fatalf("trace %+v", tr)
	}
}

// The aftercare's "what happened since the backup": transactions received after a time, by
// origin, with the events they carried.
func TestScanCountsReceivedTransactionsSince(t *testing.T) {
	extra := "2026-11-21 21:41:00,000 - synapse.federation.transport.server.federation - 118 - INFO - PUT-9 - Received txn 17 from hs2.test:8482. (PDUs: 12, EDUs: 3)\n" +
		"2026-11-21 21:42:00,000 - synapse.federation.transport.server.federation - 118 - INFO - PUT-10 - Received txn 18 from hs3.test:8483. (PDUs: 0, EDUs: 1)\n"
	sc := NewScanner(time.Date(2026, 11, 21, 21, 39, 37, 0, time.UTC))
	if err := sc.Scan(strings.NewReader(sample + extra)); err != nil {
		t.Fatal(err)
	}
	got := sc.Report().Received
	if r := got["hs2.test:8482"]; r == nil || r.Txns != 1 || r.PDUs != 12 || r.Last.Format(time.TimeOnly) != "21:41:00" {
		t.Fatalf("hs2 (the txn at 21:39:36 is before since): %+v", r)
	}
	if r := got["hs3.test:8483"]; r == nil || r.Txns != 1 || r.PDUs != 0 {
		t.Fatalf("hs3: %+v", r)
	}
	if l := ParseLine(strings.SplitN(sample, "\n", 2)[0]); l.PDUs != 1 {
		t.Fatalf("PDUs of the sample's txn line: %d", l.PDUs)
	}
}
