package commands

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/event/cmdschema"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapselog"
)

// parseSince reads "--since 24h" / "--since=7d" from the arguments (default 24h).
func parseSince(args []string) (time.Duration, error) {
	d := 24 * time.Hour
	for i := 0; i < len(args); i++ {
		a := args[i]
		var v string
		switch {
		case strings.HasPrefix(a, "--since="):
			v = strings.TrimPrefix(a, "--since=")
		case a == "--since" && i+1 < len(args):
			i++
			v = args[i]
		default:
			return 0, fmt.Errorf("unexpected argument %q (only --since <duration> is accepted)", a)
		}
		var err error
		if d, err = parseDuration(v); err != nil {
			return 0, err
		}
	}
	return d, nil
}

// parseDuration accepts Go durations and whole days ("7d").
func parseDuration(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err == nil && days > 0 && fmt.Sprint(days) == n {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration like 24h or 7d", v)
	}
	return d, nil
}

func recoverCommand() *Handler {
	return &Handler{
		Name:        "recover",
		Description: text("Find and bring back rooms the server forgot (e.g. after a database restore)"),
		Parameters:  []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			reply(ce, "Use `%srecover scan [--since 24h]` to find rooms Synapse drops traffic for.", prefix(ce))
		},
		Subcommands: []*Handler{{
			Name:        "scan",
			Description: text("List rooms whose traffic Synapse drops because it forgot them, from its logs"),
			Parameters: []*cmdschema.Parameter{{Key: "since", Schema: cmdschema.PrimitiveTypeString.Schema(), Optional: true,
				Description: text("How far back to read, e.g. 24h or 7d (default 24h)")}},
			Func: recoverScan,
		}, {
			Name:        "room",
			Description: text("Rejoin every local member of one forgotten room (asks for approval)"),
			Parameters: []*cmdschema.Parameter{{Key: "room", Schema: cmdschema.PrimitiveTypeString.Schema(),
				Description: text("Room ID or alias, optionally followed by: via <server> …")}},
			TailParam: "room",
			Func:      recoverRoom,
		}, {
			Name:        "all",
			Description: text("Rejoin local members to every room `!recover scan` finds, as one job (asks for approval)"),
			Parameters: []*cmdschema.Parameter{{Key: "since", Schema: cmdschema.PrimitiveTypeString.Schema(), Optional: true,
				Description: text("How far back to read the logs (default 24h)")}},
			Func: recoverAll,
		}},
	}
}

func recoverScan(ce *Event) {
	since, err := parseSince(ce.Args)
	if err != nil {
		Fail(ce, "%v", err)
		return
	}
	logs := ce.Meta.Config.Synapse.Logs
	if len(logs) == 0 {
		Fail(ce, "No log sources: set `synapse.logs` in medic's config (files, journald or a container's log file).")
		return
	}
	fc, err := ce.Meta.Federation()
	if err != nil {
		Fail(ce, "%v", err)
		return
	}
	noteUntestedSchema(ce)
	rooms, rep, err := diagnose.ScanForgotten(ce.Ctx, diagnose.Sources(logs), time.Now().Add(-since), ce.Meta.DB, fc)
	if err != nil {
		FailErr(ce, "Could not scan the logs", err)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Read %d lines (%.1f MB) from %d log file(s), last %s.\n\n", rep.Lines, float64(rep.Bytes)/1e6, len(rep.Sources), since)
	deleted := deletedNote(rep.Deleted, rooms)
	if len(rooms) == 0 && len(rep.Unresolved) == 0 {
		b.WriteString("No dropped traffic for unknown rooms, and every join the logs show is in Synapse's database. ✅")
		if deleted != "" {
			b.WriteString("\n\n" + deleted)
		}
		reply(ce, b.String())
		return
	}
	if len(rooms) > 0 {
		fmt.Fprintf(&b, "Synapse forgot %d room(s): it dropped their traffic, or the logs show local users joining them and its database lacks the join (a restore):\n\n| room | name | servers seen | first seen | last seen | lines | state |\n|---|---|---|---|---|---|---|\n", len(rooms))
		// Room IDs and names, servers and event IDs come from other servers (through the
		// logs and the rooms' state): as text, never as Markdown.
		for _, r := range rooms {
			servers := mdtext.Codes(synapselog.ServerList(r.Servers))
			if servers == "" {
				servers = "?"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s |\n", mdtext.Code(r.RoomID), mdtext.Text(r.Name), servers,
				r.First.UTC().Format(time.DateTime), r.Last.UTC().Format(time.DateTime), r.Count, r.State())
		}
	}
	if n := len(rep.Unresolved); n > 0 {
		fmt.Fprintf(&b, "\n%d event(s) were dropped for rooms Synapse knows but has no member in (the log names the event, not the room):\n\n", n)
		i := 0
		for _, u := range rep.Unresolved {
			if i == 10 {
				fmt.Fprintf(&b, "* … and %d more\n", n-10)
				break
			}
			fmt.Fprintf(&b, "* %s from %s (%d times)", mdtext.Code(u.EventID), mdtext.Codes(synapselog.ServerList(u.Servers)), u.Count)
			if u.Why != "" {
				fmt.Fprintf(&b, ": not resolved, %s", mdtext.Code(u.Why))
			}
			b.WriteString("\n")
			i++
		}
	}
	if deleted != "" {
		b.WriteString("\n" + deleted)
	}
	reply(ce, b.String())
}

// deletedNote says which rooms the scan left out because an admin deleted them (Synapse
// drops their traffic as it drops a forgotten room's), so an admin who expected one in the
// list sees why it is not; "" when none was left out. A deleted room that a local user
// joined again after the deletion is in rooms, not here.
func deletedNote(deleted map[string]time.Time, rooms []*diagnose.ForgottenRoom) string {
	listed := make(map[string]bool, len(rooms))
	for _, r := range rooms {
		listed[r.RoomID] = true
	}
	var left []string
	for id := range deleted {
		if !listed[id] {
			left = append(left, id)
		}
	}
	if len(left) == 0 {
		return ""
	}
	slices.Sort(left)
	var b strings.Builder
	fmt.Fprintf(&b, "Left out: %d room(s) an admin deleted (Synapse's access log shows the deletion; it drops their traffic by design):\n\n", len(left))
	for i, id := range left {
		if i == 10 {
			fmt.Fprintf(&b, "* … and %d more\n", len(left)-10)
			break
		}
		fmt.Fprintf(&b, "* %s, deleted %s UTC\n", mdtext.Code(id), deleted[id].UTC().Format(time.DateTime))
	}
	return b.String()
}

func recoverRoom(ce *Event) {
	if len(ce.Args) == 0 {
		Fail(ce, "Usage: `%srecover room <room id|alias> [via <server> …]`", prefix(ce))
		return
	}
	room := ce.Args[0]
	var via []string
	if len(ce.Args) > 1 {
		if ce.Args[1] != "via" || len(ce.Args) < 3 {
			Fail(ce, "Usage: `%srecover room <room id|alias> [via <server> …]`", prefix(ce))
			return
		}
		via = ce.Args[2:]
	}
	room, servers, ok := resolveRoom(ce, room)
	if !ok {
		return
	}
	via = append(via, servers...)
	propose(ce, ce.Meta.Ops.Recover.With(recovery.RecoverArgs{Rooms: []string{room}, Via: via}))
}

func recoverAll(ce *Event) {
	since, err := parseSince(ce.Args)
	if err != nil {
		Fail(ce, "%v", err)
		return
	}
	propose(ce, ce.Meta.Ops.Recover.With(recovery.RecoverArgs{All: true, Since: since}))
}
