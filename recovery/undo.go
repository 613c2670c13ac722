package recovery

import (
	"context"
	"fmt"
	"strings"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/synapse"
)

// KindUndo restores the rows a job changed in Synapse's database, from medic's journal.
const KindUndo = "undo"

// Undo is the operation behind !undo: itself a job, so it is planned and approved like any
// other change.
func Undo(db *synapse.DB) *jobs.Operation {
	return &jobs.Operation{
		Kind: KindUndo,
		Plan: func(ctx context.Context, args jobs.Args) (*jobs.Plan, error) {
			if db == nil {
				return nil, fmt.Errorf("undo needs Synapse's database: set synapse.database in medic's config")
			}
			job := args["job"]
			summary, err := db.JournalSummary(ctx, job)
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
		Step: func(ctx context.Context, args jobs.Args, plan *jobs.Plan, idx int) error {
			_, err := db.Undo(ctx, args["job"], nil)
			return err
		},
	}
}
