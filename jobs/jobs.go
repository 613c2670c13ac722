// Package jobs is the spine every change medic makes goes through: a dry-run plan with a
// fingerprint, approval in chat (reactions or !approve) or on the terminal, a run off the
// sync loop with one progress message edited in place, a report, and an audit trail. Jobs and
// their steps are persisted, so a job interrupted by a restart is reported and resumable,
// never silently half-done.
package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/commands"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
)

// Args are an operation's parameters, persisted with the job so it can be re-planned and
// resumed after a restart.
type Args map[string]string

// Plan is what an operation would do, computed without changing anything.
type Plan struct {
	Title   string   `json:"title"`
	Why     string   `json:"why,omitempty"`
	Changes []string `json:"changes"`
	Risks   []string `json:"risks,omitempty"`
	// Steps are the units of work, run in order; a resumed job skips finished ones.
	Steps []string `json:"steps"`
	// Basis is what the plan rests on beyond its steps (e.g. the rows it would change, with
	// their values). Together with Title and Steps it makes the fingerprint; Changes do not,
	// because they may describe volatile detail (a timer) that does not alter what runs.
	Basis []string `json:"basis,omitempty"`
	// Data is what the steps need to know beyond their own description (operation-specific).
	Data map[string]string `json:"data,omitempty"`
	// Nothing is set when there is nothing to do: no prompt is posted.
	Nothing string `json:"nothing,omitempty"`
}

// Fingerprint identifies what the plan would do, so drift between prompt and approval is
// detected.
func (p *Plan) Fingerprint() string {
	raw, _ := json.Marshal([]any{p.Title, p.Steps, p.Basis, p.Data})
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// Operation is one kind of change medic can make.
type Operation struct {
	Kind string
	// Plan computes the dry-run plan. It must not change anything.
	Plan func(ctx context.Context, args Args) (*Plan, error)
	// Step performs step idx of the plan. A step must be safe to run again if it was cut off
	// before it was recorded as done.
	Step func(ctx context.Context, args Args, plan *Plan, idx int) error
	// Parallel is how many steps may run at once (default 1: in order).
	Parallel int
	// Finish, if set, runs when a run of the job ends (state: done, failed or cancelled), to
	// release what the steps held between them.
	Finish func(ctx context.Context, jobID, state string)
}

type jobIDKey struct{}

type reportKey struct{}

// stepReport collects what steps have to tell beyond done/failed, for the job's report, and
// lets them speak to the requester while they run (e.g. "restart Synapse now").
type stepReport struct {
	mu    sync.Mutex
	notes []string
	say   func(md string)
}

// Note adds a line to the report of the job a step runs in.
func Note(ctx context.Context, format string, args ...any) {
	if r, ok := ctx.Value(reportKey{}).(*stepReport); ok {
		r.mu.Lock()
		r.notes = append(r.notes, fmt.Sprintf(format, args...))
		r.mu.Unlock()
	}
}

// Say posts a message to whoever runs the job (the admin room, or the terminal) right away.
func Say(ctx context.Context, format string, args ...any) {
	if r, ok := ctx.Value(reportKey{}).(*stepReport); ok && r.say != nil {
		r.say(fmt.Sprintf(format, args...))
	}
}

// WithJobID is the context a step of job jobID runs with (for running a step outside the
// manager, e.g. in a benchmark).
func WithJobID(ctx context.Context, jobID string) context.Context {
	return context.WithValue(ctx, jobIDKey{}, jobID)
}

// JobIDFrom returns the ID of the job a step runs in.
func JobIDFrom(ctx context.Context) string {
	s, _ := ctx.Value(jobIDKey{}).(string)
	return s
}

// Requester is who asked, where, and how to reach them.
type Requester struct {
	User   id.UserID
	RoomID id.RoomID
	// Client posts prompts, progress and reports: the bot's Matrix client, or the terminal's.
	Client *mautrix.Client
	// Confirm, when set (terminal), asks for approval right away instead of posting a prompt.
	Confirm func(prompt string) bool
}

// Manager runs jobs.
type Manager struct {
	store *store.Store
	cfg   config.Jobs
	log   zerolog.Logger
	ops   map[string]*Operation

	lock      sync.Mutex
	cancelled map[string]bool
	wg        sync.WaitGroup
	// ProgressInterval is the least time between progress edits.
	ProgressInterval time.Duration
}

func NewManager(st *store.Store, cfg config.Jobs, log zerolog.Logger, ops ...*Operation) *Manager {
	m := &Manager{store: st, cfg: cfg, log: log, ops: map[string]*Operation{}, cancelled: map[string]bool{},
		ProgressInterval: 2 * time.Second}
	for _, op := range ops {
		m.ops[op.Kind] = op
	}
	return m
}

// Wait waits for running jobs (used on shutdown and in tests).
func (m *Manager) Wait() { m.wg.Wait() }

func send(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, md string, extra map[string]any, edit id.EventID) id.EventID {
	content := format.RenderMarkdown(md, true, false)
	content.Body = md // the Markdown source reads well as plain text (tables included)
	content.MsgType = event.MsgNotice
	if edit != "" {
		content.SetEdit(edit)
	}
	var payload any = &content
	if extra != nil {
		payload = &event.Content{Parsed: &content, Raw: extra}
	}
	resp, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, payload)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to send job message")
		return ""
	}
	return resp.EventID
}

