package recovery

import (
	"context"
	"fmt"
	"slices"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/synapse/adminapi"
)

// ExtremitiesTrimArgs name the room whose forward extremities to trim.
type ExtremitiesTrimArgs struct {
	Room string `json:"room"`
}

// SynapseExtremitiesWarning is Synapse's own warning on the delete API (docs/admin_api/rooms.md).
const SynapseExtremitiesWarning = "Synapse's documentation: \"WARNING: Please ensure you know what you're doing and have read " +
	"the related issue #1760. Under no situations should this API be executed as an automated maintenance task!\""

// ExtremitiesTrim deletes all but the newest forward extremities of a room through the admin API.
func ExtremitiesTrim(adm *adminapi.Client) *jobs.Operation[ExtremitiesTrimArgs, struct{}] {
	return &jobs.Operation[ExtremitiesTrimArgs, struct{}]{
		Kind: "extremities.trim",
		Plan: func(ctx context.Context, args ExtremitiesTrimArgs) (*jobs.Plan, error) {
			room := args.Room
			extremities, err := adm.ForwardExtremities(ctx, room)
			if err != nil {
				return nil, err
			}
			if len(extremities) <= 1 {
				return &jobs.Plan{Nothing: fmt.Sprintf("%s has %d forward extremities; nothing to trim.", mdtext.Code(room), len(extremities))}, nil
			}
			ids := make([]string, 0, len(extremities))
			for _, e := range extremities {
				ids = append(ids, e.EventID)
			}
			slices.Sort(ids)
			return &jobs.Plan{
				Title: "Trim forward extremities of " + mdtext.Code(room),
				Why:   "Many forward extremities make Synapse resolve state over all of them for every new event, which slows the room and the server (synapse#1760).",
				Changes: []string{fmt.Sprintf("%s: %d forward extremities → the newest only; %d dropped from `event_forward_extremities` (events themselves stay)",
					mdtext.Code(room), len(extremities), len(extremities)-1)},
				Risks: []string{SynapseExtremitiesWarning,
					"Medic runs it only on your approval, for this one room; Synapse updates its caches itself, no restart needed."},
				Steps: []string{"trim " + room},
				Basis: ids,
			}, nil
		},
		Step: func(ctx context.Context, s *jobs.Step[ExtremitiesTrimArgs, struct{}]) error {
			_, err := adm.DeleteForwardExtremities(ctx, s.Args.Room)
			return err
		},
	}
}
