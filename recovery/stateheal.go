package recovery

import (
	"context"
	"fmt"
	"slices"
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
		return &jobs.Plan{Nothing: fmt.Sprintf("%s diverges from %s, but nothing in it is for medic to change.%s",
			mdtext.Code(args.Room), serverList(a), bullets(advice))}, nil
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
		return &jobs.Plan{Nothing: rp.Nothing + bullets(advice)}, nil
	}
	risks := append(rp.Risks,
		"Each rejoin is a new membership event built by Synapse (no table is written directly): other servers see the users join again.")
	if !a.NotInRoom && slices.ContainsFunc(a.Diffs, func(d diagnose.Difference) bool {
		return d.Kind == diagnose.JoinRules || d.Kind == diagnose.PowerLevels
	}) {
		// While a local member is in, Synapse joins through its own state, not the room's.
		risks = append(risks, "This server is still in the room, so Synapse authorises the rejoins against its own diverging state: with the join rules or power levels here differing, a rejoin may be refused until a room admin re-sends them (below); then `!state heal` again.")
	}
	return &jobs.Plan{
		Title: fmt.Sprintf("Rejoin %d local user(s) the rest of %s still lists as joined", len(rp.Steps), mdtext.Code(args.Room)),
		Why: fmt.Sprintf("This server's state of the room diverges from %s: %s are joined there but not here (a state reset or a missed event), so they no longer see the room.",
			serverList(a), listSome(users)),
		Changes: append(rp.Changes, advice...),
		Risks:   risks,
		Steps:   rp.Steps,
		Basis:   rp.Basis,
		Data:    rp.Data,
	}, nil
}

// StateKeyText names a state entry: its type, and its state key when there is one (code
// spans: both are remote text).
func StateKeyText(typ, stateKey string) string {
	if stateKey == "" {
		return mdtext.Code(typ)
	}
	return mdtext.Code(typ) + " " + mdtext.Code(stateKey)
}

func bullets(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return "\n\n* " + strings.Join(lines, "\n* ")
}

func serverList(a *diagnose.RoomAudit) string {
	var s []string
	for _, ans := range a.Answered() {
		s = append(s, ans.Server)
	}
	return mdtext.Codes(s)
}

// resend is how a room admin re-sends a state event: with changed content, because Synapse
// (and so Element) does not send an event identical to the current state again.
const resend = "with Element's `/devtools` → Explore room state → the event → Edit: add a field such as `\"resync\": 1` and Send (an identical event is not sent again)"

// HealAdvice says what an admin should do about a difference medic does not change
// (Markdown: event IDs, types and state keys are remote text).
func HealAdvice(d diagnose.Difference) string {
	what := StateKeyText(d.Type, d.StateKey)
	switch d.Kind {
	case diagnose.MemberMissing:
		return fmt.Sprintf("%s: `!state heal` rejoins the user through Synapse.", what)
	case diagnose.MemberExtra:
		return fmt.Sprintf("%s: joined here, but not for the rest of the room; the user leaves and joins again from their client (or a room admin invites them), so every server agrees.", what)
	case diagnose.PowerLevels:
		return fmt.Sprintf("%s: a room admin on a server that has the room's state re-sends the power levels (Element: Room settings → Roles & Permissions, change one level, save, change it back; or %s), so every server resolves to the new event.", what, resend)
	case diagnose.JoinRules:
		return fmt.Sprintf("%s: a room admin on a server that has the room's state re-sends the join rule, %s.", what, resend)
	case diagnose.HistoryVisibility:
		return fmt.Sprintf("%s: a room admin on a server that has the room's state re-sends who can read history, %s.", what, resend)
	case diagnose.ServerACL:
		return fmt.Sprintf("%s: a room admin on a server that has the room's state re-sends the server ACL, %s.", what, resend)
	}
	return fmt.Sprintf("%s: a room admin who can send this state re-sends it, %s. Synapse has no API to download a room's state again, and medic does not write Synapse's current state.", what, resend)
}