func (m *Manager) audit(ctx context.Context, jobID string, actor id.UserID, what string, args ...any) {
	if err := m.store.Audit(ctx, jobID, actor.String(), fmt.Sprintf(what, args...)); err != nil {
		m.log.Err(err).Str("job_id", jobID).Msg("Failed to write audit trail")
	}
}

// Propose plans an operation and asks for approval. It returns the job (nil when there is
// nothing to do) and a message for the requester on failure.
func (m *Manager) Propose(ctx context.Context, req Requester, kind string, args Args) (*store.Job, error) {
	op := m.ops[kind]
	if op == nil {
		return nil, fmt.Errorf("unknown operation %q", kind)
	}
	plan, err := op.Plan(ctx, args)
	if err != nil {
		return nil, err
	}
	if plan.Nothing != "" {
		send(ctx, req.Client, req.RoomID, plan.Nothing, nil, "")
		return nil, nil
	}
	return m.propose(ctx, req, op, args, plan, "")
}

func (m *Manager) propose(ctx context.Context, req Requester, op *Operation, args Args, plan *Plan, preface string) (*store.Job, error) {
	rawArgs, _ := json.Marshal(args)
	rawPlan, _ := json.Marshal(plan)
	now := time.Now()
	job := &store.Job{
		ID: strings.ToLower(random.String(6)), Kind: op.Kind, Args: string(rawArgs), RoomID: req.RoomID.String(),
		RequestedBy: req.User.String(), RequestedAt: now, ExpiresAt: now.Add(m.cfg.Expiry()),
		ApprovalsNeeded: m.cfg.Approvals, State: store.JobAwaiting, Plan: string(rawPlan), Fingerprint: plan.Fingerprint(),
	}
	if err := m.store.InsertJob(ctx, job); err != nil {
		return nil, err
	}
	m.audit(ctx, job.ID, req.User, "requested %s (plan %s)", op.Kind, job.Fingerprint)
	text := preface + renderPlan(job, plan, req.Confirm != nil)
	if req.Confirm != nil {
		if !req.Confirm(text) {
			m.setState(ctx, job, store.JobCancelled)
			m.audit(ctx, job.ID, req.User, "declined on the terminal")
			send(ctx, req.Client, req.RoomID, "Cancelled; nothing was changed.", nil, "")
			return job, nil
		}
		m.audit(ctx, job.ID, req.User, "approved on the terminal")
		m.start(ctx, req, job, op, plan, true)
		return job, nil
	}
	extra := map[string]any{
		commands.ReactionCommandsKey: map[string]any{"✅": "!approve " + job.ID, "❌": "!cancel " + job.ID},
		commands.ReactionMultiUseKey: true,
	}
	job.PromptEvent = send(ctx, req.Client, req.RoomID, text, extra, "").String()
	if err := m.store.UpdateJob(ctx, job); err != nil {
		return nil, err
	}
	for _, key := range []string{"✅", "❌"} {
		if job.PromptEvent != "" {
			_, _ = req.Client.SendReaction(ctx, req.RoomID, id.EventID(job.PromptEvent), key)
		}
	}
	return job, nil
}

