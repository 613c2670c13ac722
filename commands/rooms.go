package commands

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/config"
)

// OutsidersOf keeps the members of a room who must not read details there (config.Outsider).
func OutsidersOf(cfg *config.Config, members map[id.UserID]event.Membership) map[id.UserID]event.Membership {
	out := map[id.UserID]event.Membership{}
	for u, m := range members {
		if cfg.Outsider(u) {
			out[u] = m
		}
	}
	return out
}

// UserList renders user IDs as code, comma-separated.
func UserList(users []id.UserID) string {
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = "`" + u.String() + "`"
	}
	return strings.Join(names, ", ")
}

// Withheld is why medic posts only summaries in a room, or "" when it may post everything
// there: the room's outsiders, or that the transport could not tell who is in it.
func Withheld(outsiders map[id.UserID]event.Membership, err error) string {
	users := slices.Sorted(maps.Keys(outsiders))
	switch {
	case err != nil:
		return fmt.Sprintf("I cannot tell who reads this room (%v)", err)
	case len(users) == 0:
		return ""
	case len(users) == 1:
		return UserList(users) + " is in this room and is no admin"
	default:
		return UserList(users) + " are in this room and are no admins"
	}
}

// SeeElsewhere is where an admin reads a withheld answer.
const SeeElsewhere = "Ask in a room with only admins, or on medic's host with `medic exec`."

// Summary is what medic posts instead of md where details are withheld (why is set): md's
// first line, why, and see (where to read the rest). md of one line goes out as it is.
func Summary(md, why, see string) string {
	first, rest, _ := strings.Cut(strings.TrimSpace(md), "\n")
	if why == "" || strings.TrimSpace(rest) == "" {
		return md
	}
	return fmt.Sprintf("%s\n\nDetails withheld: %s. %s", first, why, see)
}

// withheld is why details of the answers to ce are withheld ("" if they are not).
func withheld(ce *Event) string {
	return Withheld(ce.Meta.Transport.Outsiders(ce.Ctx, ce.RoomID))
}

func roomsCommand() *Handler {
	return &Handler{
		Name:        "rooms",
		Description: text("List the admin rooms: configured or adopted (by whom, when), and who in them is no admin"),
		Parameters:  []*cmdschema.Parameter{},
		Func:        listRooms,
		Subcommands: []*Handler{{
			Name:        "leave",
			Description: text("Leave an adopted admin room and forget it (a configured one is removed from the config instead)"),
			Parameters:  roomParam("The admin room's ID"),
			TailParam:   "room",
			Func:        leaveRoom,
		}},
	}
}

func listRooms(ce *Event) {
	cfg := ce.Meta.Config
	adopted, err := ce.Meta.Store.AdoptedRooms(ce.Ctx)
	if err != nil {
		Fail(ce, "Could not list the adopted rooms: %v", err)
		return
	}
	type adminRoom struct {
		id  id.RoomID
		how string
	}
	var rooms []adminRoom
	for _, r := range cfg.Rooms.Admin {
		rooms = append(rooms, adminRoom{r, "configured (`rooms.admin`)"})
	}
	for _, r := range adopted {
		if !slices.Contains(cfg.Rooms.Admin, r.RoomID) {
			rooms = append(rooms, adminRoom{r.RoomID, fmt.Sprintf("adopted: invited by `%s`, %s UTC", r.InvitedBy, r.AddedAt.UTC().Format("2006-01-02 15:04"))})
		}
	}
	if len(rooms) == 0 {
		reply(ce, "There are no admin rooms: list one in `rooms.admin`, or invite medic into one while `rooms.adopt_admin_invites` is on.")
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d admin room(s):\n\n| room | how | no admins in it |\n|---|---|---|\n", len(rooms))
	for _, r := range rooms {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", r.id, r.how, describeOutsiders(ce.Meta.Transport.Outsiders(ce.Ctx, r.id)))
	}
	if len(cfg.Rooms.AllowNonAdmins) > 0 {
		fmt.Fprintf(&b, "\nAllowed to read everything (`rooms.allow_non_admins`): %s.", UserList(cfg.Rooms.AllowNonAdmins))
	}
	fmt.Fprintf(&b, "\nWhere someone is no admin, medic posts only summaries. `%srooms leave <room>` leaves an adopted room and forgets it.", prefix(ce))
	reply(ce, b.String())
}

func describeOutsiders(outsiders map[id.UserID]event.Membership, err error) string {
	if err != nil {
		return "? (" + err.Error() + ")"
	}
	if len(outsiders) == 0 {
		return "—"
	}
	var parts []string
	for _, u := range slices.Sorted(maps.Keys(outsiders)) {
		how := "joined"
		if outsiders[u] == event.MembershipInvite {
			how = "invited"
		}
		parts = append(parts, fmt.Sprintf("`%s` (%s)", u, how))
	}
	return strings.Join(parts, ", ")
}

// leaveRoom leaves an adopted admin room and forgets it. It changes only medic's own state
// (which rooms it answers and reports in), so it is a plain command, not a job; an admin's
// invite adopts the room again.
func leaveRoom(ce *Event) {
	if len(ce.Args) != 1 {
		Fail(ce, "Usage: `%srooms leave <room>`", prefix(ce))
		return
	}
	room := id.RoomID(ce.Args[0])
	if slices.Contains(ce.Meta.Config.Rooms.Admin, room) {
		Fail(ce, "`%s` is configured in `rooms.admin`: remove it from medic's config and restart medic to stop using it.", room)
		return
	}
	adopted, err := ce.Meta.Store.AdminRooms(ce.Ctx)
	if err != nil {
		Fail(ce, "Could not list the adopted rooms: %v", err)
		return
	} else if !slices.Contains(adopted, room) {
		Fail(ce, "`%s` is not an admin room (`%srooms` lists them).", room, prefix(ce))
		return
	}
	here := room == ce.RoomID
	if here { // said before leaving: afterwards medic can no longer post here
		reply(ce, "Leaving this room and forgetting it as an admin room.")
	}
	// The bot's own account (in the terminal too: the admin API's client logs in as it).
	if _, err = ce.Meta.Admin.Client.Client.LeaveRoom(ce.Ctx, room); err != nil {
		Fail(ce, "Could not leave `%s`: %v. It stays an admin room.", room, err)
		return
	}
	if _, err = ce.Meta.Store.RemoveAdminRoom(ce.Ctx, room); err != nil {
		Fail(ce, "Left `%s`, but could not forget it: %v", room, err)
		return
	}
	if !here {
		reply(ce, "Left `%s` and forgot it: it is no longer an admin room (an admin's invite adopts it again while `rooms.adopt_admin_invites` is on).", room)
	}
}
