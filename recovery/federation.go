// Package recovery holds medic's repairs, each a typed job operation (package jobs): what
// the admin asked for (its Args), how to plan it from the diagnoses (package diagnose), and
// how to run its steps. Rendering and transports are not its business.
package recovery

import (
	"context"
	"fmt"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/synapse/adminapi"
)

// FederationResetArgs name the destination to reset, or "all" for every failing one.
type FederationResetArgs struct {
	Server string `json:"server"`
}

// FederationReset clears Synapse's retry backoff through the admin API (which also updates
// Synapse's own caches, so no restart is needed), for one destination or, with "all", for
// every failing one: one step per destination.
func FederationReset(adm *adminapi.Client) *jobs.Operation[FederationResetArgs, struct{}] {
	return &jobs.Operation[FederationResetArgs, struct{}]{
		Kind:  "federation.reset",
		Order: jobs.Parallel(1),
		Plan: func(ctx context.Context, args FederationResetArgs) (*jobs.Plan, error) {
			server := args.Server
			var targets []*adminapi.Destination
			if server == "all" {
				failing, err := diagnose.FailingDestinations(ctx, adm)
				if err != nil {
					return nil, err
				}
				if len(failing) == 0 {
					return &jobs.Plan{Nothing: "Synapse is not backing off from any server; nothing to reset."}, nil
				}
				targets = failing
			} else {
				d, err := adm.Destination(ctx, server)
				if err != nil {
					return nil, err
				}
				if d == nil {
					return &jobs.Plan{Nothing: fmt.Sprintf("Synapse has never talked to %s; there is no connection to reset.", mdtext.Code(server))}, nil
				}
				if !d.Failing() {
					return &jobs.Plan{Nothing: fmt.Sprintf("Synapse is not backing off from %s; nothing to reset.", mdtext.Code(server))}, nil
				}
				targets = []*adminapi.Destination{d}
			}
			plan := &jobs.Plan{
				Title: "Reset federation connection to " + mdtext.Code(server),
				Why:   "Synapse is backing off and will not send to these servers until their retry timers expire.",
				Risks: []string{"A server that is still unreachable puts Synapse back into backoff at the next failed send."},
			}
			if server == "all" {
				plan.Title = fmt.Sprintf("Reset federation connections to %d failing servers", len(targets))
			}
			for _, d := range targets {
				plan.Changes = append(plan.Changes, fmt.Sprintf("%s: %s → retry now", mdtext.Code(d.Destination), diagnose.DescribeRetry(d)))
				plan.Steps = append(plan.Steps, d.Destination)
			}
			return plan, nil
		},
		// Each destination is reset on its own: one that fails does not keep the others in
		// backoff.
		Step: func(ctx context.Context, s *jobs.Step[FederationResetArgs, struct{}]) error {
			// A destination already clear (e.g. the step ran before a crash but was not
			// recorded) counts as reset: ResetConnection treats Synapse's 400 as done.
			return adm.ResetConnection(ctx, s.Name)
		},
	}
}