func renderPlan(job *store.Job, plan *Plan, terminal bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**Plan %s: %s**\n\n", job.ID, plan.Title)
	if plan.Why != "" {
		fmt.Fprintf(&b, "Why: %s\n\n", plan.Why)
	}
	fmt.Fprintf(&b, "What will change (%d):\n\n", len(plan.Changes))
	for i, c := range plan.Changes {
		if i == 10 {
			fmt.Fprintf(&b, "* … and %d more\n", len(plan.Changes)-10)
			break
		}
		fmt.Fprintf(&b, "* %s\n", c)
	}
	for _, r := range plan.Risks {
		fmt.Fprintf(&b, "\n⚠️ %s\n", r)
	}
	if !terminal {
		need := ""
		if job.ApprovalsNeeded > 1 {
			need = fmt.Sprintf(" (%d different admins must approve)", job.ApprovalsNeeded)
		}
		fmt.Fprintf(&b, "\nReact ✅ to approve%s or ❌ to cancel, or send `!approve %s` / `!cancel %s`. Expires at %s.",
			need, job.ID, job.ID, job.ExpiresAt.UTC().Format("15:04 MST"))
	}
	return b.String()
}

func (m *Manager) setState(ctx context.Context, job *store.Job, state string) {
	job.State = state
	if err := m.store.UpdateJob(ctx, job); err != nil {
		m.log.Err(err).Str("job_id", job.ID).Msg("Failed to save job state")
	}
}

func (m *Manager) load(ctx context.Context, jobID string) (*store.Job, *Operation, *Plan, Args, error) {
	job, err := m.store.GetJob(ctx, strings.ToLower(strings.TrimSpace(jobID)))
	if err != nil {
		return nil, nil, nil, nil, err
	} else if job == nil {
		return nil, nil, nil, nil, fmt.Errorf("there is no job `%s` (`!jobs` lists them)", jobID)
	}
	op := m.ops[job.Kind]
	var plan Plan
	var args Args
	if op == nil || json.Unmarshal([]byte(job.Plan), &plan) != nil || json.Unmarshal([]byte(job.Args), &args) != nil {
		return nil, nil, nil, nil, fmt.Errorf("job `%s` cannot be run by this version of medic", job.ID)
	}
	return job, op, &plan, args, nil
}

// Approve records an admin's approval; when enough distinct admins approved, the plan is
// computed again and, if unchanged, run. It returns the answer for the approver.
func (m *Manager) Approve(ctx context.Context, req Requester, jobID string) (string, error) {
	job, op, plan, args, err := m.load(ctx, jobID)
	if err != nil {
		return "", err
	}
	if job.State != store.JobAwaiting {
		return "", fmt.Errorf("Job `%s` is %s; there is nothing to approve.", job.ID, job.State)
	}
	if time.Now().After(job.ExpiresAt) {
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobExpired); ok {
			m.audit(ctx, job.ID, req.User, "approval after expiry refused")
		}
		return "", fmt.Errorf("Job `%s` expired at %s; nothing was changed. Ask again to get a fresh plan.", job.ID, job.ExpiresAt.UTC().Format("15:04:05 MST"))
	}
	approvers, err := m.store.AddApproval(ctx, job.ID, req.User.String())
	if err != nil {
		return "", fmt.Errorf("could not record the approval: %w", err)
	}
	m.audit(ctx, job.ID, req.User, "approved (%d of %d)", len(approvers), job.ApprovalsNeeded)
	if len(approvers) < job.ApprovalsNeeded {
		return fmt.Sprintf("Approval %d of %d recorded for job `%s` (%s). Waiting for another admin.",
			len(approvers), job.ApprovalsNeeded, job.ID, strings.Join(approvers, ", ")), nil
	}
	// Enough approvals: make sure the world still looks like the plan.
	fresh, err := op.Plan(ctx, args)
	if err != nil {
		return "", fmt.Errorf("Could not re-check the plan of job `%s`, so nothing ran: %v", job.ID, err)
	}
	if fresh.Fingerprint() != job.Fingerprint {
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobSuperseded); !ok {
			return "", fmt.Errorf("Job `%s` is no longer awaiting approval.", job.ID)
		}
		m.audit(ctx, job.ID, req.User, "superseded: plan changed from %s to %s", job.Fingerprint, fresh.Fingerprint())
		if fresh.Nothing != "" {
			return fmt.Sprintf("The situation changed since job `%s` was planned; nothing ran. %s", job.ID, fresh.Nothing), nil
		}
		preface := fmt.Sprintf("The situation changed since job `%s` was planned, so nothing ran.\n\n%s\n\nNew plan:\n\n",
			job.ID, diff(plan.Changes, fresh.Changes))
		requester := req
		requester.User = id.UserID(job.RequestedBy)
		if _, err = m.propose(ctx, requester, op, args, fresh, preface); err != nil {
			return "", fmt.Errorf("could not post the new plan: %w", err)
		}
		return "", nil
	}
	if ok, err := m.store.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobRunning); err != nil || !ok {
		return "", fmt.Errorf("Job `%s` is already running or finished.", job.ID)
	}
	job.State = store.JobRunning
	m.start(ctx, req, job, op, plan, req.Confirm != nil) // the terminal waits for the job
	return "", nil
}

