package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/store/storetest"
)

// The spine's rules, on a real (SQLite) store with a fake notifier and a fake operation:
// fast, so every rule is checked in the normal `make test` without a homeserver.

// fakeNotifier records what the spine says and answers prompts with answer.
type fakeNotifier struct {
	mu       sync.Mutex
	answer   Answer
	said     []string
	prompts  []string
	progress []string
	reports  []string
	reported chan *store.Job
	// beforeAnswer, if set, runs when a prompt is answered: the world changing while the
	// admin reads the plan.
	beforeAnswer func()
}

func newNotifier() *fakeNotifier { return &fakeNotifier{reported: make(chan *store.Job, 10)} }

func (n *fakeNotifier) Say(_ context.Context, md string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.said = append(n.said, md)
}

func (n *fakeNotifier) Prompt(_ context.Context, _ *store.Job, plan string) Answer {
	n.mu.Lock()
	n.prompts = append(n.prompts, plan)
	hook, answer := n.beforeAnswer, n.answer
	n.mu.Unlock()
	if hook != nil {
		hook()
	}
	return answer
}

func (n *fakeNotifier) Progress(_ context.Context, _ *store.Job, status string, _ bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.progress = append(n.progress, status)
}

func (n *fakeNotifier) Report(_ context.Context, job *store.Job, report string) {
	n.mu.Lock()
	n.reports = append(n.reports, report)
	n.mu.Unlock()
	j := *job
	n.reported <- &j
}

func (n *fakeNotifier) lastReport(t *testing.T) (*store.Job, string) {
	t.Helper()
	select {
	case j := <-n.reported:
		n.mu.Lock()
		defer n.mu.Unlock()
		return j, n.reports[len(n.reports)-1]
	case <-time.After(5 * time.Second):
		t.Fatal("no report")
		return nil, ""
	}
}

// world is what the fake operation plans against and changes.
type world struct {
	mu      sync.Mutex
	version int              // part of the plan's basis: changing it is drift
	fail    map[string]error // step name → error it fails with
	ran     []string         // steps run, in order
	block   map[string]chan struct{}
	entered chan string // steps that reached their block
	retries map[string]bool
	nothing bool // plans find nothing to do
}

type testArgs struct {
	Steps []string `json:"steps"`
}

type testData struct {
	Version int `json:"version"`
}

func (w *world) op(kind string, order Order) *Operation[testArgs, testData] {
	return &Operation[testArgs, testData]{
		Kind:  kind,
		Order: order,
		Plan: func(_ context.Context, args testArgs) (*Plan, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(args.Steps) == 0 || w.nothing {
				return &Plan{Nothing: "nothing to do"}, nil
			}
			return &Plan{Title: "test " + kind, Changes: []string{fmt.Sprintf("version %d", w.version)},
				Steps: args.Steps, Data: Encode(testData{Version: w.version})}, nil
		},
		Step: func(_ context.Context, s *Step[testArgs, testData]) error {
			w.mu.Lock()
			block := w.block[s.Name]
			w.mu.Unlock()
			if block != nil {
				w.entered <- s.Name
				<-block
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			w.ran = append(w.ran, s.Name)
			if s.Retry {
				w.retries[s.Name] = true
			}
			s.Note("note from %s (plan version %d)", s.Name, s.Data.Version)
			return w.fail[s.Name]
		},
	}
}

func (w *world) steps() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.ran...)
}

func (w *world) set(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f()
}

type fixture struct {
	m     *Manager
	st    *store.Store
	w     *world
	seq   *Operation[testArgs, testData]
	par   *Operation[testArgs, testData]
	alice Requester
	bob   Requester
	n     *fakeNotifier
}

func newFixture(t *testing.T, approvals int, expire string) *fixture {
	t.Helper()
	st, _ := storetest.Open(t)
	w := &world{fail: map[string]error{}, block: map[string]chan struct{}{}, retries: map[string]bool{}, entered: make(chan string, 10)}
	f := &fixture{st: st, w: w, seq: w.op("test.seq", Sequential), par: w.op("test.par", Parallel(2)), n: newNotifier()}
	f.m = NewManager(st, config.Jobs{Approvals: approvals, ExpireAfter: expire}, zerolog.Nop())
	f.m.ProgressInterval = 0
	// Runs end after their report (the final state, heartbeat): the store must outlive them.
	t.Cleanup(f.m.Wait)
	f.m.Register(f.seq, f.par)
	f.alice = Requester{User: "@alice:test", Room: "!admin:test", Notifier: f.n}
	f.bob = Requester{User: "@bob:test", Room: "!admin:test", Notifier: f.n}
	return f
}

