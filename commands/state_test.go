package commands

import (
	"strings"
	"testing"
	"time"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/synapse"
)

// The rendering of the state audit, without Synapse: what an admin reads for a clean room, a
// diverging one, a report over many rooms with a budget that ran out, and text from other
// servers that tries to be Markdown.
func TestRenderStateAudit(t *testing.T) {
	here := synapse.StateEvent{EventID: "$leave", Type: "m.room.member", StateKey: "@alice:here.test", Membership: "leave", Sender: "@alice:here.test"}
	room := synapse.StateEvent{EventID: "$join", Type: "m.room.member", StateKey: "@alice:here.test", Membership: "join", Sender: "@alice:here.test"}
	evil := synapse.StateEvent{EventID: "$x`**pwn**`", Type: "m.room.topic", StateKey: "", Sender: "@m:evil.test"}
	diverging := &diagnose.RoomAudit{RoomID: "!r:there.test", Local: 7,
		Asked: []diagnose.ServerAnswer{{Server: "there.test", At: "$latest"}, {Server: "down.test", Err: "502 M_UNKNOWN no"}},
		Comparison: &diagnose.Comparison{Diffs: []diagnose.Difference{
			{Kind: diagnose.MemberMissing, Type: "m.room.member", StateKey: "@alice:here.test", Here: &here, Room: &room, Servers: []string{"there.test"}},
			{Kind: diagnose.OnlyHere, Type: "m.room.topic", Here: &evil},
		}},
		Resets: []synapse.ResetMembership{{Stream: 42, RoomID: "!r:there.test", UserID: "@alice:here.test", PrevJoin: "$join", EventID: "$leave", Membership: "leave", Now: "leave"}},
	}
	clean := &diagnose.RoomAudit{RoomID: "!c:there.test", Local: 5, Asked: []diagnose.ServerAnswer{{Server: "there.test", At: "$l"}},
		Comparison: &diagnose.Comparison{Unsettled: []string{"m.room.name\x00"}}}
	failed := &diagnose.RoomAudit{RoomID: "!f:there.test", Asked: []diagnose.ServerAnswer{{Server: "gone.test", Err: "timeout"}}}
	failed.Err = errString("no other server gave the room's state")

	var b strings.Builder
	writeRoomAudit(&b, diverging, "!", 7*24*time.Hour, 20)
	out := b.String()
	for _, want := range []string{
		"**`!r:there.test`** diverges from the other servers: 2 difference(s)",
		"`there.test` (state after `$latest`), `down.test` (502 M_UNKNOWN no)",
		"👤 local member missing here: `m.room.member` `@alice:here.test`: here `$leave` (`leave` by `@alice:here.test`); the room `$join` (`join` by `@alice:here.test`)",
		"state only this server has: `m.room.topic`: here ",
		"the room has nothing",
		"`@alice:here.test` at stream 42: join `$join` → older event `$leave` (`leave`); still out",
		"Fix: `!state heal !r:there.test` plans rejoining 1 local user(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diverging room: missing %q in\n%s", want, out)
		}
	}
	if !strings.Contains(out, "here `` $x`**pwn**` `` (by `@m:evil.test`)") {
		t.Errorf("remote text is not kept inside its code span:\n%s", out)
	}

	b.Reset()
	writeRoomAudit(&b, clean, "!", 7*24*time.Hour, 20)
	if out := b.String(); !strings.Contains(out, "**`!c:there.test`**: clean ✅") || !strings.Contains(out, "1 entr(ies) differ between the other servers themselves") {
		t.Errorf("clean room:\n%s", out)
	}

	rep := &diagnose.StateReport{Rooms: []*diagnose.RoomAudit{diverging, clean, failed}, Considered: 5, Skipped: []string{"!s1:x", "!s2:x"}, Took: 1500 * time.Millisecond}
	out = RenderStateReport(rep, "!", 7*24*time.Hour)
	for _, want := range []string{
		"Audited 3 of 5 room(s) in 1.5s: 1 diverge, 1 clean, 1 could not be compared.",
		"The time budget (`state.budget`) ran out: 2 room(s) not audited",
		"**`!r:there.test`** diverges",
		"* `!f:there.test`: no other server gave the room's state (gone.test: timeout)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report: missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "!c:there.test") || strings.Contains(out, "Every audited room agrees") {
		t.Errorf("report: the clean room is only counted, and not everything agrees:\n%s", out)
	}
	if out := RenderStateReport(&diagnose.StateReport{Rooms: []*diagnose.RoomAudit{clean}, Considered: 1}, "!", time.Hour); !strings.Contains(out, "Every audited room agrees with the other servers in it. ✅") {
		t.Errorf("all clean:\n%s", out)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
