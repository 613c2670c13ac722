package commands

import (
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/event/cmdschema"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapse"
)

func stateCommand() *Handler {
	return &Handler{
		Name:        "state",
		Description: text("Compare rooms' state with the other servers in them (state resets, stale memberships) and heal what medic safely can"),
		Parameters:  []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			reply(ce, "Use `%sstate audit <room>` (or `--all`) to compare, `%sstate heal <room>` to fix what medic can.", prefix(ce), prefix(ce))
		},
		Subcommands: []*Handler{{
			Name:        "audit",
			Description: text("Compare a room's (or every room's) current state with the state other servers in it hold; read-only"),
			Parameters: []*cmdschema.Parameter{{Key: "room", Schema: cmdschema.PrimitiveTypeString.Schema(),
				Description: text("Room ID or alias, or --all; then optionally --since 7d (how far back to look for reset memberships)")}},
			TailParam: "room",
			Func:      stateAudit,
		}, {
			Name:        "heal",
			Description: text("Plan healing a room's divergence: rejoin local users the room still lists as joined, and say what an admin should do about the rest (asks for approval)"),
			Parameters: []*cmdschema.Parameter{{Key: "room", Schema: cmdschema.PrimitiveTypeString.Schema(),
				Description: text("Room ID or alias")}},
			TailParam: "room",
			Func:      stateHeal,
		}},
	}
}

const stateAuditUsage = "Usage: `%sstate audit <room>|--all [--since 7d]`"

// stateAuditArgs are !state audit's arguments.
type stateAuditArgs struct {
	room  string
	all   bool
	since time.Duration
}

// parseStateAudit reads `<room>|--all [--since <duration>]` (default 7d).
func parseStateAudit(args []string) (stateAuditArgs, error) {
	out := stateAuditArgs{since: 7 * 24 * time.Hour}
	var rest []string
	for _, a := range args {
		switch {
		case a == "--all":
			out.all = true
		case out.room == "" && !strings.HasPrefix(a, "-") && len(rest) == 0:
			out.room = a
		default:
			rest = append(rest, a)
		}
	}
	switch {
	case out.all && out.room != "":
		return out, fmt.Errorf("name a room or --all, not both")
	case !out.all && out.room == "":
		return out, fmt.Errorf("name a room or --all")
	}
	if len(rest) > 0 {
		d, err := parseSince(rest)
		if err != nil {
			return out, err
		}
		out.since = d
	}
	return out, nil
}

func stateAudit(ce *Event) {
	args, err := parseStateAudit(ce.Args)
	if err != nil {
		Fail(ce, "%s. "+stateAuditUsage, mdtext.Text(err.Error()), prefix(ce))
		return
	}
	if !readDB(ce) {
		return
	}
	cfg := ce.Meta.Config.State
	sa := ce.Meta.StateAuditor(args.since)
	if args.all {
		rep, err := sa.AuditAll(ce.Ctx, cfg.MaxRooms, config.Duration(cfg.Budget), cfg.Workers)
		if err != nil {
			FailErr(ce, "Could not audit the rooms", err)
			return
		}
		reply(ce, RenderStateReport(rep, prefix(ce), args.since))
		return
	}
	room, _, ok := resolveRoom(ce, args.room)
	if !ok {
		return
	}
	a, err := sa.AuditRoom(ce.Ctx, room)
	if err != nil {
		FailErr(ce, "Could not audit "+room, err)
		return
	}
	if a.Err != nil {
		if ue, ok := synapse.Unreachable(a.Err); ok {
			FailErr(ce, "Could not audit "+room, ue)
			return
		}
	}
	var b strings.Builder
	writeRoomAudit(&b, a, prefix(ce), args.since, 20)
	if a.Err != nil {
		Fail(ce, "%s", b.String())
		return
	}
	reply(ce, b.String())
}