func (f *fixture) propose(t *testing.T, op *Operation[testArgs, testData], steps ...string) *store.Job {
	t.Helper()
	job, err := f.m.Propose(context.Background(), f.alice, op.With(testArgs{Steps: steps}))
	if err != nil || job == nil {
		t.Fatalf("propose: %v, %v", job, err)
	}
	if job.State != store.JobAwaiting {
		t.Fatalf("state after propose = %s", job.State)
	}
	return job
}

func (f *fixture) approve(t *testing.T, req Requester, jobID string) string {
	t.Helper()
	answer, err := f.m.Approve(context.Background(), req, jobID)
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	return answer
}

func (f *fixture) state(t *testing.T, jobID string) string {
	t.Helper()
	j, err := f.st.GetJob(context.Background(), jobID)
	if err != nil || j == nil {
		t.Fatalf("get job: %v", err)
	}
	return j.State
}

func same(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestProposeApproveRun(t *testing.T) {
	f := newFixture(t, 1, "15m")
	job := f.propose(t, f.seq, "a", "b")
	if len(f.n.prompts) != 1 || !strings.Contains(f.n.prompts[0], "Plan "+job.ID+": test test.seq") {
		t.Fatalf("prompt: %q", f.n.prompts)
	}
	if len(f.w.steps()) != 0 {
		t.Fatal("a step ran before approval")
	}
	f.approve(t, f.alice, job.ID)
	j, report := f.n.lastReport(t)
	if j.State != store.JobDone || !same(f.w.steps(), []string{"a", "b"}) {
		t.Fatalf("state %s, ran %v", j.State, f.w.steps())
	}
	for _, want := range []string{"✅", "2 of 2 steps done", "note from a (plan version 0)", "note from b"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q: %s", want, report)
		}
	}
	if _, err := f.m.Approve(context.Background(), f.alice, job.ID); err == nil || !strings.Contains(err.Error(), "nothing to approve") {
		t.Errorf("second approval: %v", err)
	}
}

func TestNothingToDoMakesNoJob(t *testing.T) {
	f := newFixture(t, 1, "15m")
	job, err := f.m.Propose(context.Background(), f.alice, f.seq.With(testArgs{}))
	if err != nil || job != nil {
		t.Fatalf("job %v, err %v", job, err)
	}
	if len(f.n.said) != 1 || f.n.said[0] != "nothing to do" || len(f.n.prompts) != 0 {
		t.Fatalf("said %q, prompts %d", f.n.said, len(f.n.prompts))
	}
}

func TestApprovalsByDistinctAdmins(t *testing.T) {
	f := newFixture(t, 2, "15m")
	job := f.propose(t, f.seq, "a")
	if answer := f.approve(t, f.alice, job.ID); !strings.Contains(answer, "Approval 1 of 2") {
		t.Fatalf("first approval: %q", answer)
	}
	if answer := f.approve(t, f.alice, job.ID); !strings.Contains(answer, "Approval 1 of 2") {
		t.Fatalf("same admin again counts twice: %q", answer)
	}
	if f.state(t, job.ID) != store.JobAwaiting || len(f.w.steps()) != 0 {
		t.Fatal("ran on one admin's approval")
	}
	f.approve(t, f.bob, job.ID)
	if j, _ := f.n.lastReport(t); j.State != store.JobDone {
		t.Fatalf("state %s", j.State)
	}
}

func TestHostApprovesAloneButIsNoAdmin(t *testing.T) {
	f := newFixture(t, 2, "15m")
	host := Requester{User: "@terminal:medic.local", Host: true, Notifier: f.n}
	f.n.answer = AnswerYes
	job, err := f.m.Propose(context.Background(), host, f.seq.With(testArgs{Steps: []string{"a"}}))
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := f.n.lastReport(t); j.State != store.JobDone || j.ID != job.ID {
		t.Fatalf("host-approved job: %s", j.State)
	}
	if approvers, _ := f.st.Approvals(context.Background(), job.ID); len(approvers) != 0 {
		t.Fatalf("the host was counted as an admin: %v", approvers)
	}
	// A chat plan approved once in chat and once on the host runs, but the host's approval
	// is not one of the two.
	f.n.answer = AnswerLater
	job = f.propose(t, f.seq, "b")
	f.approve(t, f.alice, job.ID)
	f.approve(t, host, job.ID)
	f.n.lastReport(t)
	if approvers, _ := f.st.Approvals(context.Background(), job.ID); !same(approvers, []string{"@alice:test"}) {
		t.Fatalf("approvers: %v", approvers)
	}
}

