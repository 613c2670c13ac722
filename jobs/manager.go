package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
)

// medicActor is the audit trail's name for medic itself.
const medicActor = id.UserID("@medic")

// Manager proposes, approves, runs, stops and resumes jobs.
type Manager struct {
	store *store.Store
	cfg   config.Jobs
	log   zerolog.Logger
	ops   map[string]operation

	lock    sync.Mutex
	stop    map[string]bool // jobs asked to stop
	running map[string]bool // jobs this process is running
	wg      sync.WaitGroup
	// ProgressInterval is the least time between progress updates.
	ProgressInterval time.Duration
	// Prefix is the command prefix (bot.command_prefix), for the commands texts name.
	Prefix string
	// Schema reads Synapse's schema record (schema_version, applied_schema_deltas), against
	// which operations with a Schema range are checked before they are planned or resumed.
	// nil when medic has no Synapse database: those operations then refuse on their own.
	Schema func(ctx context.Context) (SchemaState, error)
	// Observer, when set (before jobs run), hears of every run's end, e.g. for metrics.
	Observer Observer
}

// Observer hears of job runs ending (each run: a resumed job's second run is another). It is
// called on the run's goroutine and must not block.
type Observer interface {
	// RunEnded tells a run of a job of kind ended in state (done, failed, cancelled) after took.
	RunEnded(kind, state string, took time.Duration)
}

// NewManager returns a manager; Register adds the operations it runs.
func NewManager(st *store.Store, cfg config.Jobs, log zerolog.Logger) *Manager {
	return &Manager{store: st, cfg: cfg, log: log, ops: map[string]operation{},
		stop: map[string]bool{}, running: map[string]bool{}, ProgressInterval: 2 * time.Second, Prefix: "!"}
}

// Register adds operations (every *Operation[A, D]): jobs of their kinds can then be
// proposed, approved and resumed, also by a later process.
func (m *Manager) Register(ops ...operation) {
	for _, op := range ops {
		op.checkSchema()
		m.ops[op.kind()] = op
	}
}

// Kinds lists the registered operations' kinds, sorted.
func (m *Manager) Kinds() []string {
	return slices.Sorted(maps.Keys(m.ops))
}

// Wait waits for running jobs (used on shutdown, by the terminal, and in tests).
func (m *Manager) Wait() { m.wg.Wait() }

func (m *Manager) audit(ctx context.Context, jobID string, actor id.UserID, what string, args ...any) {
	if err := m.store.Audit(ctx, jobID, actor.String(), fmt.Sprintf(what, args...)); err != nil {
		m.log.Err(err).Str("job_id", jobID).Msg("Failed to write audit trail")
	}
}

// Propose plans an operation and asks for approval. It returns the job, or nil when there
// is nothing to do (then that is said instead).
func (m *Manager) Propose(ctx context.Context, req Requester, r Request) (*store.Job, error) {
	if m.ops[r.op.kind()] == nil {
		return nil, fmt.Errorf("operation %s is not registered with the job manager", r.op.kind())
	}
	rawArgs, err := json.Marshal(r.args)
	if err != nil {
		return nil, fmt.Errorf("encode arguments: %w", err)
	}
	plan, err := m.plan(ctx, r.op, rawArgs)
	if err != nil {
		return nil, err
	}
	if plan.Nothing != "" {
		req.Notifier.Say(ctx, plan.Nothing)
		return nil, nil
	}
	return m.propose(ctx, req, r.op.kind(), rawArgs, plan, "")
}

func (m *Manager) propose(ctx context.Context, req Requester, kind string, rawArgs json.RawMessage, plan *Plan, preface string) (*store.Job, error) {
	rawPlan, _ := json.Marshal(plan)
	now := time.Now()
	job := &store.Job{
		ID: strings.ToLower(random.String(6)), Kind: kind, Args: string(rawArgs), RoomID: req.Room.String(),
		RequestedBy: req.User.String(), RequestedAt: now, ExpiresAt: now.Add(m.cfg.Expiry()),
		ApprovalsNeeded: m.cfg.Approvals, State: store.JobAwaiting, Plan: string(rawPlan), Fingerprint: plan.Fingerprint(),
	}
	if err := m.store.InsertJob(ctx, job); err != nil {
		return nil, err
	}
	m.audit(ctx, job.ID, req.User, "requested %s (plan %s)", kind, job.Fingerprint)
	switch req.Notifier.Prompt(ctx, job, preface+plan.Markdown(job.ID)) {
	case AnswerYes:
		// Approve's answer says what happened when it did not start the job: the
		// situation changed so nothing is left to do, or approvals are still missing.
		answer, err := m.Approve(ctx, req, job.ID)
		if err != nil {
			req.Notifier.Say(ctx, sentence(err))
		} else if answer != "" {
			req.Notifier.Say(ctx, answer)
		}
		job, _ = m.store.GetJob(ctx, job.ID)
	case AnswerNo:
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobCancelled); ok {
			job.State = store.JobCancelled
			m.audit(ctx, job.ID, req.User, "declined on the host")
		}
		req.Notifier.Say(ctx, "Cancelled; nothing was changed.")
	}
	return job, nil
}

