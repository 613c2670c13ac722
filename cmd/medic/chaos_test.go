package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

// The chaos test (issue 13): each run stages one repair's fixture, starts `medic exec --yes`
// for it as its own process, SIGKILLs it after a random delay, then acts as the admin would:
// finds the job in medic's store and either resumes it or cancels and undoes it. After every
// run the tables the repair touches are untouched or exactly the repair's result, and no
// login-as-user token medic minted is valid once medic has started again.
//
//	MEDIC_CHAOS_RUNS  number of runs (default 3, what `make test` runs; `make chaos` runs 30)
//	MEDIC_CHAOS_SEED  the random seed (default: the time); logged, so a failing run replays
//	MEDIC_CHAOS_MEASURE=1  never kill: log how long each repair takes (to set the typical
//	                  durations below)
//	MEDIC_CHAOS_TALLY a file to write the tally to as well

// Typical durations of `medic exec --yes '<repair>'` from the process start to its exit, on
// the shared 2-core machine with this test's fixtures, measured with MEDIC_CHAOS_MEASURE=1 and
// in unkilled runs (2026-12-02, other engineers' tests beside it, so they swing 2×):
// unreject 6.9–14.3 s (most of it Synapse's restart), import 6.5–19.7 s (29 events in chunks
// of 5, about 3.5 s, then the restart), recover 1.2–3.0 s, federation reset 0.5–0.9 s. The
// constants are in the middle. A kill lands uniformly in [0, typical], so some land before
// the approval, some mid-run, some after the job finished.
const (
	chaosTypicalUnreject   = 10 * time.Second        // verify, transaction, restart of Synapse, post-check
	chaosTypicalImport     = 12 * time.Second        // plan, chunks, restart of Synapse
	chaosTypicalRecover    = 2000 * time.Millisecond // state from hs2, 3 joins with minted tokens
	chaosTypicalFederation = 700 * time.Millisecond  // one reset through the admin API
)

// chaosImportChunk keeps the import's chunks small, so a kill can land between them.
const chaosImportChunk = 5

// chaosFixture is one repair staged on the testbed.
type chaosFixture struct {
	line  string // the medic command
	extra string // more medic config (import sources)
	// judge says where the tables the repair touches stand: "untouched" (as before the
	// run), "result" (exactly the repair's result), or anything else, described.
	judge func(t *testing.T) string
	// partial is true when a state between the two is allowed right after a kill (whole
	// import chunks, some users rejoined), before the admin resumes or undoes.
	partial bool
}

type chaosRepair struct {
	name     string
	typical  time.Duration
	undoable bool // the repair changes Synapse's rows (journaled): cancel + undo is an option
	stage    func(t *testing.T, tb *testbed.Testbed) *chaosFixture
}

var chaosRepairs = []chaosRepair{
	{"unreject", chaosTypicalUnreject, true, stageUnreject},
	{"import", chaosTypicalImport, true, stageImport},
	{"recover", chaosTypicalRecover, false, stageRecover},
	{"federation reset", chaosTypicalFederation, false, stageFederationReset},
}

// chaosOutcome is one run, for the tally.
type chaosOutcome struct {
	repair, landed, action string
	tokensAtKill           int // login-as-user tokens valid right after the kill (to be revoked)
	passed                 bool
}