func TestHostDeclines(t *testing.T) {
	f := newFixture(t, 1, "15m")
	f.n.answer = AnswerNo
	job, err := f.m.Propose(context.Background(), Requester{User: "@terminal:medic.local", Host: true, Notifier: f.n},
		f.seq.With(testArgs{Steps: []string{"a"}}))
	if err != nil {
		t.Fatal(err)
	}
	if job.State != store.JobCancelled || f.state(t, job.ID) != store.JobCancelled || len(f.w.steps()) != 0 {
		t.Fatalf("declined job: %s, ran %v", job.State, f.w.steps())
	}
}

func TestExpiredPlanDoesNotRun(t *testing.T) {
	f := newFixture(t, 1, "1ms")
	job := f.propose(t, f.seq, "a")
	time.Sleep(5 * time.Millisecond)
	_, err := f.m.Approve(context.Background(), f.alice, job.ID)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("approve after expiry: %v", err)
	}
	if f.state(t, job.ID) != store.JobExpired || len(f.w.steps()) != 0 {
		t.Fatalf("state %s, ran %v", f.state(t, job.ID), f.w.steps())
	}
}

func TestDriftSupersedesThePlan(t *testing.T) {
	f := newFixture(t, 1, "15m")
	job := f.propose(t, f.seq, "a")
	f.w.set(func() { f.w.version = 1 })
	f.approve(t, f.alice, job.ID)
	if f.state(t, job.ID) != store.JobSuperseded || len(f.w.steps()) != 0 {
		t.Fatalf("drifted job: %s, ran %v", f.state(t, job.ID), f.w.steps())
	}
	if len(f.n.prompts) != 2 || !strings.Contains(f.n.prompts[1], "The situation changed") ||
		!strings.Contains(f.n.prompts[1], "now: version 1") || !strings.Contains(f.n.prompts[1], "was: version 0") {
		t.Fatalf("new prompt: %q", f.n.prompts)
	}
}

// TestHostApprovalDriftToNothingIsSaid: approved at the prompt (medic exec --yes), but by
// then nothing is left to do (e.g. Synapse's resync joined everyone !recover planned to
// join): the operator is told the situation changed and why, not left with silence.
func TestHostApprovalDriftToNothingIsSaid(t *testing.T) {
	f := newFixture(t, 1, "15m")
	f.n.answer = AnswerYes
	f.n.beforeAnswer = func() { f.w.set(func() { f.w.nothing = true }) }
	host := Requester{User: "@terminal:medic.local", Host: true, Notifier: f.n}
	job, err := f.m.Propose(context.Background(), host, f.seq.With(testArgs{Steps: []string{"a"}}))
	if err != nil {
		t.Fatal(err)
	}
	if job.State != store.JobSuperseded || len(f.w.steps()) != 0 {
		t.Fatalf("drifted job: %s, ran %v", job.State, f.w.steps())
	}
	f.n.mu.Lock()
	said := strings.Join(f.n.said, "\n")
	f.n.mu.Unlock()
	if !strings.Contains(said, "The situation changed since job `"+job.ID+"` was planned") || !strings.Contains(said, "nothing to do") {
		t.Fatalf("the operator was told %q", said)
	}
}

func TestSequentialStopsAtFirstFailure(t *testing.T) {
	f := newFixture(t, 1, "15m")
	f.w.fail["b"] = errors.New("transaction failed: trigger raised")
	job := f.propose(t, f.seq, "a", "b", "c")
	f.approve(t, f.alice, job.ID)
	j, report := f.n.lastReport(t)
	if j.State != store.JobFailed || !same(f.w.steps(), []string{"a", "b"}) {
		t.Fatalf("state %s, ran %v (c must not run after b failed)", j.State, f.w.steps())
	}
	for _, want := range []string{"failed at step 2 of 3 (b)", "not run: c", "trigger raised", "resume " + job.ID} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q: %s", want, report)
		}
	}
}