// sentence turns an error into a reply: capitalised, as chat shows it.
func sentence(err error) string {
	msg := err.Error()
	return strings.ToUpper(msg[:1]) + msg[1:]
}

// load returns a job and its operation and plan.
func (m *Manager) load(ctx context.Context, jobID string) (*store.Job, operation, *Plan, error) {
	job, err := m.store.GetJob(ctx, strings.ToLower(strings.TrimSpace(jobID)))
	if err != nil {
		return nil, nil, nil, err
	} else if job == nil {
		return nil, nil, nil, fmt.Errorf("there is no job `%s` (`%sjobs` lists them)", jobID, m.Prefix)
	}
	op := m.ops[job.Kind]
	var plan Plan
	if op == nil || json.Unmarshal([]byte(job.Plan), &plan) != nil {
		return nil, nil, nil, fmt.Errorf("job `%s` cannot be run by this version of medic", job.ID)
	}
	return job, op, &plan, nil
}

// Approve records an admin's approval; when enough distinct admins approved (or the host's
// operator did), the plan is computed again and, if unchanged, run. It returns the answer
// for the approver.
func (m *Manager) Approve(ctx context.Context, req Requester, jobID string) (string, error) {
	job, op, plan, err := m.load(ctx, jobID)
	if err != nil {
		return "", err
	}
	if job.State != store.JobAwaiting {
		return "", fmt.Errorf("job `%s` is %s; there is nothing to approve", job.ID, job.State)
	}
	if time.Now().After(job.ExpiresAt) {
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobExpired); ok {
			m.audit(ctx, job.ID, req.User, "approval after expiry refused")
		}
		return "", fmt.Errorf("job `%s` expired at %s; nothing was changed. Ask again to get a fresh plan", job.ID, job.ExpiresAt.UTC().Format("15:04:05 MST"))
	}
	if req.Host {
		m.audit(ctx, job.ID, req.User, "approved on the host")
	} else {
		approvers, err := m.store.AddApproval(ctx, job.ID, req.User.String())
		if err != nil {
			return "", fmt.Errorf("could not record the approval: %w", err)
		}
		m.audit(ctx, job.ID, req.User, "approved (%d of %d)", len(approvers), job.ApprovalsNeeded)
		if len(approvers) < job.ApprovalsNeeded {
			return fmt.Sprintf("Approval %d of %d recorded for job `%s` (%s). Waiting for another admin.",
				len(approvers), job.ApprovalsNeeded, job.ID, strings.Join(approvers, ", ")), nil
		}
	}
	// Enough approvals: make sure the world still looks like the plan.
	if drifted, answer, err := m.recheck(ctx, req, job, op, plan, store.JobAwaiting); drifted || err != nil {
		return answer, err
	}
	if ok, err := m.store.SetJobStateIf(ctx, job.ID, store.JobAwaiting, store.JobRunning); err != nil || !ok {
		return "", fmt.Errorf("job `%s` is already running or finished", job.ID)
	}
	job.State = store.JobRunning
	m.start(ctx, req, job, op, plan, nil)
	return "", nil
}

// recheck plans the job again. When the plan changed, the job (in state from) is superseded
// and the fresh plan proposed instead; drifted says so.
func (m *Manager) recheck(ctx context.Context, req Requester, job *store.Job, op operation, plan *Plan, from string) (drifted bool, answer string, err error) {
	return m.recheckWith(ctx, req, job, op, plan, from, json.RawMessage(job.Args))
}

