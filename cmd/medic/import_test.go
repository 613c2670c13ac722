package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/mattn/go-sqlite3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapse/importer"
	"github.com/synapse-medic/medic/synapse/journal"
	"github.com/synapse-medic/medic/testbed"
)

// importTables are the tables an import writes (or updates) in the target database.
var importTables = []string{"events", "event_json", "event_edges", "event_auth", "event_auth_chains",
	"event_auth_chain_links", "event_auth_chain_to_calculate", "state_events", "event_to_state_groups",
	"state_groups", "state_group_edges", "state_groups_state", "event_search", "redactions", "event_relations",
	"room_memberships", "rejections", "room_depth", "event_backward_extremities", "event_failed_pull_attempts",
	"ex_outlier_stream", "threads"}

// tableFingerprints returns, per table, its row count and a hash of all its rows.
func tableFingerprints(t *testing.T, h *testbed.Homeserver) map[string]string {
	t.Helper()
	out := map[string]string{}
	h.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		for _, tbl := range importTables {
			var n int
			var sum string
			q := fmt.Sprintf(`SELECT count(*)::int, coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM %s AS t`, tbl)
			if err := conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
				return fmt.Errorf("%s: %w", tbl, err)
			}
			out[tbl] = fmt.Sprintf("%d rows %s", n, sum)
		}
		return nil
	})
	return out
}

// timeline pages /messages backwards from the end of the room to its start and returns the
// event IDs, newest first.
func timeline(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []id.EventID {
	t.Helper()
	return timelinePages(t, cli, roomID, 1000)
}

func timelinePages(t *testing.T, cli *mautrix.Client, roomID id.RoomID, limit int) []id.EventID {
	t.Helper()
	ctx := context.Background()
	var ids []id.EventID
	from := ""
	for range 200 {
		resp, err := cli.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("%s /messages: %v", cli.UserID, err)
		}
		for _, evt := range resp.Chunk {
			ids = append(ids, evt.ID)
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			return ids
		}
		from = resp.End
	}
	t.Fatal("/messages never reached the start of the room")
	return nil
}

