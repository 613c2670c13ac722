package commands

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/synapselog"
)

// TestDeletedNote: the scan names the deleted rooms it left out, with when, at most ten; a
// deleted room that is listed (a local user joined it again after the deletion) is not left
// out; no deletion, no note.
func TestDeletedNote(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	if got := deletedNote(nil, nil); got != "" {
		t.Errorf("no deletion: %q", got)
	}
	deleted := map[string]time.Time{"!b:x": at, "!a:x": at.Add(time.Minute), "!rejoined:x": at}
	listed := []*diagnose.ForgottenRoom{{Room: &synapselog.Room{RoomID: "!rejoined:x"}}}
	got := deletedNote(deleted, listed)
	for _, want := range []string{"Left out: 2 room(s) an admin deleted", "* `!a:x`, deleted 2026-12-02 10:01:00 UTC\n* `!b:x`, deleted 2026-12-02 10:00:00 UTC"} {
		if !strings.Contains(got, want) {
			t.Errorf("note lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "rejoined") {
		t.Errorf("a listed room is named as left out:\n%s", got)
	}
	if got := deletedNote(deleted, append(listed, &diagnose.ForgottenRoom{Room: &synapselog.Room{RoomID: "!a:x"}},
		&diagnose.ForgottenRoom{Room: &synapselog.Room{RoomID: "!b:x"}})); got != "" {
		t.Errorf("every deleted room listed, yet: %q", got)
	}
	many := map[string]time.Time{}
	for i := range 13 {
		many[fmt.Sprintf("!r%02d:x", i)] = at
	}
	got = deletedNote(many, nil)
	if n := strings.Count(got, "\n* `!r"); n != 10 || !strings.Contains(got, "… and 3 more") {
		t.Errorf("13 deleted rooms: %d listed, want 10 and \"… and 3 more\":\n%s", n, got)
	}
}
