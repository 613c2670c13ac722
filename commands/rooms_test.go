package commands

import (
	"errors"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/config"
)

// TestWithheldSummary: where outsiders read along (or nobody can tell who does), a message of
// several lines is cut to its first line with why and where to read the rest; elsewhere, and
// for one line, it goes out whole.
func TestWithheldSummary(t *testing.T) {
	cfg := &config.Config{Bot: config.Bot{UserID: "@medic:x"}, Admins: []id.UserID{"@admin:x"},
		Rooms: config.Rooms{AllowNonAdmins: []id.UserID{"@support:x"}}}
	members := map[id.UserID]event.Membership{"@medic:x": "join", "@admin:x": "join", "@support:x": "join", "@eve:x": "invite", "@bob:x": "join"}
	out := OutsidersOf(cfg, members)
	if len(out) != 2 || out["@eve:x"] != event.MembershipInvite || out["@bob:x"] != event.MembershipJoin {
		t.Fatalf("outsiders: %v", out)
	}
	plan := "**Plan abc: Reset federation connection to evil.example**\n\nWhat will change (1):\n\n* `evil.example`: retry now"
	for _, c := range []struct {
		md, why, want string
	}{
		{plan, Withheld(nil, nil), plan},
		{plan, Withheld(map[id.UserID]event.Membership{}, nil), plan},
		{"Pong!", Withheld(out, nil), "Pong!"},
		{plan, Withheld(out, nil), "**Plan abc: Reset federation connection to evil.example**\n\nDetails withheld: `@bob:x`, `@eve:x` are in this room and are no admins. see"},
		{plan, Withheld(map[id.UserID]event.Membership{"@eve:x": "join"}, nil), "**Plan abc: Reset federation connection to evil.example**\n\nDetails withheld: `@eve:x` is in this room and is no admin. see"},
		{plan, Withheld(nil, errors.New("not in it")), "**Plan abc: Reset federation connection to evil.example**\n\nDetails withheld: I cannot tell who reads this room (not in it). see"},
	} {
		if got := Summary(c.md, c.why, "see"); got != c.want {
			t.Errorf("Summary(%q, %q):\n got %q\nwant %q", c.md, c.why, got, c.want)
		}
	}
}