func stateHeal(ce *Event) {
	if len(ce.Args) != 1 {
		Fail(ce, "Usage: `%sstate heal <room>`", prefix(ce))
		return
	}
	if !needDB(ce) {
		return
	}
	room, _, ok := resolveRoom(ce, ce.Args[0])
	if !ok {
		return
	}
	propose(ce, ce.Meta.Ops.StateHeal.With(recovery.StateHealArgs{Room: room}))
}

// RenderStateReport renders the audit of many rooms: the diverging rooms in detail, then a
// count of the clean ones and of those not audited.
func RenderStateReport(rep *diagnose.StateReport, pfx string, since time.Duration) string {
	var b strings.Builder
	diverging, failed := rep.Counts()
	fmt.Fprintf(&b, "Audited %d of %d room(s) in %s: %d diverge, %d clean, %d could not be compared.\n",
		len(rep.Rooms), rep.Considered, rep.Took.Round(time.Millisecond), diverging, len(rep.Rooms)-diverging-failed, failed)
	if n := len(rep.Skipped); n > 0 {
		fmt.Fprintf(&b, "\n⏱️ The time budget (`state.budget`) ran out: %d room(s) not audited, e.g. %s.\n", n, mdtext.Code(rep.Skipped[0]))
	}
	shown := 0
	for _, a := range rep.Rooms {
		if !a.Diverges() {
			continue
		}
		if shown == 10 {
			fmt.Fprintf(&b, "\n… and %d more diverging room(s): `%sstate audit <room>` shows one.\n", diverging-10, pfx)
			break
		}
		shown++
		b.WriteString("\n")
		writeRoomAudit(&b, a, pfx, since, 8)
	}
	if failed > 0 {
		b.WriteString("\nNot compared:\n")
		n := 0
		for _, a := range rep.Rooms {
			if a.Err == nil {
				continue
			}
			if n == 5 {
				fmt.Fprintf(&b, "* … and %d more\n", failed-5)
				break
			}
			n++
			fmt.Fprintf(&b, "* %s: %s\n", mdtext.Code(a.RoomID), mdtext.Text(roomAuditErr(a)))
		}
	}
	if diverging == 0 && failed == 0 && len(rep.Skipped) == 0 {
		b.WriteString("\nEvery audited room agrees with the other servers in it. ✅")
	}
	return strings.TrimRight(b.String(), "\n")
}

func roomAuditErr(a *diagnose.RoomAudit) string {
	msg := a.Err.Error()
	if ue, ok := synapse.Unreachable(a.Err); ok {
		msg = ue.Error()
	}
	var tried []string
	for _, s := range a.Asked {
		tried = append(tried, s.Server+": "+s.Err)
	}
	if len(tried) > 0 {
		msg += " (" + strings.Join(tried, "; ") + ")"
	}
	return msg
}

