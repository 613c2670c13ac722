package recovery

import (
	"strings"
	"testing"
)

func TestCompareState(t *testing.T) {
	local := map[string]string{"m.room.create\x00": "$c", "m.room.member\x00@a:x": "$a1", "m.room.name\x00": "$n"}
	remote := map[string]string{"m.room.create\x00": "$c", "m.room.member\x00@a:x": "$a2", "m.room.topic\x00": "$t",
		"x.evil\x00` **[click](https://evil)** `": "$e"}
	got := strings.Join(compareState(local, remote), "\n")
	for _, want := range []string{
		"`m.room.member` `@a:x`: here `$a1`, remote `$a2`",
		"`m.room.topic` ` `: missing here (remote has `$t`)",
		"`m.room.name` ` `: only here (`$n`)",
		"`x.evil` `` ` **[click](https://evil)** ` ``: missing here",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if d := compareState(local, local); len(d) != 0 {
		t.Errorf("equal states differ: %v", d)
	}
}
