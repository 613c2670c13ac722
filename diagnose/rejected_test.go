package diagnose

import (
	"testing"
	"time"

	"github.com/synapse-medic/medic/synapse"
)

// TestChainWalk groups events in depth order: an event citing a rejected one joins its chain,
// one citing none roots a new chain, and what chains cite outside themselves is kept.
func TestChainWalk(t *testing.T) {
	at := func(s int) time.Time { return time.UnixMilli(int64(s) * 1000) }
	ev := func(id, sender string, s int, auth ...string) synapse.RejectedEvent {
		return synapse.RejectedEvent{EventID: id, Type: "m.room.message", Sender: sender, Received: at(s), AuthEvents: auth}
	}
	w := NewChainWalk("!r:a")
	roots := []string{
		w.Add(ev("$pl", "@x:a", 1, "$create", "$member")),  // cites nothing rejected: a root
		w.Add(ev("$m1", "@y:b", 5, "$create", "$pl")),      // joins $pl's chain
		w.Add(ev("$m2", "@y:b", 3, "$m1", "$member2")),     // through $m1
		w.Add(ev("$lone", "@z:c", 2, "$create", "$other")), // another root
		w.Add(ev("$m3", "@x:a", 4, "$unknown", "$lone")),   // the first rejected auth event decides
	}
	want := []string{"$pl", "$pl", "$pl", "$lone", "$lone"}
	for i := range want {
		if roots[i] != want[i] {
			t.Errorf("event %d: root %q, want %q", i, roots[i], want[i])
		}
	}
	if w.RootOf("$m2") != "$pl" || w.RootOf("$create") != "" {
		t.Errorf("RootOf during the walk: %q, %q", w.RootOf("$m2"), w.RootOf("$create"))
	}
	rr := w.Done()
	if rr.Total != 5 || len(rr.Chains) != 2 || rr.Chains[0].Root.EventID != "$pl" {
		t.Fatalf("total %d, %d chains, first %v", rr.Total, len(rr.Chains), rr.Chains)
	}
	pl := rr.Chain("$pl")
	if pl.Descendants != 2 || !pl.Last.Equal(at(5)) || pl.ByType["m.room.message"] != 2 {
		t.Errorf("$pl chain: %d descendants, last %v, types %v", pl.Descendants, pl.Last, pl.ByType)
	}
	for _, c := range []string{"$create", "$member", "$member2"} {
		if !pl.Cites[c] {
			t.Errorf("$pl chain does not cite %s: %v", c, pl.Cites)
		}
	}
	if pl.Cites["$pl"] || pl.Cites["$m1"] {
		t.Errorf("$pl chain cites its own events: %v", pl.Cites)
	}
	if !pl.Servers["a"] || !pl.Servers["b"] || pl.Servers["c"] {
		t.Errorf("$pl chain servers: %v", pl.Servers)
	}
	if lone := rr.Chain("$lone"); lone.Descendants != 1 || !lone.Cites["$unknown"] || lone.Cites["$lone"] {
		t.Errorf("$lone chain: %d descendants, cites %v", lone.Descendants, lone.Cites)
	}
}