func TestFirstStepFailureChangedNothing(t *testing.T) {
	f := newFixture(t, 1, "15m")
	f.w.fail["a"] = errors.New("boom")
	job := f.propose(t, f.seq, "a", "b")
	f.approve(t, f.alice, job.ID)
	_, report := f.n.lastReport(t)
	if !strings.Contains(report, "failed at step 1 of 2") || !strings.Contains(report, "nothing was changed") {
		t.Fatalf("report: %s", report)
	}
}

func TestParallelGoesOnAndReports(t *testing.T) {
	f := newFixture(t, 1, "15m")
	f.w.fail["b"] = errors.New("403 banned")
	job := f.propose(t, f.par, "a", "b", "c", "d")
	f.approve(t, f.alice, job.ID)
	j, report := f.n.lastReport(t)
	if j.State != store.JobFailed || len(f.w.steps()) != 4 {
		t.Fatalf("state %s, ran %v (every independent step must run)", j.State, f.w.steps())
	}
	if !strings.Contains(report, "3 of 4 steps done, 1 failed") || !strings.Contains(report, "failed: b: 403 banned") {
		t.Fatalf("report: %s", report)
	}
}

// ParallelThenLast: the last step (a report) starts only once every other step ended.
func TestParallelThenLastRunsLastAfterTheOthers(t *testing.T) {
	f := newFixture(t, 1, "15m")
	op := f.w.op("test.last", ParallelThenLast(4))
	f.m.Register(op)
	release := map[string]chan struct{}{"a": make(chan struct{}), "last": make(chan struct{})}
	var once [2]sync.Once
	open := func(i int, name string) { once[i].Do(func() { close(release[name]) }) }
	// A failure below must not leave the run blocked (the fixture waits for it).
	t.Cleanup(func() { open(0, "a"); open(1, "last") })
	f.w.set(func() { f.w.block["a"], f.w.block["last"] = release["a"], release["last"] })
	job := f.propose(t, op, "a", "b", "last")
	f.approve(t, f.alice, job.ID)
	if got := <-f.w.entered; got != "a" {
		t.Fatalf("entered %s first", got)
	}
	// b is not blocked and ends; last must still wait for a.
	select {
	case got := <-f.w.entered:
		t.Fatalf("%s started while a was running", got)
	case <-time.After(300 * time.Millisecond):
	}
	open(0, "a")
	if got := <-f.w.entered; got != "last" {
		t.Fatalf("entered %s, want last", got)
	}
	open(1, "last")
	if j, _ := f.n.lastReport(t); j.State != store.JobDone || !same(f.w.steps()[1:], []string{"a", "last"}) {
		t.Fatalf("state %s, ran %v", j.State, f.w.steps())
	}
}

func TestResumeRetriesOnlyFailedAndUnfinished(t *testing.T) {
	f := newFixture(t, 1, "15m")
	f.w.fail["b"] = errors.New("boom")
	job := f.propose(t, f.seq, "a", "b", "c")
	f.approve(t, f.alice, job.ID)
	f.n.lastReport(t)
	f.w.set(func() { delete(f.w.fail, "b") })
	if _, err := f.m.Resume(context.Background(), f.bob, job.ID); err != nil {
		t.Fatal(err)
	}
	j, report := f.n.lastReport(t)
	if j.State != store.JobDone || !same(f.w.steps(), []string{"a", "b", "b", "c"}) {
		t.Fatalf("state %s, ran %v (a must not run again)", j.State, f.w.steps())
	}
	if !f.w.retries["b"] || !strings.Contains(report, "retried: b (failed before: boom)") {
		t.Fatalf("retry not reported: %v, %s", f.w.retries, report)
	}
	if _, err := f.m.Resume(context.Background(), f.bob, job.ID); err == nil {
		t.Fatal("a done job was resumed")
	}
}

func TestResumeReplansBeforeAnyStepDone(t *testing.T) {
	f := newFixture(t, 1, "15m")
	f.w.fail["a"] = errors.New("boom")
	job := f.propose(t, f.seq, "a", "b")
	f.approve(t, f.alice, job.ID)
	f.n.lastReport(t)
	f.w.set(func() { delete(f.w.fail, "a"); f.w.version = 2 })
	if _, err := f.m.Resume(context.Background(), f.bob, job.ID); err != nil {
		t.Fatal(err)
	}
	if f.state(t, job.ID) != store.JobSuperseded || !same(f.w.steps(), []string{"a"}) {
		t.Fatalf("resume after drift: %s, ran %v", f.state(t, job.ID), f.w.steps())
	}
	if !strings.Contains(f.n.prompts[len(f.n.prompts)-1], "The situation changed") {
		t.Fatal("no new plan after drift")
	}
}

