package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

// Job states.
const (
	JobAwaiting    = "awaiting approval"
	JobRunning     = "running"
	JobDone        = "done"
	JobFailed      = "failed"
	JobCancelled   = "cancelled"
	JobExpired     = "expired"
	JobSuperseded  = "superseded"
	JobInterrupted = "interrupted"
)

// Job is one approval-gated operation as persisted.
type Job struct {
	ID              string
	Kind            string
	Args            string // JSON
	RoomID          string
	RequestedBy     string
	RequestedAt     time.Time
	ExpiresAt       time.Time
	ApprovalsNeeded int
	State           string
	Plan            string // JSON
	Fingerprint     string
	PromptEvent     string
	ProgressEvent   string
	Result          string
}

const jobColumns = `id, kind, args, room_id, requested_by, requested_at, expires_at, approvals_needed,
	state, plan, fingerprint, prompt_event, progress_event, result`

const (
	insertJobQuery   = `INSERT INTO job (` + jobColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
	getJobQuery      = `SELECT ` + jobColumns + ` FROM job WHERE id = $1`
	recentJobsQuery  = `SELECT ` + jobColumns + ` FROM job ORDER BY requested_at DESC LIMIT $1`
	jobsInStateQuery = `SELECT ` + jobColumns + ` FROM job WHERE state = $1 ORDER BY requested_at`
	updateJobQuery   = `UPDATE job SET state = $2, plan = $3, fingerprint = $4, prompt_event = $5,
		progress_event = $6, result = $7 WHERE id = $1`
	// setJobStateIfQuery changes state only from an expected state: the compare-and-set that
	// keeps two approvals (or an approval and a cancel) from both winning.
	setJobStateIfQuery = `UPDATE job SET state = $3 WHERE id = $1 AND state = $2`
	addApprovalQuery   = `INSERT INTO job_approval (job_id, user_id, approved_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`
	getApprovalsQuery  = `SELECT user_id FROM job_approval WHERE job_id = $1 ORDER BY approved_at`
	setStepQuery       = `INSERT INTO job_step (job_id, idx, state, error, finished_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (job_id, idx) DO UPDATE SET state = excluded.state, error = excluded.error, finished_at = excluded.finished_at`
	getStepsQuery     = `SELECT idx, state, error FROM job_step WHERE job_id = $1 ORDER BY idx`
	addJobEventQuery  = `INSERT INTO job_event (job_id, at, actor, what) VALUES ($1, $2, $3, $4)`
	getJobEventsQuery = `SELECT at, actor, what FROM job_event WHERE job_id = $1 ORDER BY at`
	jobCountsQuery    = `SELECT kind, state, count(*) FROM job GROUP BY kind, state ORDER BY kind, state`
)

func scanJob(row dbutil.Scannable) (*Job, error) {
	var j Job
	var req, exp int64
	err := row.Scan(&j.ID, &j.Kind, &j.Args, &j.RoomID, &j.RequestedBy, &req, &exp, &j.ApprovalsNeeded,
		&j.State, &j.Plan, &j.Fingerprint, &j.PromptEvent, &j.ProgressEvent, &j.Result)
	if err != nil {
		return nil, err
	}
	j.RequestedAt, j.ExpiresAt = time.UnixMilli(req), time.UnixMilli(exp)
	return &j, nil
}

// InsertJob stores a new job.
func (s *Store) InsertJob(ctx context.Context, j *Job) error {
	_, err := s.DB.Exec(ctx, insertJobQuery, j.ID, j.Kind, j.Args, j.RoomID, j.RequestedBy, j.RequestedAt.UnixMilli(),
		j.ExpiresAt.UnixMilli(), j.ApprovalsNeeded, j.State, j.Plan, j.Fingerprint, j.PromptEvent, j.ProgressEvent, j.Result)
	if err != nil {
		return fmt.Errorf("insert job %s: %w", j.ID, err)
	}
	return nil
}

