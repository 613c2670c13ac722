package recovery

import (
	"context"
	"fmt"
	"strings"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
)

// StateHealArgs name the room whose state divergence to heal.
type StateHealArgs struct {
	Room string `json:"room"`
}

// StateHeal heals what medic safely can of a room whose state here diverges from the rest
// of the room's: local users the room lists as joined but this server does not are joined
// again through !recover's rejoin (its plan and its steps, as they are), so Synapse itself
// builds the new membership events and state. The other differences get what an admin
// should do; medic never writes current_state_events.
type StateHeal struct {
	Auditor *diagnose.StateAuditor
	Rejoin  *jobs.Operation[RecoverArgs, RejoinData]
}

// Operation is the job operation: one independent step per user to rejoin (!recover's).
func (h *StateHeal) Operation() *jobs.Operation[StateHealArgs, RejoinData] {
	return &jobs.Operation[StateHealArgs, RejoinData]{
		Kind:  "state.heal",
		Order: h.Rejoin.Order,
		Plan:  h.plan,
		Step: func(ctx context.Context, s *jobs.Step[StateHealArgs, RejoinData]) error {
			return h.Rejoin.Step(ctx, &jobs.Step[RecoverArgs, RejoinData]{Job: s.Job, Idx: s.Idx, Name: s.Name,
				Args: RecoverArgs{Rooms: []string{s.Args.Room}}, Data: s.Data, Retry: s.Retry, Reporter: s.Reporter})
		},
	}
}

func (h *StateHeal) plan(ctx context.Context, args StateHealArgs) (*jobs.Plan, error) {
	a, err := h.Auditor.AuditRoom(ctx, args.Room)
	if err != nil {
		return nil, err
	}
	if a.Err != nil {
		return nil, fmt.Errorf("cannot compare %s with other servers: %w", args.Room, a.Err)
	}
	if !a.Diverges() {
		return &jobs.Plan{Nothing: fmt.Sprintf("%s: this server's state matches %s; nothing to heal. ✅", mdtext.Code(args.Room), serverList(a))}, nil
	}
	var advice []string
	for _, d := range a.Diffs {
		if d.Kind != diagnose.MemberMissing {
			advice = append(advice, "Not changed by medic: "+HealAdvice(d))
		}
	}
	users := a.Healable()
	if len(users) == 0 {
		return &jobs.Plan{Nothing: fmt.Sprintf("%s diverges from %s, but nothing in it is for medic to change:\n\n* %s",
			mdtext.Code(args.Room), serverList(a), strings.Join(advice, "\n* "))}, nil
	}
	// The rejoin's own plan asks the room's servers again and decides who rejoins: the
	// users it lists are the ones the audit found missing (it reads the same state).
	var via []string
	for _, s := range a.Answered() {
		via = append(via, s.Server)
	}
	rp, err := h.Rejoin.Plan(ctx, RecoverArgs{Rooms: []string{args.Room}, Via: via})
	if err != nil {
		return nil, err
	}
	if rp.Nothing != "" {
		return &jobs.Plan{Nothing: rp.Nothing + "\n\n* " + strings.Join(advice, "\n* ")}, nil
	}
	return &jobs.Plan{
		Title: fmt.Sprintf("Rejoin %d local user(s) the rest of %s still lists as joined", len(rp.Steps), mdtext.Code(args.Room)),
		Why: fmt.Sprintf("This server's state of the room diverges from %s: %s are joined there but not here (a state reset or a missed event), so they no longer see the room.",
			serverList(a), listSome(users)),
		Changes: append(rp.Changes, advice...),
		Risks: append(rp.Risks,
			"Each rejoin is a new membership event built by Synapse (no table is written directly): other servers see the users join again."),
		Steps: rp.Steps,
		Basis: rp.Basis,
		Data:  rp.Data,
	}, nil
}

func serverList(a *diagnose.RoomAudit) string {
	var s []string
	for _, ans := range a.Answered() {
		s = append(s, ans.Server)
	}
	return mdtext.Codes(s)
}

// HealAdvice says what an admin should do about a difference medic does not change
// (Markdown: event IDs, types and state keys are remote text).
func HealAdvice(d diagnose.Difference) string {
	what := fmt.Sprintf("%s %s", mdtext.Code(d.Type), mdtext.Code(d.StateKey))
	switch d.Kind {
	case diagnose.MemberMissing:
		return fmt.Sprintf("%s: `!state heal` rejoins the user through Synapse.", what)
	case diagnose.MemberExtra:
		return fmt.Sprintf("%s: joined here, but not for the rest of the room; the user leaves and joins again from their client (or a room admin invites them), so every server agrees.", what)
	case diagnose.PowerLevels:
		return fmt.Sprintf("%s: a room admin re-sends the power levels from Element (Room settings → Roles & Permissions: change one level and save, then change it back), so every server resolves to the same event.", what)
	case diagnose.JoinRules:
		return fmt.Sprintf("%s: a room admin sets the join rule again in Element (Room settings → Security & Privacy → Access).", what)
	case diagnose.HistoryVisibility:
		return fmt.Sprintf("%s: a room admin sets who can read history again in Element (Room settings → Security & Privacy).", what)
	case diagnose.ServerACL:
		return fmt.Sprintf("%s: a room admin re-sends the server ACL (e.g. Element's /devtools → Explore room state → m.room.server_acl → Edit → Send).", what)
	}
	return fmt.Sprintf("%s: a room admin who can send this state re-sends it from their client; Synapse has no API to download a room's state again, and medic does not write Synapse's current state.", what)
}