func TestStopRunsNoFurtherStep(t *testing.T) {
	f := newFixture(t, 1, "15m")
	release := make(chan struct{})
	f.w.block["a"] = release
	job := f.propose(t, f.seq, "a", "b")
	f.approve(t, f.alice, job.ID)
	<-f.w.entered
	answer, err := f.m.Cancel(context.Background(), f.bob, job.ID)
	if err != nil || !strings.Contains(answer, "will stop after its current step") {
		t.Fatalf("cancel: %q %v", answer, err)
	}
	close(release)
	j, report := f.n.lastReport(t)
	if j.State != store.JobCancelled || !same(f.w.steps(), []string{"a"}) || !strings.Contains(report, "Stopped on request") {
		t.Fatalf("state %s, ran %v, report %s", j.State, f.w.steps(), report)
	}
}

func TestUndoRefusedUntilTheRunIsOver(t *testing.T) {
	f := newFixture(t, 1, "15m")
	ctx := context.Background()
	release := make(chan struct{})
	f.w.block["a"] = release
	running := f.propose(t, f.seq, "a")
	f.approve(t, f.alice, running.ID)
	if err := f.m.Undoable(ctx, running.ID); err == nil || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("undo of a running job: %v", err)
	}
	close(release)
	f.n.lastReport(t)
	if err := f.m.Undoable(ctx, running.ID); err != nil {
		t.Fatalf("undo of a done job: %v", err)
	}
	f.w.set(func() { f.w.fail["x"] = errors.New("boom") })
	failed := f.propose(t, f.seq, "x")
	f.approve(t, f.alice, failed.ID)
	f.n.lastReport(t)
	if err := f.m.Undoable(ctx, failed.ID); err == nil || !strings.Contains(err.Error(), "can still be resumed") {
		t.Fatalf("undo of a failed (resumable) job: %v", err)
	}
	if _, err := f.m.Cancel(ctx, f.alice, failed.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Undoable(ctx, failed.ID); err != nil {
		t.Fatalf("undo after giving the job up: %v", err)
	}
}

// Undo asks whether the job's operation restarts Synapse; of a job the store does not know,
// it cannot tell.
func TestRestartsSynapse(t *testing.T) {
	f := newFixture(t, 1, "15m")
	ctx := context.Background()
	cached := f.w.op("test.cached", Sequential)
	cached.RestartsSynapse = true
	f.m.Register(cached)
	for _, c := range []struct {
		job             string
		restarts, known bool
	}{{f.propose(t, f.seq, "a").ID, false, true}, {f.propose(t, cached, "a").ID, true, true}, {"elsewhere", false, false}} {
		if restarts, known, err := f.m.RestartsSynapse(ctx, c.job); err != nil || restarts != c.restarts || known != c.known {
			t.Errorf("RestartsSynapse(%s) = %v, %v, %v; want %v, %v", c.job, restarts, known, err, c.restarts, c.known)
		}
	}
}

func TestDeadProcessIsNotAlive(t *testing.T) {
	f := newFixture(t, 1, "15m")
	ctx := context.Background()
	job := f.propose(t, f.seq, "a", "b")
	if ok, _ := f.st.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobRunning); !ok {
		t.Fatal("set running")
	}
	_ = f.st.SetStep(ctx, job.ID, 0, stepDone, "")
	// A fresh heartbeat with this process's PID but another boot ID: an earlier medic
	// that was PID 1 too (a container restarted quickly). It is dead.
	beat := func(boot string, pid int) {
		_ = f.st.Set(ctx, heartbeatKey(job.ID), fmt.Sprintf("%s %d %d", boot, pid, time.Now().UnixMilli()))
	}
	beat("earlier-boot", os.Getpid())
	if f.m.alive(ctx, job.ID) {
		t.Fatal("a heartbeat of an earlier process with our PID counts as alive")
	}
	// Another live process (our parent) with a fresh heartbeat is alive.
	beat("other-boot", os.Getppid())
	if !f.m.alive(ctx, job.ID) {
		t.Fatal("a live process's fresh heartbeat counts as dead")
	}
	beat("earlier-boot", os.Getpid())
	notified := newNotifier()
	if err := f.m.ReportInterrupted(ctx, func(*store.Job) Notifier { return notified }); err != nil {
		t.Fatal(err)
	}
	if f.state(t, job.ID) != store.JobInterrupted || len(notified.said) != 1 || !strings.Contains(notified.said[0], "1 of 2 steps were done") {
		t.Fatalf("state %s, said %q", f.state(t, job.ID), notified.said)
	}
	if _, err := f.m.Resume(ctx, f.bob, job.ID); err != nil {
		t.Fatal(err)
	}
	if j, _ := f.n.lastReport(t); j.State != store.JobDone || !same(f.w.steps(), []string{"b"}) {
		t.Fatalf("resumed: %s, ran %v", j.State, f.w.steps())
	}
}

