package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

// Failure semantics of the job spine (issue 12): a sequential job stops at its first failed
// step, and `!resume` re-plans a failed job and retries what failed or never ran. The faults
// are PostgreSQL triggers on hs1 that raise, so medic sees a real database error.

// injectFault installs a trigger on h's table that raises "injected fault" for the rows
// matching when (an SQL condition on NEW/OLD) on op (INSERT, UPDATE or DELETE). It returns
// the function that removes it; it is removed at the end of the test in any case.
func injectFault(t *testing.T, h *testbed.Homeserver, table, op, when string) (remove func()) {
	t.Helper()
	name := testbed.UniqueName("medic_test_fault_")
	h.Exec(t, `CREATE FUNCTION `+name+`() RETURNS trigger LANGUAGE plpgsql AS $f$
		BEGIN RAISE EXCEPTION 'injected fault: % on % (test trigger %)', TG_OP, TG_TABLE_NAME, TG_NAME; END $f$`)
	h.Exec(t, fmt.Sprintf(`CREATE TRIGGER %s BEFORE %s ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION %s()`, name, op, table, when, name))
	remove = sync.OnceFunc(func() {
		h.Exec(t, `DROP TRIGGER IF EXISTS `+name+` ON `+table)
		h.Exec(t, `DROP FUNCTION IF EXISTS `+name+`()`)
	})
	t.Cleanup(remove)
	return remove
}

