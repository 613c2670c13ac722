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
	Job string `json:"job"`
}

// Undo is the operation behind !undo: itself a job, so it is planned and approved like any
// other change. undoable refuses jobs whose run is not over (jobs.Manager.Undoable).
func Undo(db *synapse.DB, undoable func(ctx context.Context, job string) error) *jobs.Operation[UndoArgs, struct{}] {
	return &jobs.Operation[UndoArgs, struct{}]{
		Kind: "undo",
		Plan: func(ctx context.Context, args UndoArgs) (*jobs.Plan, error) {
			if db == nil {
				return nil, fmt.Errorf("undo needs Synapse's database: set synapse.database in medic's config")
			}
			job := args.Job
			if err := undoable(ctx, job); err != nil {
				return nil, err
			}
			summary, err := journal.Summary(ctx, db, job)
			if err != nil {
				return nil, err
			}
			if len(summary) == 0 {
				return &jobs.Plan{Nothing: fmt.Sprintf("Job `%s` has no changed rows to restore (it changed none, or was already undone).", job)}, nil
			}
			return &jobs.Plan{
				Title:   "Undo job " + job,
				Why:     "Restores every row the job changed, exactly as it was before, in one transaction.",
				Changes: summary,
				Risks: []string{
					"If any of those rows changed since the job, nothing is restored and medic says which.",
					"Synapse caches some of these rows (events and their rejection status among them): restart Synapse after the undo.",
				},
				Steps: []string{"restore rows of " + job},
				Basis: []string{strings.Join(summary, "\n")},
			}, nil
		},
		Step: func(ctx context.Context, s *jobs.Step[UndoArgs, struct{}]) error {
			_, err := journal.Undo(ctx, db, s.Args.Job, nil)
			return err
		},
	}
}