// TestResumeAfterKillInsideFirstStep: medic died inside the first step (recorded as started,
// never finished), whose work had landed, so the world no longer matches the plan. That is the
// job's own work, not drift: resume runs the step again (as a retry), and the job ends done.
// Found by the chaos test: a `!recover` killed while its joins were in flight was superseded
// on resume with "nothing ran".
func TestResumeAfterKillInsideFirstStep(t *testing.T) {
	f := newFixture(t, 1, "15m")
	ctx := context.Background()
	job := f.propose(t, f.seq, "a", "b")
	if ok, _ := f.st.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobRunning); !ok {
		t.Fatal("set running")
	}
	_ = f.st.SetStep(ctx, job.ID, 0, stepStarted, "")
	_ = f.st.Set(ctx, heartbeatKey(job.ID), fmt.Sprintf("earlier-boot %d %d", os.Getpid(), time.Now().UnixMilli()))
	f.w.set(func() { f.w.version = 2 }) // what step a did before the kill
	if _, err := f.m.Resume(ctx, f.bob, job.ID); err != nil {
		t.Fatal(err)
	}
	if j, _ := f.n.lastReport(t); j.State != store.JobDone || !same(f.w.steps(), []string{"a", "b"}) || !f.w.retries["a"] {
		t.Fatalf("resumed: %s, ran %v, retries %v", f.state(t, job.ID), f.w.steps(), f.w.retries)
	}
}

func TestUnknownJob(t *testing.T) {
	f := newFixture(t, 1, "15m")
	for _, call := range []func(context.Context, Requester, string) (string, error){f.m.Approve, f.m.Cancel, f.m.Resume} {
		if _, err := call(context.Background(), f.alice, "nosuch"); err == nil || !strings.Contains(err.Error(), "there is no job `nosuch`") {
			t.Errorf("unknown job: %v", err)
		}
	}
}

// runLog is an Observer that records every run's end.
type runLog struct {
	mu   sync.Mutex
	runs []string
}

func (l *runLog) RunEnded(kind, state string, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs = append(l.runs, fmt.Sprintf("%s %s %v", kind, state, took >= 0))
}

// TestObserverHearsEachRun: the observer hears of every run's end with its kind and state,
// before the report (a failed run, then its resumed run).
func TestObserverHearsEachRun(t *testing.T) {
	f := newFixture(t, 1, "15m")
	obs := &runLog{}
	f.m.Observer = obs
	f.w.fail["b"] = errors.New("boom")
	job := f.propose(t, f.seq, "a", "b")
	f.approve(t, f.alice, job.ID)
	f.n.lastReport(t)
	f.w.set(func() { delete(f.w.fail, "b") })
	if _, err := f.m.Resume(context.Background(), f.alice, job.ID); err != nil {
		t.Fatal(err)
	}
	f.n.lastReport(t)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !same(obs.runs, []string{"test.seq failed true", "test.seq done true"}) {
		t.Fatalf("observed runs: %q", obs.runs)
	}
}

// An operation's Summary closes its report with what the run's steps came to.
func TestSummaryEndsTheReport(t *testing.T) {
	f := newFixture(t, 1, "15m")
	var asked []string
	f.par.Summary = func(jobID string) string {
		asked = append(asked, jobID)
		return "Rejoined 3 user(s)."
	}
	job := f.propose(t, f.par, "a", "b", "c")
	f.approve(t, f.alice, job.ID)
	_, report := f.n.lastReport(t)
	if !strings.HasSuffix(report, "\n\nRejoined 3 user(s).") || len(asked) != 1 || asked[0] != job.ID {
		t.Fatalf("report: %q (summary asked for %v)", report, asked)
	}
}