// recheckWith is recheck with the job's arguments as given (a resume may force the schema).
func (m *Manager) recheckWith(ctx context.Context, req Requester, job *store.Job, op operation, plan *Plan, from string, args json.RawMessage) (drifted bool, answer string, err error) {
	fresh, err := m.plan(ctx, op, args)
	if err != nil {
		return false, "", fmt.Errorf("could not re-check the plan of job `%s`, so nothing ran: %w", job.ID, err)
	}
	if fresh.Fingerprint() == job.Fingerprint {
		return false, "", nil
	}
	if ok, _ := m.store.SetJobStateIf(ctx, job.ID, from, store.JobSuperseded); !ok {
		return true, "", fmt.Errorf("job `%s` is no longer %s", job.ID, from)
	}
	m.audit(ctx, job.ID, req.User, "superseded: plan changed from %s to %s", job.Fingerprint, fresh.Fingerprint())
	if fresh.Nothing != "" {
		return true, fmt.Sprintf("The situation changed since job `%s` was planned; nothing ran. %s", job.ID, fresh.Nothing), nil
	}
	preface := fmt.Sprintf("The situation changed since job `%s` was planned, so nothing ran.\n\n%s\n\nNew plan:\n\n",
		job.ID, Diff(plan.Changes, fresh.Changes))
	requester := req
	requester.User = id.UserID(job.RequestedBy)
	if _, err = m.propose(ctx, requester, job.Kind, args, fresh, preface); err != nil {
		return true, "", fmt.Errorf("could not post the new plan: %w", err)
	}
	return true, "", nil
}

// Cancel cancels a job awaiting approval, gives up a failed or interrupted one, or stops a
// running one after its current step.
func (m *Manager) Cancel(ctx context.Context, req Requester, jobID string) (string, error) {
	job, _, _, err := m.load(ctx, jobID)
	if err != nil {
		return "", err
	}
	switch job.State {
	case store.JobAwaiting, store.JobInterrupted, store.JobFailed:
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, job.State, store.JobCancelled); ok {
			m.audit(ctx, job.ID, req.User, "cancelled (was %s)", job.State)
			if job.State == store.JobAwaiting {
				return fmt.Sprintf("Job `%s` cancelled; nothing more will change.", job.ID), nil
			}
			return fmt.Sprintf("Job `%s` cancelled; nothing more will change. What its finished steps changed stays (`%sundo %s` restores Synapse's rows).", job.ID, m.Prefix, job.ID), nil
		}
	case store.JobRunning:
		if !m.alive(ctx, job.ID) {
			if ok, _ := m.store.SetJobStateIf(ctx, job.ID, store.JobRunning, store.JobCancelled); ok {
				m.audit(ctx, job.ID, req.User, "cancelled (its process was gone)")
				return fmt.Sprintf("Job `%s` cancelled (the process running it was gone); nothing more will change.", job.ID), nil
			}
		}
		m.lock.Lock()
		m.stop[job.ID] = true
		m.lock.Unlock()
		m.audit(ctx, job.ID, req.User, "asked to stop")
		return fmt.Sprintf("Job `%s` will stop after its current step.", job.ID), nil
	}
	return "", fmt.Errorf("job `%s` is %s; there is nothing to cancel", job.ID, job.State)
}

// Resume runs a failed or interrupted job again: it re-plans first when no step has
// finished (drift check, as on approval), then runs only the failed and unfinished steps.
func (m *Manager) Resume(ctx context.Context, req Requester, jobID string) (string, error) {
	return m.ResumeWith(ctx, req, jobID, false)
}