// writeRoomAudit renders one room's audit: the servers asked, each difference by kind with
// the events behind each side, the reset memberships, and the fix.
func writeRoomAudit(b *strings.Builder, a *diagnose.RoomAudit, pfx string, since time.Duration, limit int) {
	if a.Err != nil {
		fmt.Fprintf(b, "**%s**: could not compare: %s", mdtext.Code(a.RoomID), mdtext.Text(roomAuditErr(a)))
		writeResets(b, a, since)
		return
	}
	var asked []string
	for _, s := range a.Asked {
		if s.Err == "" {
			asked = append(asked, fmt.Sprintf("%s (state after %s)", mdtext.Code(s.Server), mdtext.Code(s.At)))
		} else {
			asked = append(asked, fmt.Sprintf("%s (%s)", mdtext.Code(s.Server), mdtext.Text(s.Err)))
		}
	}
	if !a.Diverges() {
		fmt.Fprintf(b, "**%s**: clean ✅ — this server's current state (%d entries) matches %s.", mdtext.Code(a.RoomID), a.Local, strings.Join(asked, ", "))
		if len(a.Unsettled) > 0 {
			fmt.Fprintf(b, " %d entr(ies) differ between the other servers themselves (events still travelling?): not counted.", len(a.Unsettled))
		}
		writeResets(b, a, since)
		return
	}
	fmt.Fprintf(b, "**%s** diverges from the other servers: %d difference(s). Compared with %s.", mdtext.Code(a.RoomID), len(a.Diffs), strings.Join(asked, ", "))
	if a.NotInRoom {
		b.WriteString(" This server holds no current state for the room (no local member is in it here), so only local users' memberships were compared.")
	}
	if a.PartialState {
		b.WriteString(" The room is still being joined with partial state here, so other servers' members were not compared.")
	}
	b.WriteString("\n")
	for i, d := range a.Diffs {
		if i == limit {
			fmt.Fprintf(b, "* … and %d more\n", len(a.Diffs)-limit)
			break
		}
		fmt.Fprintf(b, "* %s %s: here %s; the room %s\n", kindLabel(d.Kind), recovery.StateKeyText(d.Type, d.StateKey), side(d.Here), side(d.Room))
	}
	if len(a.Unsettled) > 0 {
		fmt.Fprintf(b, "* %d more entr(ies) differ between the other servers themselves: not counted.\n", len(a.Unsettled))
	}
	writeResets(b, a, since)
	if users := a.Healable(); len(users) > 0 {
		fmt.Fprintf(b, "\nFix: %s plans rejoining %d local user(s) through Synapse (asks first).", mdtext.Code(pfx+"state heal "+a.RoomID), len(users))
	} else {
		fmt.Fprintf(b, "\nFix: nothing for medic to change; %s lists what a room admin should do.", mdtext.Code(pfx+"state heal "+a.RoomID))
	}
}

func writeResets(b *strings.Builder, a *diagnose.RoomAudit, since time.Duration) {
	if len(a.Resets) == 0 {
		return
	}
	open := a.OpenResets()
	fmt.Fprintf(b, "\nReset pattern in the last %s (`current_state_delta_stream`: a local user's join left the current state with no membership event of theirs): %d, %d still out.\n",
		humanDuration(since), len(a.Resets), len(open))
	for i, r := range a.Resets {
		if i == 5 {
			fmt.Fprintf(b, "* … and %d more\n", len(a.Resets)-5)
			break
		}
		to := "no membership at all"
		if r.EventID != "" {
			to = fmt.Sprintf("older event %s (%s)", mdtext.Code(r.EventID), mdtext.Code(r.Membership))
		}
		now := "still out"
		if r.Now == "join" {
			now = "joined again since"
		}
		fmt.Fprintf(b, "* %s at stream %d: join %s → %s; %s\n", mdtext.Code(r.UserID), r.Stream, mdtext.Code(r.PrevJoin), to, now)
	}
}

func kindLabel(k diagnose.DiffKind) string {
	switch k {
	case diagnose.MemberMissing:
		return "👤 local member missing here:"
	case diagnose.MemberExtra:
		return "👤 local member only joined here:"
	case diagnose.PowerLevels:
		return "🛡️ power levels differ:"
	case diagnose.JoinRules:
		return "🚪 join rules differ:"
	case diagnose.HistoryVisibility:
		return "📜 history visibility differs:"
	case diagnose.ServerACL:
		return "🌐 server ACL differs:"
	case diagnose.OnlyHere:
		return "state only this server has:"
	case diagnose.MissingHere:
		return "state this server lacks:"
	}
	return "state differs:"
}

// side names the event behind one side of a difference, with what it says.
func side(e *synapse.StateEvent) string {
	if e == nil {
		return "has nothing"
	}
	s := mdtext.Code(e.EventID)
	switch {
	case e.Membership != "":
		s += " (" + mdtext.Code(e.Membership) + " by " + mdtext.Code(e.Sender) + ")"
	case e.Value != "":
		s += " (" + mdtext.Code(e.Value) + ")"
	case e.Sender != "":
		s += " (by " + mdtext.Code(e.Sender) + ")"
	}
	return s
}