// bodies returns the message bodies /messages shows, newest first.
func bodies(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	from := ""
	for range 200 {
		resp, err := cli.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, evt := range resp.Chunk {
			if evt.Type == event.EventMessage {
				if b, ok := evt.Content.Raw["body"].(string); ok {
					out = append(out, b)
				}
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	return out
}

func sendText(t *testing.T, cli *mautrix.Client, roomID id.RoomID, content any) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(context.Background(), roomID, event.EventMessage, content)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return resp.EventID
}

func sqliteHas(t *testing.T, path string, eventID id.EventID) bool {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err = db.QueryRow(`SELECT count(*) FROM events WHERE event_id = ? AND NOT outlier`, eventID.String()).Scan(&n); err != nil {
		return false
	}
	return n > 0
}

func medicExec(t *testing.T, cfg, line string) (string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run([]string{"exec", "-c", cfg, "--yes", line}, nil, &stdout, &stderr)
	return stdout.String() + stderr.String(), code
}

// TestImportHistory is incident 3 on the testbed: a room's history that only hs2 (PostgreSQL)
// and hs3 (SQLite) have is imported into hs1 after alice@hs1 joined late and both are gone.
func TestImportHistory(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	hs3 := tb.FreshHS3(t)
	owner := tb.Register(t, tb.HS2, testbed.UniqueName("owner"), false)
	carol := tb.Register(t, hs3, testbed.UniqueName("carol"), false)
	alice := tb.Register(t, tb.HS1, testbed.UniqueName("alice"), false)

	room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "old history",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}}}}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := room.RoomID
	testbed.JoinVia(t, carol, roomID, tb.HS2.Name)

	// A few thousand messages from four senders at once (the DAG forks, as in real rooms),
	// with edits, a redaction and state changes among them.
	messages := 2000
	if testing.Short() {
		messages = 300
	}
	started := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var sent sync.Map
	for range 4 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(messages) {
					return
				}
				resp, err := owner.SendMessageEvent(ctx, roomID, event.EventMessage,
					&event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("msg %d", i)})
				if err != nil {
					t.Errorf("send message %d: %v", i, err)
					return
				}
				sent.Store(i, resp.EventID)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i := range 10 {
		orig, _ := sent.Load(int64(i * 7))
		edit := &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("* edit %d", i),
			NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("edited %d", i)}}
		edit.SetEdit(orig.(id.EventID))
		sendText(t, owner, roomID, edit)
	}
	// A thread: its root is an old message, its replies old too.
	threadRoot, _ := sent.Load(int64(11))
	for i := range 3 {
		reply := &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("thread reply %d", i)}
		reply.RelatesTo = (&event.RelatesTo{}).SetThread(threadRoot.(id.EventID), threadRoot.(id.EventID))
		sendText(t, owner, roomID, reply)
	}
	redacted, _ := sent.Load(int64(5))
	if _, err = owner.RedactEvent(ctx, roomID, redacted.(id.EventID)); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"first topic", "second topic"} {
		if _, err = owner.SendStateEvent(ctx, roomID, event.StateTopic, "", &event.TopicEventContent{Topic: topic}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err = owner.SendStateEvent(ctx, roomID, event.StateRoomName, "", &event.RoomNameEventContent{Name: "renamed"}); err != nil {
		t.Fatal(err)
	}
	last := sendText(t, owner, roomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "last before alice"})
	t.Logf("generated %d messages + edits, redaction, state in %s", messages, time.Since(started).Round(time.Millisecond))

	testbed.JoinVia(t, alice, roomID, tb.HS2.Name)
	var aliceJoin string
	tb.HS1.Exec(t, `SELECT 1`)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND user_id = $2 AND membership = 'join'`,
			roomID, alice.UserID) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alice's join never landed on hs1")
		}
		time.Sleep(200 * time.Millisecond)
	}
	aliceJoin = joinEventID(t, tb.HS1, roomID, alice.UserID)
	// hs3 (SQLite) lags behind on a busy machine; it catches up in its own time.
	for deadline := time.Now().Add(4 * time.Minute); !sqliteHas(t, hs3.SQLite, last) || !sqliteHas(t, hs3.SQLite, id.EventID(aliceJoin)); {
		if time.Now().After(deadline) {
			t.Fatal("hs3 never received the room's history")
		}
		time.Sleep(500 * time.Millisecond)
	}
	// What hs2 and hs3 show, before they go away for good.
	want2 := timeline(t, owner, roomID)
	// hs3 (slower, on SQLite) may have fallen behind and received parts of the room only as
	// gaps: paging /messages makes it backfill them from hs2 (100 events per request).
	want3 := timeline(t, carol, roomID)
	for pass := 0; pass < 8 && len(want3) < len(want2); pass++ {
		want3 = timelinePages(t, carol, roomID, 100)
	}
	t.Logf("hs2 timeline: %d events, hs3 timeline: %d events", len(want2), len(want3))

	syncResp, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	since := syncResp.NextBatch

	// hs1 backs off from hs2 while hs2 is down (10 minutes for make_join too): clear that once
	// hs2 is back, so later tests can use the pair (this cleanup runs after hs2's restart).
	t.Cleanup(func() { resetBackoff(t, tb, tb.HS1, tb.HS2.Name) })
	tb.Stop(t, tb.HS2) // restarted at the end (shared testbed), but gone for this test
	tb.Run(t, "stop", "3")
	t.Cleanup(func() { tb.Run(t, "start", hsN(tb.HS1)) }) // whatever happens, hs1 runs again after the test
	// Without its history, hs1 shows alice only her join (backfill from hs2 fails now).
	if before := timeline(t, alice, roomID); len(before) >= len(want2)/2 {
		t.Fatalf("hs1 already shows %d of %d events before the import: the scenario is void", len(before), len(want2))
	}
	if slices.Contains(threads(t, alice, roomID), threadRoot.(id.EventID)) {
		t.Fatal("hs1 lists the old thread before the import: the scenario is void")
	}
	fp0 := tableFingerprints(t, tb.HS1)

	dir := t.TempDir()
	cfg := tb.MedicConfig(t, dir, tb.HS1.UserID("medic"), tb.MedicPassword)
	if os.Getenv("MEDIC_IMPORT_EXPERIMENT") == "running" {
		// The experiment behind the plan's advice: import with Synapse up, no restart.
		testbed.ClearRestartCommand(t, cfg)
	}
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	chunkSize := 500
	if testing.Short() {
		chunkSize = 50
	}
	fmt.Fprintf(f, "import:\n  sources:\n    hs2: {type: postgres, database: %q}\n    hs3: {type: sqlite, database: %q}\n  chunk_size: %d\n",
		tb.HS2.DSN, hs3.SQLite, chunkSize)
	f.Close()

	// Synapse stays up during the import; the job's last step restarts it (restart_command
	// is testbed.sh restart). MEDIC_IMPORT_EXPERIMENT=running drops the restart and logs what
	// /messages shows before a manual one: the experiment behind the plan's restart advice.
	experiment := os.Getenv("MEDIC_IMPORT_EXPERIMENT") == "running"
	if experiment {
		defer func(w time.Duration) { recovery.RestartWait = w }(recovery.RestartWait)
		recovery.RestartWait = time.Second
	}
	checkTimeline := func(source string, want []id.EventID) {
		t.Helper()
		got := timeline(t, alice, roomID)
		if !slices.Equal(got, want) {
			t.Errorf("after importing from %s hs1 shows %d events, %s shows %d; first difference at %d",
				source, len(got), source, len(want), firstDiff(got, want))
		}
	}
	importAndCheck := func(source string, want []id.EventID) (job, out string) {
		t.Helper()
		started := time.Now()
		out, code := medicExec(t, cfg, fmt.Sprintf("!import history %s from %s", roomID, source))
		if code != 0 && !experiment {
			t.Fatalf("import from %s: exit %d\n%s", source, code, out)
		}
		t.Logf("import from %s took %s:\n%s", source, time.Since(started).Round(time.Millisecond), out)
		m := jobIDPattern.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no job id in:\n%s", out)
		}
		if experiment {
			got := timeline(t, alice, roomID)
			t.Logf("EXPERIMENT (no restart): /messages shows %d events, want %d; equal: %v (first difference at %d)",
				len(got), len(want), slices.Equal(got, want), firstDiff(got, want))
			tb.Restart(t, tb.HS1)
		}
		checkTimeline(source, want)
		return m[1], out
	}

	// 0. A chunk cut off mid-way (here: after its events were copied) writes nothing.
	func() {
		db, err := synapse.OpenDB(ctx, tb.HS1.DSN)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		src, err := importer.OpenSource(ctx, importer.SourcePostgres, tb.HS2.DSN)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		im, err := importer.New(ctx, db, src, roomID.String())
		if err != nil {
			t.Fatal(err)
		}
		plan, err := im.Plan(ctx, chunkSize)
		if err != nil {
			t.Fatal(err)
		}
		crash := func(ctx context.Context, tx pgx.Tx, point string) error {
			if point == "chunk 1: after copying events" {
				return errors.New("killed")
			}
			return nil
		}
		im.Run("crashtest", "test", plan.Chunks, crash)
		if _, err = im.Import(ctx, 0); err == nil {
			t.Fatal("the cut-off chunk reported success")
		}
		// Chunk 2 started alongside; it must have been rolled back with chunk 1.
		if _, err = im.Import(ctx, 1); err == nil || !strings.Contains(err.Error(), "rolled back too") {
			t.Fatalf("chunk 2 after chunk 1 failed: %v", err)
		}
		im.Close()
		if fp := tableFingerprints(t, tb.HS1); !maps.Equal(fp, fp0) {
			t.Fatal("a chunk cut off mid-way left rows behind")
		}

		// A stopped job: chunk 1 commits, chunk 2 (started beside it) is parked just before
		// its commit when the job is stopped. Abort rolls chunk 2 back; chunk 1 stays, and
		// undoing it through the journal restores every table.
		src2, err := importer.OpenSource(ctx, importer.SourcePostgres, tb.HS2.DSN)
		if err != nil {
			t.Fatal(err)
		}
		im, err = importer.New(ctx, db, src2, roomID.String())
		if err != nil {
			t.Fatal(err)
		}
		parked := make(chan struct{})
		im.Run("aborttest", "test", plan.Chunks, func(ctx context.Context, tx pgx.Tx, point string) error {
			if point == "chunk 2: before commit" {
				close(parked)
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
		inTimeline := `SELECT count(*) FROM events WHERE room_id = $1 AND NOT outlier`
		before := tb.HS1.Count(t, inTimeline, roomID)
		if _, err = im.Import(ctx, 0); err != nil {
			t.Fatal(err)
		}
		<-parked
		im.Abort()
		if got := tb.HS1.Count(t, inTimeline, roomID) - before; got != chunkSize {
			t.Fatalf("after stopping with chunk 2 under way: %d events joined the timeline, want chunk 1's %d", got, chunkSize)
		}
		if _, err = journal.Undo(ctx, db, "aborttest", nil); err != nil {
			t.Fatal(err)
		}
		if fp := tableFingerprints(t, tb.HS1); !maps.Equal(fp, fp0) {
			t.Fatal("undoing chunk 1 did not restore every table")
		}
	}()

	// 1. From hs2's PostgreSQL database. medic is SIGKILLed inside chunk 3's transaction,
	// with chunk 4 under way beside it: chunks 1 and 2 stay, nothing of 3 and 4 does, and
	// !resume finishes the job.
	var job string
	if experiment {
		job, _ = importAndCheck("hs2", want2)
	} else {
		inTimeline := func() int {
			return tb.HS1.Count(t, `SELECT count(*) FROM events WHERE room_id = $1 AND NOT outlier`, roomID)
		}
		before := inTimeline()
		out := execKilledAt(t, testbed.MedicBinary(t), cfg, fmt.Sprintf("!import history %s from hs2", roomID), "chunk 3: before commit")
		m := jobIDPattern.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no job id in:\n%s", out)
		}
		job = m[1]
		if got := inTimeline() - before; got != 2*chunkSize {
			t.Fatalf("killed inside chunk 3: %d events joined hs1's timeline, want exactly chunks 1 and 2 (%d)", got, 2*chunkSize)
		}
		out, code := medicExec(t, cfg, "!resume "+job)
		t.Logf("!resume after the kill:\n%s", out)
		if code != 0 {
			t.Fatalf("!resume: exit %d", code)
		}
		checkTimeline("hs2", want2)
	}
	if got := threads(t, alice, roomID); !slices.Contains(got, threadRoot.(id.EventID)) {
		t.Errorf("after the import hs1's /threads lists %v, not the old thread %s", got, threadRoot)
	}
	msgs := bodies(t, alice, roomID)
	for i := range messages {
		if i == 5 {
			continue // redacted
		}
		if !slices.Contains(msgs, fmt.Sprintf("msg %d", i)) {
			t.Fatalf("message %d missing from hs1's /messages", i)
		}
	}
	if slices.Contains(msgs, "msg 5") {
		t.Error("the redacted message shows its body on hs1")
	}
	incr, err := alice.SyncRequest(ctx, 0, since, "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	if jr, ok := incr.Rooms.Join[roomID]; ok && len(jr.Timeline.Events) > 0 {
		t.Errorf("incremental /sync delivered %d old event(s) as new, e.g. %s", len(jr.Timeline.Events), jr.Timeline.Events[0].ID)
	}
	out, code := medicExec(t, cfg, fmt.Sprintf("!import history %s from hs2", roomID))
	if code != 0 || !strings.Contains(out, "nothing to import") {
		t.Errorf("second import: exit %d, want nothing to import:\n%s", code, out)
	}

	// 2. Undo removes exactly what the import inserted (and restores what it changed), with
	// Synapse stopped (undo's plan asks for a restart; stopped is the stricter case).
	tb.Run(t, "stop", hsN(tb.HS1))
	// First, Synapse has stored a new state group as a delta on an imported one: undo must
	// refuse and change nothing, or that group would dangle.
	var importedGroup, laterGroup int64
	tb.HS1.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, `SELECT (key->'id'->>0)::bigint FROM medic.journal WHERE job_id = $1 AND tbl = 'state_groups' LIMIT 1`,
			job).Scan(&importedGroup); err != nil {
			return err
		}
		return conn.QueryRow(ctx, `INSERT INTO state_groups (id, room_id, event_id) VALUES (nextval('state_group_id_seq'), $1, '$later')
			RETURNING id`, roomID).Scan(&laterGroup)
	})
	tb.HS1.Exec(t, `INSERT INTO state_group_edges (state_group, prev_state_group) VALUES ($1, $2)`, laterGroup, importedGroup)
	fpBuilt := tableFingerprints(t, tb.HS1)
	out, code = medicExec(t, cfg, "!undo "+job)
	if code == 0 || !strings.Contains(out, "state_group_edges written since point at them") {
		t.Errorf("undo with a later state group built on an imported one: exit %d, want a refusal naming it:\n%s", code, out)
	}
	if fp := tableFingerprints(t, tb.HS1); !maps.Equal(fp, fpBuilt) {
		t.Fatal("the refused undo changed rows")
	}
	tb.HS1.Exec(t, `DELETE FROM state_group_edges WHERE state_group = $1`, laterGroup)
	tb.HS1.Exec(t, `DELETE FROM state_groups WHERE id = $1`, laterGroup)
	out, code = medicExec(t, cfg, "!undo "+job)
	tb.Run(t, "start", hsN(tb.HS1))
	if code != 0 {
		t.Fatalf("undo: exit %d\n%s", code, out)
	}
	fp1 := tableFingerprints(t, tb.HS1)
	for _, tbl := range importTables {
		if fp0[tbl] != fp1[tbl] {
			t.Errorf("after undo %s is %s, before the import it was %s", tbl, fp1[tbl], fp0[tbl])
		}
	}

	// 3. From hs3's SQLite database, in which one event was edited by hand: the room's name,
	// which hs1 holds as an outlier. The plan lists it as a conflict and it is left alone.
	var nameEvent string
	tb.HS1.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT event_id FROM current_state_events WHERE room_id = $1 AND type = 'm.room.name'`, roomID).Scan(&nameEvent)
	})
	tamperSQLite(t, hs3.SQLite, nameEvent, `"renamed"`, `"tampered"`)
	nameBefore := tb.HS1.Count(t, `SELECT count(*) FROM events JOIN event_json USING (event_id)
		WHERE event_id = $1 AND outlier AND json LIKE '%"renamed"%'`, nameEvent)
	_, out = importAndCheck("hs3", slices.DeleteFunc(slices.Clone(want3), func(e id.EventID) bool { return string(e) == nameEvent }))
	if !strings.Contains(out, "differ between the two databases") || !strings.Contains(out, nameEvent) {
		t.Errorf("the plan does not list the edited event %s as a conflict:\n%s", nameEvent, out)
	}
	if nameBefore != 1 || tb.HS1.Count(t, `SELECT count(*) FROM events JOIN event_json USING (event_id)
		WHERE event_id = $1 AND outlier AND json LIKE '%"renamed"%'`, nameEvent) != 1 {
		t.Errorf("hs1's own copy of the conflicting event %s changed (before: %d)", nameEvent, nameBefore)
	}

	// 4. Life goes on: a message sent on hs1 now works and comes down /sync.
	after := sendText(t, alice, roomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "after the import"})
	incr, err = alice.SyncRequest(ctx, 0, since, "", false, event.PresenceOffline)
	if err != nil {
		t.Fatal(err)
	}
	jr := incr.Rooms.Join[roomID]
	if jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].ID != after {
		n := 0
		if jr != nil {
			n = len(jr.Timeline.Events)
		}
		t.Errorf("incremental /sync after a new message: %d events, want only %s", n, after)
	}
	if top := timeline(t, alice, roomID); len(top) == 0 || top[0] != after {
		t.Errorf("the new message is not the newest in /messages")
	}

	// 5. The chain cover: imported state events wait in event_auth_chain_to_calculate until
	// Synapse next persists a state event in the room, which works the queue off.
	queued := `SELECT count(*) FROM event_auth_chain_to_calculate WHERE room_id = $1`
	t.Logf("state events queued for the chain cover after the import: %d", tb.HS1.Count(t, queued, roomID))
	if _, err = alice.SendStateEvent(ctx, roomID, event.StateMember, alice.UserID.String(),
		&event.MemberEventContent{Membership: event.MembershipJoin, Displayname: "alice, later"}); err != nil {
		t.Fatal(err)
	}
	if n := tb.HS1.Count(t, queued, roomID); n != 0 {
		t.Errorf("%d imported state events still wait for their chain cover after a new state event", n)
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM state_events AS s WHERE s.room_id = $1
		AND NOT EXISTS (SELECT 1 FROM event_auth_chains AS c WHERE c.event_id = s.event_id)`, roomID); n != 0 {
		t.Errorf("%d state events of the room have no chain cover", n)
	}
}

// threads lists the thread roots of a room (GET /rooms/{room}/threads).
func threads(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []id.EventID {
	t.Helper()
	var resp struct {
		Chunk []struct {
			ID id.EventID `json:"event_id"`
		} `json:"chunk"`
	}
	if _, err := cli.MakeRequest(context.Background(), http.MethodGet, cli.BuildClientURL("v1", "rooms", roomID, "threads"), nil, &resp); err != nil {
		t.Fatal(err)
	}
	var out []id.EventID
	for _, e := range resp.Chunk {
		out = append(out, e.ID)
	}
	return out
}

// tamperSQLite edits an event's JSON in a Synapse SQLite database, as a hand fix would.
func tamperSQLite(t *testing.T, path, eventID, from, to string) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(`UPDATE event_json SET json = replace(json, ?, ?) WHERE event_id = ?`, from, to, eventID)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("tamper %s: %d rows changed", eventID, n)
	}
}

func joinEventID(t *testing.T, h *testbed.Homeserver, roomID id.RoomID, user id.UserID) string {
	t.Helper()
	var ev string
	h.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT event_id FROM local_current_membership WHERE room_id = $1 AND user_id = $2`,
			roomID, user).Scan(&ev)
	})
	return ev
}

func firstDiff(a, b []id.EventID) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func hsN(h *testbed.Homeserver) string { return fmt.Sprint(h.N) }

// resetBackoff clears h's federation backoff for a destination through the admin API.
func resetBackoff(t *testing.T, tb *testbed.Testbed, h *testbed.Homeserver, destination string) {
	ctx := context.Background()
	cli, err := mautrix.NewClient(h.URL, "", "")
	if err != nil {
		t.Error(err)
		return
	}
	if _, err = cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "admin"}, Password: tb.AdminPassword}); err != nil {
		t.Errorf("reset backoff: %v", err)
		return
	}
	defer cli.Logout(ctx)
	// ResetConnection takes Synapse's "does not need to be reset" (400) as done.
	if err = adminapi.New(cli).ResetConnection(ctx, destination); err != nil && !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("reset %s's backoff for %s: %v", h.Name, destination, err)
	}
}
