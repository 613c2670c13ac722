package proc

import (
	"os"
	"testing"
)

func TestGone(t *testing.T) {
	for _, c := range []struct {
		name string
		id   ID
		gone bool
	}{
		{"this process", Self(), false},
		{"an earlier process with our PID (PID 1 in a restarted container)", ID{Boot: "earlier", PID: os.Getpid()}, true},
		{"another live process", ID{Boot: "other", PID: os.Getppid()}, false},
		{"a process that no longer exists", ID{Boot: "other", PID: 1 << 22}, true},
		{"a record without a process", ID{}, true},
	} {
		if got := c.id.Gone(); got != c.gone {
			t.Errorf("%s: Gone() = %v, want %v", c.name, got, c.gone)
		}
	}
	if id, ok := Parse(Self().String()); !ok || id != Self() {
		t.Errorf("Parse(String()) = %v %v", id, ok)
	}
	if _, ok := Parse(""); ok {
		t.Error("an empty record parses")
	}
}