// sqlString quotes s as an SQL string literal (for DDL, which takes no parameters).
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// countRestarts makes medic's restart command (config at cfg) record each run in a file
// before it restarts hs1 as before, and returns how many times it has run.
func countRestarts(t *testing.T, cfg string) func() int {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "restarts")
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^(\s*restart_command:) "(.+)"$`)
	m := line.FindSubmatch(raw)
	if m == nil {
		t.Fatal("the test config has no restart_command to wrap")
	}
	wrapped := fmt.Sprintf("echo ran >> %s && %s", marker, m[2])
	raw = line.ReplaceAll(raw, []byte(fmt.Sprintf("$1 %q", wrapped)))
	if err = os.WriteFile(cfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() int {
		b, err := os.ReadFile(marker)
		if os.IsNotExist(err) {
			return 0
		} else if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "ran\n")
	}
}

// appendConfig adds YAML at the end of medic's config.
func appendConfig(t *testing.T, cfg, yaml string) {
	t.Helper()
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err = f.WriteString(yaml); err != nil {
		t.Fatal(err)
	}
}

// failedJob checks the output and exit code of a `medic exec --yes` whose job failed in the
// step named what, because of the injected fault, and returns the job's ID.
func failedJob(t *testing.T, out string, code int, what string) string {
	t.Helper()
	m := jobIDPattern.FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no job ID in the output")
	}
	if code == 0 {
		t.Errorf("the job whose %s failed exited 0", what)
	}
	if !strings.Contains(out, "injected fault") {
		t.Errorf("the report does not say why %s failed (the injected fault)", what)
	}
	return m[1]
}

var (
	// failedAtStep1 is how the report of a job whose first step failed says so.
	failedAtStep1 = regexp.MustCompile(`(?i)failed at step 1\b|step 1\b[^\n]*\bfailed`)
	// nothingChanged is how it says that nothing was changed.
	nothingChanged = regexp.MustCompile(`(?i)nothing (was |has )?(been )?changed|no rows? (was |were )?changed`)
	// retried is how a resumed job's report says what it ran again.
	retried = regexp.MustCompile(`(?i)retried`)
)

// TestUnrejectFailedTransaction: when !unreject's transaction fails, the job stops there: no
// restart, no post-check, and the report says it failed at step 1 with nothing changed.
// Once the fault is gone, !resume re-plans the failed job and finishes it.
func TestUnrejectFailedTransaction(t *testing.T) {
	tb := testbed.Get(t)
	p := testbed.StagePoisonedRoom(t, tb, 2)
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	restarts := countRestarts(t, cfg)
	removeFault := injectFault(t, tb.HS1, "events", "UPDATE",
		"OLD.room_id = "+sqlString(p.Room.String())+" AND OLD.rejection_reason IS DISTINCT FROM NEW.rejection_reason")
	stillRejected := func() (events, rejections int) {
		return tb.HS1.Count(t, `SELECT count(*) FROM events WHERE event_id = ANY($1) AND rejection_reason IS NOT NULL`, p.ChainIDs),
			tb.HS1.Count(t, `SELECT count(*) FROM rejections WHERE event_id = ANY($1)`, p.ChainIDs)
	}

	before := rejectionRows(t, tb.HS1)
	out, code := execMedic(t, cfg, "--yes", "!unreject "+p.Room.String())
	t.Logf("!unreject with the transaction failing:\n%s", out)
	job := failedJob(t, out, code, "the un-reject transaction")
	if !failedAtStep1.MatchString(out) || !nothingChanged.MatchString(out) {
		t.Errorf("the report does not say that the job failed at step 1 and that nothing changed")
	}
	if n := restarts(); n != 0 {
		t.Errorf("the restart command ran %d time(s) after the failed transaction", n)
	}
	if strings.Contains(out, "Post-check") || strings.Contains(out, "rejected again") {
		t.Errorf("the post-check ran after the failed transaction")
	}
	if after := rejectionRows(t, tb.HS1); after != before {
		t.Errorf("the failed transaction changed rows:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	removeFault()
	out, code = execMedic(t, cfg, "--yes", "!resume "+job)
	t.Logf("!resume after the fault is gone:\n%s", out)
	if code != 0 {
		t.Fatalf("!resume of the failed job %s: exit %d", job, code)
	}
	if ev, rej := stillRejected(); ev != 0 || rej != 0 {
		t.Errorf("after !resume %d events and %d rejections rows of the chain are still rejected", ev, rej)
	}
	if n := restarts(); n != 1 {
		t.Errorf("the restart command ran %d time(s) in all, want once (after the resumed transaction)", n)
	}
	if !strings.Contains(out, "back up after the restart") || !strings.Contains(out, "Post-check") {
		t.Errorf("the resumed job did not report the restart and the post-check")
	}
	if !retried.MatchString(out) {
		t.Errorf("the report of the resumed job does not say what was retried")
	}
}

// lateJoin is a room on hs2 with history that alice@hs1 joined after it was sent, with hs2
// gone (stopped until the test ends): its history is only in hs2's database.
type lateJoin struct {
	room     id.RoomID
	messages []id.EventID // oldest first
	want     []id.EventID // hs2's /messages, newest first
	alice    *mautrix.Client
}

func newLateJoin(t *testing.T, tb *testbed.Testbed, messages int) *lateJoin {
	t.Helper()
	ctx := context.Background()
	owner := tb.Register(t, tb.HS2, testbed.UniqueName("owner"), false)
	resp, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: testbed.UniqueName("late"),
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}}}}})
	if err != nil {
		t.Fatal(err)
	}
	lj := &lateJoin{room: resp.RoomID, alice: tb.Register(t, tb.HS1, testbed.UniqueName("alice"), false)}
	// One sender, one message after the other: a linear DAG, so "newest first" is plain.
	for i := range messages {
		lj.messages = append(lj.messages, sendText(t, owner, lj.room, &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("msg %d", i)}))
	}
	testbed.JoinVia(t, lj.alice, lj.room, tb.HS2.Name)
	if n := lj.timelineHas(t, tb, lj.messages); n != 0 {
		t.Fatalf("hs1 already has %d of the %d messages: the scenario is void", n, messages)
	}
	lj.want = timeline(t, owner, lj.room)
	// hs1 backs off from hs2 while it is down: clear that once hs2 is back (this cleanup runs
	// after hs2's restart), so later tests can use the pair.
	t.Cleanup(func() { resetBackoff(t, tb, tb.HS1, tb.HS2.Name) })
	tb.Stop(t, tb.HS2)
	return lj
}

// timelineHas counts the events of ids that are in hs1's timeline of the room (not outliers).
func (lj *lateJoin) timelineHas(t *testing.T, tb *testbed.Testbed, ids []id.EventID) int {
	t.Helper()
	return tb.HS1.Count(t, `SELECT count(*) FROM events WHERE room_id = $1 AND event_id = ANY($2) AND NOT outlier`, lj.room, ids)
}

// TestImportChunkFailureThenResume: an import whose chunk 2 fails writes nothing after it
// (chunk 1 stays, whole; no later chunk, no restart), and !resume completes it once the fault
// is gone.
func TestImportChunkFailureThenResume(t *testing.T) {
	tb := testbed.Get(t)
	const chunk, messages = 40, 150
	lj := newLateJoin(t, tb, messages)
	t.Cleanup(func() { tb.Run(t, "start", hsN(tb.HS1)) }) // whatever happens, hs1 runs again after the test
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	restarts := countRestarts(t, cfg)
	appendConfig(t, cfg, fmt.Sprintf("import:\n  sources:\n    hs2: {type: postgres, database: %q}\n  chunk_size: %d\n", tb.HS2.DSN, chunk))

	// Chunks go newest first: chunk 1 is the newest `chunk` messages, chunk 2 the ones before.
	// The fault hits a message in the middle of chunk 2.
	chunk1 := lj.messages[messages-chunk:]
	older := lj.messages[:messages-chunk]
	poisoned := lj.messages[messages-chunk-chunk/2]
	removeFault := injectFault(t, tb.HS1, "events", "INSERT", "NEW.event_id = "+sqlString(poisoned.String()))

	out, code := medicExec(t, cfg, fmt.Sprintf("!import history %s from hs2", lj.room))
	t.Logf("import with chunk 2 failing:\n%s", out)
	job := failedJob(t, out, code, "chunk 2")
	if got1, gotOlder := lj.timelineHas(t, tb, chunk1), lj.timelineHas(t, tb, older); got1 != len(chunk1) || gotOlder != 0 {
		t.Errorf("after chunk 2 failed, hs1's timeline has %d of chunk 1's %d messages and %d of the %d older ones; "+
			"want all of chunk 1 and nothing from chunk 2 on", got1, len(chunk1), gotOlder, len(older))
	}
	if n := restarts(); n != 0 {
		t.Errorf("the restart (the import's last step) ran %d time(s) after chunk 2 failed", n)
	}
	// No gap: /messages shows alice's join and chunk 1, exactly the newest run of the room.
	// Restart hs1 first, as the job would have at its end: until then Synapse's event cache
	// hides the events it held as outliers (here the newest message, the join's prev event).
	tb.Restart(t, tb.HS1)
	got := timeline(t, lj.alice, lj.room)
	if newest := lj.want[:min(len(lj.want), 1+chunk)]; !slices.Equal(got, newest) {
		t.Errorf("after chunk 2 failed, hs1's /messages shows %d events; want the room's newest %d (alice's join and chunk 1), "+
			"first difference at %d", len(got), len(newest), firstDiff(got, newest))
	}

	removeFault()
	out, code = medicExec(t, cfg, "!resume "+job)
	t.Logf("!resume after the fault is gone:\n%s", out)
	if code != 0 {
		t.Fatalf("!resume of the failed import %s: exit %d", job, code)
	}
	if n := lj.timelineHas(t, tb, lj.messages); n != messages {
		t.Errorf("after !resume hs1's timeline has %d of the %d messages", n, messages)
	}
	if n := restarts(); n != 1 {
		t.Errorf("the restart command ran %d time(s) in all, want once (at the end of the resumed import)", n)
	}
	if got := timeline(t, lj.alice, lj.room); !slices.Equal(got, lj.want) {
		t.Errorf("after !resume hs1's /messages shows %d events, hs2's showed %d; first difference at %d",
			len(got), len(lj.want), firstDiff(got, lj.want))
	}
}
