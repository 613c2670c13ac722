package commands

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapselog"
)

// resolveRoom turns a room ID or alias into a room ID (and, for an alias, the servers its
// directory names), answering the admin on failure.
func resolveRoom(ce *Event, room string) (string, []string, bool) {
	switch {
	case strings.HasPrefix(room, "!"):
		return room, nil, true
	case strings.HasPrefix(room, "#"):
		resp, err := ce.Meta.Admin.Client.Client.ResolveAlias(ce.Ctx, id.RoomAlias(room))
		if err != nil {
			Fail(ce, "Could not resolve %s: %s", mdtext.Code(room), mdtext.Text(err.Error()))
			return "", nil, false
		}
		return resp.RoomID.String(), resp.Servers, true
	}
	Fail(ce, "`%s` is not a room ID (`!…`) or alias (`#…`).", room)
	return "", nil, false
}

func rejectedCommand() *Handler {
	return &Handler{
		Name:        "rejected",
		Description: text("Rooms with rejected events, and the rejection chains in a room"),
		Parameters: []*cmdschema.Parameter{
			{Key: "room", Schema: cmdschema.PrimitiveTypeString.Schema(), Optional: true, Description: text("A room ID or alias to show in detail")},
			{Key: "since", Schema: cmdschema.PrimitiveTypeString.Schema(), Optional: true, Description: text("How far back, e.g. 24h or 7d (default 7d)")},
		},
		Func: rejected,
	}
}

func rejected(ce *Event) {
	if !readDB(ce) {
		return
	}
	args := ce.Args
	room := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "--") {
		var ok bool
		if room, _, ok = resolveRoom(ce, args[0]); !ok {
			return
		}
		args = args[1:]
	}
	since := 7 * 24 * time.Hour
	if len(args) > 0 {
		var err error
		if since, err = parseSince(args); err != nil {
			Fail(ce, "%v. Usage: `%srejected [room] [--since 7d]`", err, prefix(ce))
			return
		}
	}
	groups, err := ce.Meta.DB.RejectedGroups(ce.Ctx, time.Now().Add(-since), room)
	if err != nil {
		FailErr(ce, "Could not count rejected events", err)
		return
	}
	var b strings.Builder
	if len(groups) == 0 {
		where := "any room"
		if room != "" {
			where = mdtext.Code(room)
		}
		reply(ce, "No rejected events in %s in the last %s. ✅", where, humanDuration(since))
		return
	}
	fmt.Fprintf(&b, "Rejected events received in the last %s:\n\n| room | reason | type | count | first | last |\n|---|---|---|---|---|---|\n", humanDuration(since))
	rooms := []string{}
	for _, g := range groups {
		// Room names, event types and IDs come from other servers: as text, never as Markdown.
		name := mdtext.Code(g.RoomID)
		if g.Name != "" {
			name = mdtext.Text(g.Name) + " " + name
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s |\n", name, mdtext.Code(g.Reason), mdtext.Code(g.Type), g.Count,
			g.First.UTC().Format(time.DateTime), g.Last.UTC().Format(time.DateTime))
		if len(rooms) == 0 || rooms[len(rooms)-1] != g.RoomID {
			rooms = append(rooms, g.RoomID)
		}
	}
	// The chains: per room when one is named, else for the rooms listed (at most 5).
	var rep *synapselog.Report
	if sources := diagnose.Sources(ce.Meta.Config.Synapse.Logs); len(sources) > 0 {
		rep, _ = synapselog.ScanSources(ce.Ctx, sources, time.Now().Add(-since))
	}
	for i, r := range rooms {
		if i == 5 {
			fmt.Fprintf(&b, "\n… %d more rooms: `%srejected <room>` shows one.", len(rooms)-5, prefix(ce))
			break
		}
		rr, err := diagnose.RoomChains(ce.Ctx, ce.Meta.DB, r)
		if ue, ok := synapse.Unreachable(err); ok {
			err = ue // one line, not the driver's error per host tried
		}
		if err != nil {
			fmt.Fprintf(&b, "\n%s: could not read its chains: %s\n", mdtext.Code(r), mdtext.Text(err.Error()))
			continue
		}
		rr.AttachLogs(rep)
		writeChains(&b, rr, prefix(ce))
	}
	reply(ce, b.String())
}