// GetJob returns a job, or nil when there is none with that ID.
func (s *Store) GetJob(ctx context.Context, id string) (*Job, error) {
	j, err := scanJob(s.DB.QueryRow(ctx, getJobQuery, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

func (s *Store) queryJobs(ctx context.Context, query string, args ...any) ([]*Job, error) {
	rows, err := s.DB.Query(ctx, query, args...)
	return dbutil.NewRowIterWithError(rows, scanJob, err).AsList()
}

// RecentJobs lists the newest jobs first.
func (s *Store) RecentJobs(ctx context.Context, limit int) ([]*Job, error) {
	return s.queryJobs(ctx, recentJobsQuery, limit)
}

// JobsInState lists jobs in one state, oldest first.
func (s *Store) JobsInState(ctx context.Context, state string) ([]*Job, error) {
	return s.queryJobs(ctx, jobsInStateQuery, state)
}

// JobCount is how many jobs of a kind are in a state.
type JobCount struct {
	Kind, State string
	Count       int
}

// JobCounts counts the jobs by kind and state.
func (s *Store) JobCounts(ctx context.Context) ([]JobCount, error) {
	rows, err := s.DB.Query(ctx, jobCountsQuery)
	return dbutil.NewRowIterWithError(rows, func(r dbutil.Scannable) (JobCount, error) {
		var c JobCount
		return c, r.Scan(&c.Kind, &c.State, &c.Count)
	}, err).AsList()
}

// UpdateJob saves a job's mutable fields.
func (s *Store) UpdateJob(ctx context.Context, j *Job) error {
	_, err := s.DB.Exec(ctx, updateJobQuery, j.ID, j.State, j.Plan, j.Fingerprint, j.PromptEvent, j.ProgressEvent, j.Result)
	if err != nil {
		return fmt.Errorf("update job %s: %w", j.ID, err)
	}
	return nil
}

// SetJobStateIf moves a job from one state to another and reports whether it did.
func (s *Store) SetJobStateIf(ctx context.Context, id, from, to string) (bool, error) {
	res, err := s.DB.Exec(ctx, setJobStateIfQuery, id, from, to)
	if err != nil {
		return false, fmt.Errorf("set job %s state: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// AddApproval records an approval (once per user) and returns the distinct approvers.
func (s *Store) AddApproval(ctx context.Context, jobID, user string) ([]string, error) {
	if _, err := s.DB.Exec(ctx, addApprovalQuery, jobID, user, time.Now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("add approval: %w", err)
	}
	return s.Approvals(ctx, jobID)
}

// Approvals lists the distinct approvers of a job.
func (s *Store) Approvals(ctx context.Context, jobID string) ([]string, error) {
	rows, err := s.DB.Query(ctx, getApprovalsQuery, jobID)
	return dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[string], err).AsList()
}

// Step is the persisted state of one step of a job.
type Step struct {
	Idx   int
	State string
	Error string
}

// SetStep records a step's outcome, or that it started (finished_at is then when it started).
func (s *Store) SetStep(ctx context.Context, jobID string, idx int, state, errMsg string) error {
	if _, err := s.DB.Exec(ctx, setStepQuery, jobID, idx, state, errMsg, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("record step %d of %s: %w", idx, jobID, err)
	}
	return nil
}

// Steps returns the recorded steps of a job.
func (s *Store) Steps(ctx context.Context, jobID string) ([]Step, error) {
	rows, err := s.DB.Query(ctx, getStepsQuery, jobID)
	return dbutil.NewRowIterWithError(rows, func(r dbutil.Scannable) (Step, error) {
		var st Step
		return st, r.Scan(&st.Idx, &st.State, &st.Error)
	}, err).AsList()
}

// AuditEntry is one line of a job's audit trail.
type AuditEntry struct {
	At    time.Time
	Actor string
	What  string
}

// Audit appends to a job's audit trail.
func (s *Store) Audit(ctx context.Context, jobID, actor, what string) error {
	if _, err := s.DB.Exec(ctx, addJobEventQuery, jobID, time.Now().UnixMicro(), actor, what); err != nil {
		return fmt.Errorf("audit %s: %w", jobID, err)
	}
	return nil
}

// AuditTrail returns a job's audit trail in order.
func (s *Store) AuditTrail(ctx context.Context, jobID string) ([]AuditEntry, error) {
	rows, err := s.DB.Query(ctx, getJobEventsQuery, jobID)
	return dbutil.NewRowIterWithError(rows, func(r dbutil.Scannable) (AuditEntry, error) {
		var e AuditEntry
		var at int64
		err := r.Scan(&at, &e.Actor, &e.What)
		e.At = time.UnixMicro(at)
		return e, err
	}, err).AsList()
}
