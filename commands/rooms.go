package commands

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
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