func TestChaos(t *testing.T) {
	tb := testbed.Get(t)
	runs := 3
	if s := os.Getenv("MEDIC_CHAOS_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("MEDIC_CHAOS_RUNS=%q", s)
		}
		runs = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MEDIC_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MEDIC_CHAOS_SEED=%q", s)
		}
	}
	measure := os.Getenv("MEDIC_CHAOS_MEASURE") == "1"
	t.Logf("chaos: %d runs, MEDIC_CHAOS_SEED=%d", runs, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	bin := testbed.MedicBinary(t)

	var outcomes []chaosOutcome
	for i := range runs {
		repair := chaosRepairs[rng.IntN(len(chaosRepairs))]
		if measure {
			repair = chaosRepairs[i%len(chaosRepairs)]
		}
		delay := time.Duration(rng.Int64N(int64(repair.typical) + 1))
		undo := repair.undoable && rng.IntN(2) == 0
		o := chaosOutcome{repair: repair.name}
		passed := t.Run(fmt.Sprintf("%02d-%s", i+1, strings.ReplaceAll(repair.name, " ", "-")), func(t *testing.T) {
			t.Logf("run %d of %d (seed %d): %s, kill after %s, then %s", i+1, runs, seed, repair.name,
				delay.Round(time.Millisecond), map[bool]string{true: "cancel + undo", false: "resume"}[undo])
			chaosRun(t, tb, bin, repair, delay, undo, measure, &o)
		})
		o.passed = passed && o.action != ""
		outcomes = append(outcomes, o)
		if !passed {
			t.Logf("run %d failed; replay with MEDIC_CHAOS_SEED=%d MEDIC_CHAOS_RUNS=%d", i+1, seed, i+1)
		}
	}
	tally := chaosTally(outcomes, seed)
	// The tally goes to the test log only: printed to stdout it would sit between a failing
	// test's messages and the end of `make test`'s output, the part CI shows.
	t.Log("\n" + tally)
	if path := os.Getenv("MEDIC_CHAOS_TALLY"); path != "" { // scripts/chaos.sh prints it
		if err := os.WriteFile(path, []byte(tally), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// chaosRun is one run: stage, start, kill, restart medic, resume or undo, judge.
func chaosRun(t *testing.T, tb *testbed.Testbed, bin string, repair chaosRepair, delay time.Duration, undo, measure bool, o *chaosOutcome) {
	started := time.Now()
	fx := repair.stage(t, tb)
	dir := t.TempDir()
	cfg := tb.MedicConfig(t, dir, tb.HS1.UserID("medic"), tb.MedicPassword)
	if fx.extra != "" {
		f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.WriteString(fx.extra)
		_ = f.Close()
	}
	if v := fx.judge(t); v != "untouched" {
		t.Fatalf("before the run the fixture judges %q, not untouched", v)
	}
	t.Logf("staged in %s", time.Since(started).Round(time.Millisecond))

	// The repair, as its own process, killed after delay (or, measuring, left to finish).
	if measure {
		delay = 10 * time.Minute
	}
	out, ran, exited := execKilledAfter(t, bin, cfg, fx.line, delay)
	if measure {
		t.Logf("MEASURE %s: %s from start to exit (%s)", repair.name, ran.Round(time.Millisecond), exited)
	}
	defer func() {
		if t.Failed() {
			t.Logf("medic's output up to the kill:\n%s", out)
		}
	}()
	store := filepath.Join(dir, "data", "medic.db")
	job, state, steps := chaosJob(t, store)
	switch {
	case job == "" || state == "awaiting approval":
		o.landed = "before approval"
	case state == "done":
		o.landed = "after finishing"
	default:
		o.landed = "during"
	}
	t.Logf("medic %s after %s: job %q %s (%s), landed %s", exited, ran.Round(time.Millisecond), job, state, steps, o.landed)

	afterKill := fx.judge(t)
	o.tokensAtKill = liveMintedTokens(t, tb)
	t.Logf("after the kill the tables are %s; %d minted token(s) valid", afterKill, o.tokensAtKill)
	if afterKill != "untouched" && afterKill != "result" && !fx.partial {
		t.Errorf("after the kill: %s (neither untouched nor the repair's result)", afterKill)
	}
	if o.landed == "before approval" && afterKill != "untouched" {
		t.Errorf("killed before the job was approved, yet the tables are %s", afterKill)
	}

	// medic starts again (here: `!jobs` in the terminal; any start logs out the tokens a
	// killed medic left valid).
	admin := func(line string) (string, int) {
		t.Helper()
		o, code := chaosExec(t, bin, cfg, line)
		t.Logf("%s (exit %d):\n%s", line, code, o)
		return o, code
	}
	admin("!jobs")
	if n := liveMintedTokens(t, tb); n != 0 {
		t.Errorf("%d login-as-user token(s) minted by medic still valid after it started again", n)
	}

	want := "result"
	switch {
	case job == "":
		o.action = "nothing (no job)"
		want = "untouched"
	case state == "awaiting approval" && undo:
		o.action = "cancelled"
		admin("!cancel " + job)
		want = "untouched"
	case state == "awaiting approval":
		// Never approved: resuming is approving it (what an admin does with a plan that waits).
		o.action = "resumed"
		admin("--yes !approve " + job)
	case undo:
		o.action = "undone"
		if state != "done" && state != "cancelled" {
			if _, code := admin("!cancel " + job); code != 0 {
				t.Errorf("!cancel %s failed", job)
			}
		}
		if _, code := admin("--yes !undo " + job); code != 0 {
			t.Errorf("!undo %s failed", job)
		}
		want = "untouched"
	case state == "done":
		o.action = "resumed" // nothing left to resume: the job finished before the kill
	default:
		o.action = "resumed"
		admin("--yes !resume " + job)
	}
	if want == "result" && job != "" {
		// The job, or the job a re-plan superseded it with, must have finished.
		if final, fstate := chaosFinalJob(t, store, job); fstate != "done" {
			t.Errorf("after %s the job %s is %s, not done", o.action, final, fstate)
		}
	}
	if got := fx.judge(t); got != want {
		t.Errorf("after %s: the tables are %s, want %s", o.action, got, want)
	}
	if n := liveMintedTokens(t, tb); n != 0 {
		t.Errorf("%d login-as-user token(s) minted by medic still valid at the end of the run", n)
	}
	t.Logf("run took %s", time.Since(started).Round(time.Millisecond))
}

// execKilledAfter runs `medic exec --yes line` as its own process and SIGKILLs it after delay
// unless it exited before. It returns what medic printed, how long it ran and how it ended.
func execKilledAfter(t *testing.T, bin, cfg, line string, delay time.Duration) (string, time.Duration, string) {
	t.Helper()
	cmd := exec.Command(bin, "exec", "-c", cfg, "--yes", line)
	// Its own process group, so the restart command it may have started (testbed.sh restart,
	// which goes on after medic is killed, as systemctl would) can be waited for below.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out testbed.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	how := "killed"
	select {
	case err := <-exited:
		how = fmt.Sprintf("exited by itself (%v)", err)
	case <-time.After(delay):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		if err := <-exited; err == nil {
			how = "exited by itself just before the kill"
		}
	}
	ran := time.Since(start)
	waitRestartCommand(t, cmd.Process.Pid)
	return out.String(), ran, how
}

// waitRestartCommand waits until no restart command started by the medic process pgid is left
// running (the testbed's restart goes on after medic's death and must not race the next one).
func waitRestartCommand(t *testing.T, pgid int) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); ; {
		busy := false
		procs, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, p := range procs {
			raw, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			// pid (comm) state ppid pgrp …: comm may hold spaces, so split after the last ')'.
			s := string(raw)
			fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
			if len(fields) < 3 || fields[2] != strconv.Itoa(pgid) {
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
			if strings.Contains(string(cmdline), "testbed.sh") {
				busy = true
			}
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the restart command medic started never finished")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// chaosExec runs `medic exec` (the binary) with args split off the front: "--yes !x y".
func chaosExec(t *testing.T, bin, cfg, line string) (string, int) {
	t.Helper()
	args := []string{"exec", "-c", cfg}
	if rest, ok := strings.CutPrefix(line, "--yes "); ok {
		args, line = append(args, "--yes"), rest
	}
	cmd := exec.Command(bin, append(args, line)...)
	var out testbed.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("medic exec %q did not finish:\n%s", line, out.String())
	}
	return out.String(), cmd.ProcessState.ExitCode()
}

// chaosJob reads the repair's job from medic's store: the first job requested (undo jobs come
// later), its state and its steps.
func chaosJob(t *testing.T, path string) (job, state, steps string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		return "", "", "no store"
	}
	db := openStoreRO(t, path)
	defer db.Close()
	if err := db.QueryRow(`SELECT id, state FROM job ORDER BY requested_at LIMIT 1`).Scan(&job, &state); err != nil {
		return "", "", "no job"
	}
	var done, started int
	var plan string
	_ = db.QueryRow(`SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'started')
		FROM job_step WHERE job_id = $1`, job).Scan(&done, &started)
	_ = db.QueryRow(`SELECT plan FROM job WHERE id = $1`, job).Scan(&plan)
	return job, state, fmt.Sprintf("%d of %d steps done, %d started", done, len(jobsParsePlanSteps(plan)), started)
}

// chaosFinalJob follows supersessions from job: a re-plan that found the world changed (by
// the job's own committed work) supersedes it with a new job, which must then finish.
func chaosFinalJob(t *testing.T, path, job string) (string, string) {
	t.Helper()
	db := openStoreRO(t, path)
	defer db.Close()
	var state, kind string
	if err := db.QueryRow(`SELECT state, kind FROM job WHERE id = $1`, job).Scan(&state, &kind); err != nil {
		t.Fatal(err)
	}
	for state == "superseded" {
		var next string
		if err := db.QueryRow(`SELECT id, state FROM job WHERE kind = $1 AND requested_at > (SELECT requested_at FROM job WHERE id = $2)
			ORDER BY requested_at LIMIT 1`, kind, job).Scan(&next, &state); err != nil {
			return job + " (superseded, no successor)", "superseded"
		}
		job = next
	}
	return job, state
}

func openStoreRO(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3-fk-wal", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// jobsParsePlanSteps returns the step names of a stored plan.
func jobsParsePlanSteps(raw string) []string {
	var plan struct {
		Steps []string `json:"steps"`
	}
	_ = json.Unmarshal([]byte(raw), &plan)
	return plan.Steps
}

// liveMintedTokens counts the login-as-user tokens valid in Synapse (hs1).
func liveMintedTokens(t *testing.T, tb *testbed.Testbed) int {
	t.Helper()
	return tb.HS1.Count(t, `SELECT count(*) FROM access_tokens WHERE puppets_user_id IS NOT NULL
		AND (valid_until_ms IS NULL OR valid_until_ms > $1)`, time.Now().UnixMilli())
}

func chaosTally(outcomes []chaosOutcome, seed uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos tally (MEDIC_CHAOS_SEED=%d, %d runs):\n", seed, len(outcomes))
	fmt.Fprintf(&b, "%-17s %5s | %15s %7s %15s | %8s %11s %9s | %13s | %s\n", "repair", "runs", "before approval", "during", "after finishing",
		"resumed", "cancel+undo", "no job", "tokens left*", "passed")
	total := map[string]int{}
	for _, r := range chaosRepairs {
		c := map[string]int{}
		for _, o := range outcomes {
			if o.repair != r.name {
				continue
			}
			c["runs"]++
			c[o.landed]++
			switch o.action {
			case "resumed":
				c["resumed"]++
			case "undone", "cancelled":
				c["undone"]++
			default:
				c["no job"]++
			}
			if o.passed {
				c["passed"]++
			}
			c["tokens"] += o.tokensAtKill
		}
		for k, v := range c {
			total[k] += v
		}
		fmt.Fprintf(&b, "%-17s %5d | %15d %7d %15d | %8d %11d %9d | %13d | %d/%d\n", r.name, c["runs"], c["before approval"], c["during"],
			c["after finishing"], c["resumed"], c["undone"], c["no job"], c["tokens"], c["passed"], c["runs"])
	}
	fmt.Fprintf(&b, "%-17s %5d | %15d %7d %15d | %8d %11d %9d | %13d | %d/%d\n", "all", total["runs"], total["before approval"], total["during"],
		total["after finishing"], total["resumed"], total["undone"], total["no job"], total["tokens"], total["passed"], total["runs"])
	b.WriteString("* login-as-user tokens the killed medic left valid, all logged out when medic started again (or the run failed)\n")
	return b.String()
}

// settled returns fp() once two readings a second apart agree (federation traffic of the
// fixture has landed), so "before" is not taken mid-delivery.
func settled(t *testing.T, fp func() string) string {
	t.Helper()
	prev := fp()
	for deadline := time.Now().Add(60 * time.Second); ; {
		time.Sleep(time.Second)
		cur := fp()
		if cur == prev {
			return cur
		}
		if time.Now().After(deadline) {
			t.Fatal("the testbed never settled before the run")
		}
		prev = cur
	}
}

// --- unreject: a poisoned room (unreject_test.go) ---

func stageUnreject(t *testing.T, tb *testbed.Testbed) *chaosFixture {
	p := testbed.StagePoisonedRoom(t, tb, 2)
	// One line per row (rejectionRows' image without its empty lines, which vary with
	// whether a part is empty).
	rows := func() []string {
		return slices.DeleteFunc(strings.Split(rejectionRows(t, tb.HS1), "\n"), func(l string) bool { return l == "" })
	}
	image := func() string { return strings.Join(rows(), "\n") }
	before := settled(t, image)
	// The result: the chain's events rows and rejections rows gone from the image, every
	// other row as before.
	result := strings.Join(slices.DeleteFunc(strings.Split(before, "\n"), func(line string) bool {
		return slices.ContainsFunc(p.ChainIDs, func(e string) bool { return strings.Contains(line, `"`+e+`"`) })
	}), "\n")
	return &chaosFixture{
		line: "!unreject " + p.Room.String(),
		judge: func(t *testing.T) string {
			switch now := image(); now {
			case before:
				return "untouched"
			case result:
				return "result"
			default:
				still := 0
				for _, e := range p.ChainIDs {
					if strings.Contains(now, `"`+e+`"`) {
						still++
					}
				}
				return fmt.Sprintf("changed otherwise (%d of %d chain events still appear among the rejected rows)", still, len(p.ChainIDs))
			}
		},
	}
}

// --- import: a room on hs2 whose history hs1 lacks (import_test.go, PostgreSQL source) ---

func stageImport(t *testing.T, tb *testbed.Testbed) *chaosFixture {
	ctx := context.Background()
	owner := tb.Register(t, tb.HS2, testbed.UniqueName("chaosowner"), false)
	late := tb.Register(t, tb.HS1, testbed.UniqueName("chaoslate"), false)
	room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: testbed.UniqueName("chaos history"),
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}}}}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := room.RoomID
	for i := range 30 {
		sendText(t, owner, roomID, &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("old %d", i)})
		if i == 15 {
			if _, err = owner.SendStateEvent(ctx, roomID, event.StateTopic, "", &event.TopicEventContent{Topic: "chaos"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	testbed.JoinVia(t, late, roomID, tb.HS2.Name)
	waitRows(t, tb.HS1, 1, "the late join landed on hs1", `SELECT count(*) FROM local_current_membership
		WHERE room_id = $1 AND user_id = $2 AND membership = 'join'`, roomID, late.UserID)
	// What the source has: the import's target set (hs2 has every event of the room).
	srcEvents := roomEventSet(t, tb.HS2, roomID)
	// hs2 sends alice's join back over federation only as an echo; wait until hs1's view of
	// the room is quiet, then fingerprint every table the import writes.
	fpString := func() string {
		fp := tableFingerprints(t, tb.HS1)
		return strings.Join(slices.Sorted(maps.Keys(fp)), ",") + fmt.Sprint(fp)
	}
	settled(t, fpString)
	before := tableFingerprints(t, tb.HS1)
	if got := roomEventSet(t, tb.HS1, roomID); got == srcEvents {
		t.Fatal("hs1 already has the room's history: the scenario is void")
	}
	return &chaosFixture{
		line:    fmt.Sprintf("!import history %s from src", roomID),
		extra:   fmt.Sprintf("import:\n  sources:\n    src: {type: postgres, database: %q}\n  chunk_size: %d\n", tb.HS2.DSN, chaosImportChunk),
		partial: true,
		judge: func(t *testing.T) string {
			now := tableFingerprints(t, tb.HS1)
			if maps.Equal(now, before) {
				return "untouched"
			}
			return importResult(t, tb, roomID, srcEvents)
		},
	}
}

// roomEventSet is the room's timeline (not outliers) as a sorted list of event IDs.
func roomEventSet(t *testing.T, h *testbed.Homeserver, roomID id.RoomID) string {
	t.Helper()
	var out string
	h.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT coalesce(string_agg(event_id, ' ' ORDER BY event_id), '') FROM events
			WHERE room_id = $1 AND NOT outlier`, roomID).Scan(&out)
	})
	return out
}

// importResult judges hs1's copy of the room against the source: "result" when the room's
// events are the source's set, each with the rows the import writes (event_json, its state
// group, its edges, state_events for state, room_memberships for members, the search row of
// a message), and the state the source holds; otherwise what differs.
func importResult(t *testing.T, tb *testbed.Testbed, roomID id.RoomID, srcEvents string) string {
	t.Helper()
	got := roomEventSet(t, tb.HS1, roomID)
	if got != srcEvents {
		return fmt.Sprintf("partial: %d of %d source events in hs1's timeline", len(strings.Fields(got)), len(strings.Fields(srcEvents)))
	}
	checks := []struct{ what, sql string }{
		{"events without event_json", `SELECT count(*) FROM events e WHERE e.room_id = $1 AND NOT EXISTS (SELECT 1 FROM event_json j WHERE j.event_id = e.event_id)`},
		{"timeline events without a state group", `SELECT count(*) FROM events e WHERE e.room_id = $1 AND NOT e.outlier AND e.rejection_reason IS NULL
			AND NOT EXISTS (SELECT 1 FROM event_to_state_groups g WHERE g.event_id = e.event_id)`},
		{"timeline events without their edges", `SELECT count(*) FROM events e WHERE e.room_id = $1 AND NOT e.outlier AND e.type <> 'm.room.create'
			AND NOT EXISTS (SELECT 1 FROM event_edges x WHERE x.event_id = e.event_id)`},
		{"state events without state_events", `SELECT count(*) FROM events e WHERE e.room_id = $1 AND e.state_key IS NOT NULL
			AND NOT EXISTS (SELECT 1 FROM state_events s WHERE s.event_id = e.event_id)`},
		{"member events without room_memberships", `SELECT count(*) FROM events e WHERE e.room_id = $1 AND e.type = 'm.room.member'
			AND NOT EXISTS (SELECT 1 FROM room_memberships m WHERE m.event_id = e.event_id)`},
		{"messages without event_search", `SELECT count(*) FROM events e WHERE e.room_id = $1 AND e.type = 'm.room.message'
			AND NOT EXISTS (SELECT 1 FROM event_search s WHERE s.event_id = e.event_id)`},
	}
	var wrong []string
	for _, c := range checks {
		if n := tb.HS1.Count(t, c.sql, roomID); n != 0 {
			wrong = append(wrong, fmt.Sprintf("%d %s", n, c.what))
		}
	}
	// Same edges and same state events as the source.
	for _, q := range []string{
		`SELECT coalesce(md5(string_agg(x.event_id || '>' || x.prev_event_id, ',' ORDER BY x.event_id, x.prev_event_id)), '')
			FROM event_edges x JOIN events e USING (event_id) WHERE e.room_id = $1 AND NOT e.outlier`,
		`SELECT coalesce(md5(string_agg(s.event_id || s.type || s.state_key, ',' ORDER BY s.event_id)), '') FROM state_events s WHERE s.room_id = $1`,
	} {
		var a, b string
		tb.HS1.WithConn(t, func(ctx context.Context, c *pgx.Conn) error { return c.QueryRow(ctx, q, roomID).Scan(&a) })
		tb.HS2.WithConn(t, func(ctx context.Context, c *pgx.Conn) error { return c.QueryRow(ctx, q, roomID).Scan(&b) })
		if a != b {
			wrong = append(wrong, "differs from the source: "+strings.Fields(q)[1])
		}
	}
	if len(wrong) > 0 {
		return "the source's events, but " + strings.Join(wrong, "; ")
	}
	return "result"
}

// --- recover: a forgotten invite-only room (revoke_test.go) ---

func stageRecover(t *testing.T, tb *testbed.Testbed) *chaosFixture {
	var users []*mautrix.Client
	for range 3 {
		users = append(users, tb.Register(t, tb.HS1, testbed.UniqueName("chaosrec"), false))
	}
	room, _ := forgottenPrivateRoom(t, tb, users)
	// Every local user hs2 (the remote) lists as joined.
	var listed []string
	tb.HS2.WithConn(t, func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT c.state_key FROM current_state_events c JOIN room_memberships m USING (event_id)
			WHERE c.room_id = $1 AND c.type = 'm.room.member' AND m.membership = 'join' AND c.state_key LIKE $2 ORDER BY 1`,
			room.RoomID, "%:"+tb.HS1.Name)
		if err != nil {
			return err
		}
		listed, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if len(listed) != len(users) {
		t.Fatalf("hs2 lists %d local users as joined, want %d", len(listed), len(users))
	}
	return &chaosFixture{
		line:    fmt.Sprintf("!recover room %s via %s", room.RoomID, tb.HS2.Name),
		partial: true,
		judge: func(t *testing.T) string {
			n := tb.HS1.Count(t, `SELECT count(*) FROM local_current_membership WHERE room_id = $1 AND user_id = ANY($2) AND membership = 'join'`,
				room.RoomID, listed)
			switch n {
			case 0:
				return "untouched"
			case len(listed):
				return "result"
			}
			return fmt.Sprintf("partial: %d of %d users rejoined", n, len(listed))
		},
	}
}

// --- federation reset: a made-up destination in backoff (as bot_test.go makes one) ---

func stageFederationReset(t *testing.T, tb *testbed.Testbed) *chaosFixture {
	// A fresh name each run: Synapse caches the retry state of destinations it has reset.
	ghost := testbed.UniqueName("chaos") + ".test"
	now := time.Now().UnixMilli()
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts) VALUES ($1, $2, 600000, $2)`, ghost, now)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination = $1`, ghost) })
	row := func() string {
		var s string
		tb.HS1.WithConn(t, func(ctx context.Context, c *pgx.Conn) error {
			return c.QueryRow(ctx, `SELECT to_jsonb(d)::text FROM destinations d WHERE destination = $1`, ghost).Scan(&s)
		})
		return s
	}
	before := row()
	return &chaosFixture{
		line: "!federation reset " + ghost,
		judge: func(t *testing.T) string {
			now := row()
			if now == before {
				return "untouched"
			}
			// Synapse's reset_connection: retry_last_ts 0, retry_interval 0, failure_ts NULL.
			if tb.HS1.Count(t, `SELECT count(*) FROM destinations WHERE destination = $1 AND retry_last_ts = 0 AND retry_interval = 0
				AND failure_ts IS NULL`, ghost) == 1 {
				return "result"
			}
			return "changed otherwise: " + now
		},
	}
}