func diff(old, fresh []string) string {
	var b strings.Builder
	inOld := map[string]bool{}
	for _, o := range old {
		inOld[o] = true
	}
	inNew := map[string]bool{}
	for _, n := range fresh {
		inNew[n] = true
		if !inOld[n] {
			fmt.Fprintf(&b, "\n* now: %s", n)
		}
	}
	for _, o := range old {
		if !inNew[o] {
			fmt.Fprintf(&b, "\n* was: %s", o)
		}
	}
	if b.Len() == 0 {
		return "The steps differ."
	}
	return "What differs:" + b.String()
}

// Cancel cancels a job awaiting approval, or stops a running one at its next step.
func (m *Manager) Cancel(ctx context.Context, req Requester, jobID string) (string, error) {
	job, _, _, _, err := m.load(ctx, jobID)
	if err != nil {
		return "", err
	}
	switch job.State {
	case store.JobAwaiting, store.JobInterrupted:
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, job.State, store.JobCancelled); ok {
			m.audit(ctx, job.ID, req.User, "cancelled")
			return fmt.Sprintf("Job `%s` cancelled; nothing more will change.", job.ID), nil
		}
	case store.JobRunning:
		m.lock.Lock()
		m.cancelled[job.ID] = true
		m.lock.Unlock()
		m.audit(ctx, job.ID, req.User, "asked to stop")
		return fmt.Sprintf("Job `%s` will stop after its current step.", job.ID), nil
	}
	return "", fmt.Errorf("Job `%s` is %s; there is nothing to cancel.", job.ID, job.State)
}

// Resume continues an interrupted job from its first unfinished step.
func (m *Manager) Resume(ctx context.Context, req Requester, jobID string) (string, error) {
	job, op, plan, _, err := m.load(ctx, jobID)
	if err != nil {
		return "", err
	}
	ok, err := m.store.SetJobStateIf(ctx, job.ID, store.JobInterrupted, store.JobRunning)
	if err == nil && !ok && job.State == store.JobRunning && !m.alive(ctx, job.ID) {
		// "running" with no heartbeat: its process died (e.g. a killed `medic exec`, which
		// has no restart notice to mark it interrupted). Take it over.
		ok = true
	}
	if err != nil || !ok {
		if job.State == store.JobRunning {
			return "", fmt.Errorf("Job `%s` is running (its heartbeat is fresh), not interrupted.", job.ID)
		}
		return "", fmt.Errorf("Job `%s` is %s, not interrupted.", job.ID, job.State)
	}
	job.State = store.JobRunning
	m.audit(ctx, job.ID, req.User, "resumed")
	// On the terminal the command returns when the job ends (its process exits after).
	m.start(ctx, req, job, op, plan, req.Confirm != nil)
	return "", nil
}