func writeChains(b *strings.Builder, rr *diagnose.RoomRejections, pfx string) {
	fmt.Fprintf(b, "\n**%s**: %d rejected event(s) in all.\n", mdtext.Code(rr.RoomID), rr.Total)
	shown := 0
	for _, c := range rr.Chains {
		if c.Descendants == 0 {
			continue
		}
		shown++
		if shown > 5 {
			break
		}
		fmt.Fprintf(b, "* Chain root %s (%s from %s, %s, %s): %d later event(s) rejected because they cite it (%s).",
			mdtext.Code(c.Root.EventID), mdtext.Code(c.Root.Type), mdtext.Code(c.Root.Sender), mdtext.Code(c.Root.Reason),
			c.Root.Received.UTC().Format(time.DateTime), c.Descendants, typeCounts(c.ByType))
		if c.Log != nil {
			fmt.Fprintf(b, " Logs: %d \"found rejected event %s in the state\" line(s), last %s.", c.Log.Count, mdtext.Code(c.Root.EventID), c.Log.Last.UTC().Format(time.DateTime))
		}
		b.WriteString("\n")
	}
	lone := 0
	for _, c := range rr.Chains {
		if c.Descendants == 0 {
			lone++
		}
	}
	if lone > 0 {
		fmt.Fprintf(b, "* %d lone rejected event(s) that nothing cites (often legitimate rejections).\n", lone)
	}
	if shown > 0 {
		fmt.Fprintf(b, "\n%s verifies the roots with the auth rules and proposes a fix (asks first).\n", mdtext.Code(pfx+"unreject "+rr.RoomID))
	}
}

// typeCounts is "2 `m.room.message`, 1 `m.room.member`" (event types as code: they are
// remote text).
func typeCounts(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for t, n := range m {
		parts = append(parts, fmt.Sprintf("%d %s", n, mdtext.Code(t)))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func humanDuration(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func unrejectCommand() *Handler {
	return &Handler{
		Name:        "unreject",
		Description: text("Verify a room's rejected events with the auth rules and un-reject those that pass (asks for approval)"),
		Parameters: []*cmdschema.Parameter{
			{Key: "room", Schema: cmdschema.PrimitiveTypeString.Schema(), Description: text("Room ID or alias, then optionally --root <event id>, --force and --force-schema")},
		},
		TailParam: "room",
		Func:      unreject,
	}
}

const unrejectUsage = "Usage: `%sunreject <room> [--root <event id>] [--force] [--force-schema]`"

func unreject(ce *Event) {
	if !needDB(ce) {
		return
	}
	forceSchema := takeForceSchema(ce)
	if len(ce.Args) == 0 {
		Fail(ce, unrejectUsage, prefix(ce))
		return
	}
	room, _, ok := resolveRoom(ce, ce.Args[0])
	if !ok {
		return
	}
	args := recovery.UnrejectArgs{Room: room}
	args.ForceSchema = forceSchema
	rest := ce.Args[1:]
	for i := 0; i < len(rest); i++ {
		switch a := rest[i]; {
		case a == "--root" && i+1 < len(rest):
			i++
			args.Root = rest[i]
		case strings.HasPrefix(a, "--root="):
			args.Root = strings.TrimPrefix(a, "--root=")
		case a == "--force":
			args.Force = true
		default:
			Fail(ce, "Unexpected argument `%s`. "+unrejectUsage, a, prefix(ce))
			return
		}
	}
	if r := args.Root; r != "" && !strings.HasPrefix(r, "$") {
		Fail(ce, "`%s` is not an event ID (`$…`).", r)
		return
	}
	if args.Force && args.Root == "" {
		Fail(ce, "`--force` needs `--root <event id>`: name the one event to accept despite the auth rules.")
		return
	}
	propose(ce, ce.Meta.Ops.Unreject.With(args))
}