// ResumeWith is Resume; forceSchema lets a job whose operation has a schema range resume on
// a schema outside it (`!resume <job> --force-schema`: Synapse was upgraded since the job
// was approved), as if it had been proposed with --force-schema.
func (m *Manager) ResumeWith(ctx context.Context, req Requester, jobID string, forceSchema bool) (string, error) {
	job, op, plan, err := m.load(ctx, jobID)
	if err != nil {
		return "", err
	}
	args := json.RawMessage(job.Args)
	if forceSchema {
		if op.schema() == nil {
			return "", fmt.Errorf("job `%s` (%s) does not write Synapse's tables; %s does not apply to it", job.ID, job.Kind, ForceSchemaFlag)
		}
		if args, err = withSchemaForced(args); err != nil {
			return "", fmt.Errorf("arguments of job `%s`: %w", job.ID, err)
		}
	}
	from := job.State
	switch {
	case from == store.JobInterrupted || from == store.JobFailed:
	case from == store.JobRunning && !m.alive(ctx, job.ID):
		// "running" with no live process: it died (e.g. a killed `medic exec`, which has no
		// restart notice to mark it interrupted). Take it over.
	case from == store.JobRunning:
		return "", fmt.Errorf("job `%s` is running (its process is alive), not failed or interrupted", job.ID)
	default:
		return "", fmt.Errorf("job `%s` is %s; only a failed or interrupted job can be resumed", job.ID, job.State)
	}
	steps, err := m.store.Steps(ctx, job.ID)
	if err != nil {
		return "", err
	}
	// A step that started counts as progress even if it never finished: a medic killed
	// inside it may have left its work done but unrecorded (the chaos test: `!recover`
	// killed while its joins were in flight; Synapse finished them, and the re-plan then
	// took the job's own joins for a changed situation, superseded the job and reported
	// "nothing ran"; an `!unreject` killed between its commit and the record would have
	// skipped Synapse's restart the same way).
	progressed := false
	for _, s := range steps {
		progressed = progressed || s.State == stepDone || s.State == stepStarted
	}
	// Before any step started, the plan can be checked as on approval. After, the plan
	// differs by the job's own work; each step re-checks what it needs (a step is safe to
	// run again by contract).
	if !progressed {
		if drifted, answer, err := m.recheckWith(ctx, req, job, op, plan, from, args); drifted || err != nil {
			return answer, err
		}
	} else if _, err := m.schemaGate(ctx, op, args); err != nil {
		// Not re-planned, but the rest of its steps still write Synapse's tables: Synapse may
		// have been upgraded since the job started.
		return "", fmt.Errorf("job `%s` was not resumed: %w", job.ID, err)
	}
	if ok, err := m.store.SetJobStateIf(ctx, job.ID, from, store.JobRunning); err != nil || !ok {
		return "", fmt.Errorf("job `%s` is no longer %s", job.ID, from)
	}
	job.State = store.JobRunning
	if forceSchema {
		m.audit(ctx, job.ID, req.User, "resumed with %s (was %s)", ForceSchemaFlag, from)
	} else {
		m.audit(ctx, job.ID, req.User, "resumed (was %s)", from)
	}
	m.start(ctx, req, job, op, plan, steps)
	return "", nil
}

// Undoable refuses undoing a job whose run is not over: undoing a running, failed or
// interrupted job and then resuming it would leave holes. Cancel it first.
func (m *Manager) Undoable(ctx context.Context, jobID string) error {
	job, err := m.store.GetJob(ctx, jobID)
	if err != nil {
		return err
	} else if job == nil {
		return nil // not one of this store's jobs (e.g. journaled by another medic): no run to guard
	}
	switch job.State {
	case store.JobRunning:
		return fmt.Errorf("job `%s` is running; stop it with `%scancel %s` first, then undo it", job.ID, m.Prefix, job.ID)
	case store.JobFailed, store.JobInterrupted:
		return fmt.Errorf("job `%s` is %s and can still be resumed; `%scancel %s` gives it up, then it can be undone", job.ID, job.State, m.Prefix, job.ID)
	}
	return nil
}

// RestartsSynapse tells whether the job's operation restarts Synapse after its change
// (Operation.RestartsSynapse), so that undoing the job must restart it too. known is false
// for a job this store does not know (journaled by another medic) or whose kind this version
// does not run: then nobody here can tell.
func (m *Manager) RestartsSynapse(ctx context.Context, jobID string) (restarts, known bool, err error) {
	job, err := m.store.GetJob(ctx, jobID)
	if err != nil || job == nil || m.ops[job.Kind] == nil {
		return false, false, err
	}
	return m.ops[job.Kind].restartsSynapse(), true, nil
}

// ReportInterrupted marks jobs that were running when medic stopped as interrupted and tells
// their requesters. Call once at start, before anything runs.
func (m *Manager) ReportInterrupted(ctx context.Context, notifier func(*store.Job) Notifier) error {
	running, err := m.store.JobsInState(ctx, store.JobRunning)
	if err != nil {
		return err
	}
	for _, job := range running {
		if m.alive(ctx, job.ID) {
			continue // another medic process (e.g. `medic exec`) is running it
		}
		steps, _ := m.store.Steps(ctx, job.ID)
		plan := ParsePlan(job.Plan)
		done := 0
		for _, s := range steps {
			if s.State == stepDone {
				done++
			}
		}
		if ok, _ := m.store.SetJobStateIf(ctx, job.ID, store.JobRunning, store.JobInterrupted); !ok {
			continue
		}
		job.State = store.JobInterrupted
		m.audit(ctx, job.ID, medicActor, "interrupted by a restart after %d of %d steps", done, len(plan.Steps))
		notifier(job).Say(ctx, fmt.Sprintf(
			"⚠️ Job `%s` (%s) was interrupted when medic stopped: %d of %d steps were done. "+
				"Send `%sresume %s` to finish it (finished steps are not repeated) or `%scancel %s` to leave it.",
			job.ID, plan.Title, done, len(plan.Steps), m.Prefix, job.ID, m.Prefix, job.ID))
	}
	return nil
}