// ReportInterrupted marks jobs that were running when medic stopped as interrupted and tells
// their rooms. Call once at start, before anything runs.
func (m *Manager) ReportInterrupted(ctx context.Context, cli *mautrix.Client) error {
	running, err := m.store.JobsInState(ctx, store.JobRunning)
	if err != nil {
		return err
	}
	for _, job := range running {
		if m.alive(ctx, job.ID) {
			continue // another medic process (e.g. `medic exec`) is running it
		}
		steps, _ := m.store.Steps(ctx, job.ID)
		var plan Plan
		_ = json.Unmarshal([]byte(job.Plan), &plan)
		done := 0
		for _, s := range steps {
			if s.State == stepDone {
				done++
			}
		}
		m.setState(ctx, job, store.JobInterrupted)
		m.audit(ctx, job.ID, "@medic", "interrupted by a restart after %d of %d steps", done, len(plan.Steps))
		send(ctx, cli, id.RoomID(job.RoomID), fmt.Sprintf(
			"⚠️ Job `%s` (%s) was interrupted when medic stopped: %d of %d steps were done. "+
				"Send `!resume %s` to finish it (finished steps are not repeated) or `!cancel %s` to leave it.",
			job.ID, plan.Title, done, len(plan.Steps), job.ID, job.ID), nil, "")
	}
	return nil
}

const (
	stepDone   = "done"
	stepFailed = "failed"
)

func (m *Manager) start(ctx context.Context, req Requester, job *store.Job, op *Operation, plan *Plan, wait bool) {
	if job.State != store.JobRunning {
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, job.State, store.JobRunning); !ok {
			return
		}
		job.State = store.JobRunning
	}
	m.wg.Add(1)
	run := func() {
		defer m.wg.Done()
		m.run(context.WithoutCancel(ctx), req, job, op, plan)
	}
	if wait {
		run()
	} else {
		go run()
	}
}

// A running job's process writes a heartbeat every heartbeatEvery; a "running" job whose
// heartbeat is older than heartbeatStale has lost its process.
const (
	heartbeatEvery = 5 * time.Second
	heartbeatStale = 4 * heartbeatEvery
)

func heartbeatKey(jobID string) string { return "job_heartbeat:" + jobID }

// heartbeat keeps the job's heartbeat fresh until stop is closed.
func (m *Manager) heartbeat(ctx context.Context, jobID string, stop <-chan struct{}) {
	beat := func() {
		_ = m.store.Set(ctx, heartbeatKey(jobID), fmt.Sprintf("%d %d", os.Getpid(), time.Now().UnixMilli()))
	}
	beat()
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			beat()
		}
	}
}

func (m *Manager) alive(ctx context.Context, jobID string) bool {
	v, err := m.store.Get(ctx, heartbeatKey(jobID))
	if err != nil || v == "" {
		return false
	}
	var pid int
	var ms int64
	if _, err = fmt.Sscan(v, &pid, &ms); err != nil {
		return false
	}
	// The store is local to medic's host: a heartbeat of a process that no longer exists is
	// dead at once, without waiting for it to go stale.
	if pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	return time.Since(time.UnixMilli(ms)) < heartbeatStale
}

func (m *Manager) stopRequested(jobID string) bool {
	m.lock.Lock()
	defer m.lock.Unlock()
	return m.cancelled[jobID]
}

