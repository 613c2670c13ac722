package recovery

import (
	"context"
	"fmt"
	"strings"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/journal"
)

// UndoArgs name the job whose changes to undo.
type UndoArgs struct {
	jobs.SchemaForce
	Job string `json:"job"`
}

// UndoGuard is what !undo asks the job manager (jobs.Manager) about the job to undo: whether
// its run is over, and whether its operation restarts Synapse (then so does the undo).
type UndoGuard interface {
	Undoable(ctx context.Context, job string) error
	RestartsSynapse(ctx context.Context, job string) (restarts, known bool, err error)
}

// Undo is the operation behind !undo: itself a job, so it is planned and approved like any
// other change. It restores the rows in one transaction and, when the undone job's operation
// restarts Synapse (un-reject, import: Synapse caches those rows), restarts Synapse after it,
// as the job did.
func Undo(db *synapse.DB, guard UndoGuard, restart *Restarter) *jobs.Operation[UndoArgs, struct{}] {
	return &jobs.Operation[UndoArgs, struct{}]{
		Kind: "undo",
		// It deletes and restores rows of Synapse's tables from the journal.
		Schema: &TestedSchema,
		Plan: func(ctx context.Context, args UndoArgs) (*jobs.Plan, error) {
			if db == nil {
				return nil, fmt.Errorf("undo needs Synapse's database: set synapse.database in medic's config")
			}
			job := args.Job
			if err := guard.Undoable(ctx, job); err != nil {
				return nil, err
			}
			summary, err := journal.Summary(ctx, db, job)
			if err != nil {
				return nil, err
			}
			if len(summary) == 0 {
				return &jobs.Plan{Nothing: fmt.Sprintf("Job `%s` has no changed rows to restore (it changed none, or was already undone).", job)}, nil
			}
			restarts, known, err := guard.RestartsSynapse(ctx, job)
			if err != nil {
				return nil, err
			}
			plan := &jobs.Plan{
				Title:   "Undo job " + job,
				Why:     "Restores every row the job changed, exactly as it was before, in one transaction.",
				Changes: summary,
				Risks:   []string{"If any of those rows changed since the job, nothing is restored and medic says which."},
				Steps:   []string{"restore rows of " + job},
				Basis:   []string{strings.Join(summary, "\n")},
			}
			switch {
			case restarts:
				plan.Risks = append(plan.Risks, "Synapse caches these rows (the job restarted Synapse too): the undo takes effect only after a restart. "+restart.Text())
				plan.Steps = append(plan.Steps, stepRestart)
			case !known:
				plan.Risks = append(plan.Risks, fmt.Sprintf("This medic does not know job `%s` (another medic journaled it): if its repair restarted Synapse (un-reject, import), restart Synapse after the undo.", job))
			}
			return plan, nil
		},
		Step: func(ctx context.Context, s *jobs.Step[UndoArgs, struct{}]) error {
			if s.Name == stepRestart {
				return restart.Restart(ctx, s)
			}
			_, err := journal.Undo(ctx, db, s.Args.Job, nil)
			return err
		},
	}
}