func (m *Manager) run(ctx context.Context, req Requester, job *store.Job, op *Operation, plan *Plan) {
	log := m.log.With().Str("job_id", job.ID).Str("kind", job.Kind).Logger()
	ctx = log.WithContext(ctx)
	var args Args
	_ = json.Unmarshal([]byte(job.Args), &args)
	m.audit(ctx, job.ID, "@medic", "started")
	stopBeat := make(chan struct{})
	defer close(stopBeat)
	go m.heartbeat(ctx, job.ID, stopBeat)
	started := time.Now()
	prior, _ := m.store.Steps(ctx, job.ID)
	finished := map[int]bool{}
	for _, s := range prior {
		if s.State == stepDone {
			finished[s.Idx] = true
		}
	}
	total := len(plan.Steps)
	done, failed := len(finished), 0
	var lastErr string
	roomID := id.RoomID(job.RoomID)
	progressExtra := map[string]any{
		commands.ReactionCommandsKey: map[string]any{"⏹": "!cancel " + job.ID},
		commands.ReactionMultiUseKey: true,
	}
	progress := func(final bool) string {
		elapsed := time.Since(started)
		s := fmt.Sprintf("⏳ Job `%s`: %d/%d steps", job.ID, done+failed, total)
		if n := done + failed - len(finished); n > 0 && !final {
			rate := float64(n) / elapsed.Seconds()
			eta := time.Duration(float64(total-done-failed) / rate * float64(time.Second))
			s += fmt.Sprintf(", %.1f/s, about %s left", rate, eta.Round(time.Second))
		}
		if failed > 0 {
			s += fmt.Sprintf(", %d failed (last: %s)", failed, lastErr)
		}
		return s + ". React ⏹ or send `!cancel " + job.ID + "` to stop."
	}
	progressID := send(ctx, req.Client, roomID, progress(false), progressExtra, "")
	job.ProgressEvent = progressID.String()
	_ = m.store.UpdateJob(ctx, job)
	if progressID != "" {
		_, _ = req.Client.SendReaction(ctx, roomID, progressID, "⏹")
	}
	lastEdit := time.Now()
	stopped := false
	var failures []string
	var mu sync.Mutex // guards the counters above while steps run in parallel
	report := &stepReport{say: func(md string) { send(ctx, req.Client, roomID, md, nil, "") }}
	stepCtx := context.WithValue(context.WithValue(ctx, jobIDKey{}, job.ID), reportKey{}, report)
	runStep := func(idx int) {
		err := op.Step(stepCtx, args, plan, idx)
		state, msg := stepDone, ""
		if err != nil {
			state, msg = stepFailed, err.Error()
			log.Warn().Err(err).Int("step", idx).Msg("Job step failed")
		}
		if err := m.store.SetStep(ctx, job.ID, idx, state, msg); err != nil {
			log.Err(err).Msg("Failed to record step")
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			lastErr = msg
			failures = append(failures, fmt.Sprintf("%s: %s", plan.Steps[idx], msg))
		} else {
			done++
		}
		if time.Since(lastEdit) >= m.ProgressInterval {
			send(ctx, req.Client, roomID, progress(false), progressExtra, progressID)
			lastEdit = time.Now()
		}
	}
	workers := max(op.Parallel, 1)
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for idx := range plan.Steps {
		if finished[idx] {
			continue
		}
		sem <- struct{}{}
		if m.stopRequested(job.ID) {
			<-sem
			stopped = true
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			runStep(idx)
		}()
	}
	wg.Wait()
	state := store.JobDone
	switch {
	case stopped:
		state = store.JobCancelled
	case failed > 0:
		state = store.JobFailed
	}
	if op.Finish != nil {
		op.Finish(stepCtx, job.ID, state)
	}
	job.State = state
	job.Result = fmt.Sprintf("%d of %d steps done, %d failed", done, total, failed)
	_ = m.store.UpdateJob(ctx, job)
	m.audit(ctx, job.ID, "@medic", "%s: %s", state, job.Result)
	send(ctx, req.Client, roomID, progress(true), nil, progressID)
	var b strings.Builder
	icon := map[string]string{store.JobDone: "✅", store.JobFailed: "❌", store.JobCancelled: "⏹"}[state]
	fmt.Fprintf(&b, "%s Job `%s` %s: **%s**. %s in %s.", icon, job.ID, state, plan.Title, job.Result,
		time.Since(started).Round(time.Millisecond))
	if stopped {
		b.WriteString(" Stopped on request; the remaining steps were not run.")
	}
	for i, f := range failures {
		if i == 10 {
			fmt.Fprintf(&b, "\n* … and %d more failures (`!job %s` lists the steps)", len(failures)-10, job.ID)
			break
		}
		fmt.Fprintf(&b, "\n* failed: %s", f)
	}
	for _, n := range report.notes {
		fmt.Fprintf(&b, "\n\n%s", n)
	}
	send(ctx, req.Client, roomID, b.String(), nil, "")
}
