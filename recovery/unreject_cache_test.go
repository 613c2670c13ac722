package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"

	"github.com/synapse-medic/medic/authcheck"
	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/synapse"
)

// fakeWorld is Synapse's database as the verdict cache sees it: digests that tests change.
type fakeWorld struct {
	version, rejected string
	events            map[string]string // event ID → digest of its row (absent: Synapse lacks it)
	keys              map[string]string // server → digest of its stored keys (absent: none stored)
	authorising       []string          // join_authorised_via_users_server users
	snapshots         int
}

func (w *fakeWorld) clone() *fakeWorld {
	c := *w
	c.events, c.keys = map[string]string{}, map[string]string{}
	for k, v := range w.events {
		c.events[k] = v
	}
	for k, v := range w.keys {
		c.keys[k] = v
	}
	c.authorising = slices.Clone(w.authorising)
	return &c
}

// fakeSnapshot reads a copy of the world taken when it was opened, as a database snapshot does.
type fakeSnapshot struct{ w *fakeWorld }

func (s fakeSnapshot) RejectedDigest(_ context.Context, room string) (synapse.RejectedDigest, error) {
	return synapse.RejectedDigest{RoomVersion: s.w.version, Count: 2, Digest: room + "/" + s.w.rejected}, nil
}

func (s fakeSnapshot) EventsDigest(_ context.Context, ids []string) (string, error) {
	var parts []string
	for _, e := range ids {
		if d, ok := s.w.events[e]; ok {
			parts = append(parts, e+"="+d)
		}
	}
	return strings.Join(parts, ","), nil
}

func (s fakeSnapshot) ServerKeysDigest(_ context.Context, servers []string) (string, []string, error) {
	var parts, stored []string
	for _, srv := range servers {
		if d, ok := s.w.keys[srv]; ok {
			parts = append(parts, srv+"="+d)
			stored = append(stored, srv)
		}
	}
	return strings.Join(parts, ","), stored, nil
}

func (s fakeSnapshot) AuthorisingUsers(context.Context, string) ([]string, error) {
	return s.w.authorising, nil
}

func (s fakeSnapshot) Close() {}

// cacheFixture is an Unrejecter whose verification is counted and whose database is a fakeWorld.
type cacheFixture struct {
	u        *Unrejecter
	w        *fakeWorld
	now      time.Time
	verified int
	// during runs inside the verification (to change the world while it runs).
	during func()
	fail   error
}

const (
	testRoom  = "!room:a.test"
	testRoot  = "$pl"
	testChild = "$msg"
)

func newCacheFixture(t *testing.T) *cacheFixture {
	t.Helper()
	checker := filepath.Join(t.TempDir(), authcheck.Binary)
	if err := os.WriteFile(checker, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := &cacheFixture{
		w: &fakeWorld{version: "10", rejected: "r1",
			events: map[string]string{"$create": "c1", "$member": "m1"},
			keys:   map[string]string{"b.test": "k1", "a.test": "own1"}},
		now: time.Unix(1_800_000_000, 0),
	}
	f.u = &Unrejecter{ServerName: "a.test", Checker: checker, VerdictTTL: 10 * time.Minute}
	c := &f.u.verdicts
	c.now = func() time.Time { return f.now }
	c.open = func(context.Context) (verdictSource, error) {
		f.w.snapshots++
		return fakeSnapshot{f.w.clone()}, nil
	}
	c.verify = func(_ context.Context, room, root string, force bool) (*Verification, *diagnose.RoomRejections, error) {
		f.verified++
		if f.during != nil {
			f.during()
		}
		if f.fail != nil {
			return nil, nil, f.fail
		}
		rr := &diagnose.RoomRejections{RoomID: room, Total: 2, Chains: []*diagnose.Chain{{Root: synapse.RejectedEvent{EventID: testRoot},
			Descendants: 1, Servers: map[string]bool{"b.test": true}, Cites: map[string]bool{"$create": true, "$member": true}}}}
		return &Verification{RoomID: room, RoomVersion: "10", Roots: []string{testRoot}, Pass: []string{testRoot, testChild},
			Types: map[string]int{"m.room.power_levels": 1, "m.room.message": 1}}, rr, nil
	}
	return f
}

// plan verifies like (*Unrejecter).plan does and reports whether the verification ran.
func (f *cacheFixture) plan(t *testing.T, room, root string, force bool) (ran bool) {
	t.Helper()
	before := f.verified
	v, rr, err := f.u.verifyCached(context.Background(), room, root, force)
	if err != nil {
		if f.fail == nil {
			t.Fatal(err)
		}
		return f.verified > before
	}
	if v == nil || rr == nil || len(v.Pass) != 2 || len(rr.Chains) != 1 || rr.Chains[0].Root.EventID != testRoot {
		t.Fatalf("verifyCached returned %+v, %+v", v, rr)
	}
	return f.verified > before
}

func TestVerdictCacheHitOnSameInputs(t *testing.T) {
	f := newCacheFixture(t)
	if !f.plan(t, testRoom, "", false) {
		t.Fatal("the proposal's plan did not verify")
	}
	f.now = f.now.Add(5 * time.Minute)
	if f.plan(t, testRoom, "", false) {
		t.Fatal("the approval's re-plan verified again although nothing changed")
	}
	// An entry serves one re-plan: it is not held while the job runs.
	if n := len(f.u.verdicts.entries); n != 0 {
		t.Fatalf("%d entries kept after the re-plan", n)
	}
	if !f.plan(t, testRoom, "", false) || f.plan(t, testRoom, "", false) {
		t.Fatal("a new proposal did not verify, or its re-plan did not reuse that")
	}
	if h, m := f.u.VerdictCacheStats(); h != 2 || m != 2 {
		t.Errorf("stats: %d hits, %d misses; want 2, 2", h, m)
	}
	// Other arguments are another verification, and do not evict this one.
	f.plan(t, testRoom, "", false)
	if !f.plan(t, testRoom, testRoot, false) || !f.plan(t, testRoom, testRoot, true) || !f.plan(t, "!other:a.test", "", false) {
		t.Fatal("other arguments reused a verification")
	}
	if f.plan(t, testRoom, "", false) || f.plan(t, testRoom, testRoot, true) || f.plan(t, "!other:a.test", "", false) {
		t.Fatal("a verification was lost to another one's")
	}
}

func TestVerdictCacheMissWhenAnInputChanges(t *testing.T) {
	changes := []struct {
		name   string
		change func(f *cacheFixture)
	}{
		{"rejected events (IDs, rejection rows, JSON, order)", func(f *cacheFixture) { f.w.rejected = "r2" }},
		{"room version", func(f *cacheFixture) { f.w.version = "11" }},
		{"a cited event's JSON or rejection", func(f *cacheFixture) { f.w.events["$member"] = "m2" }},
		{"a cited event arrives", func(f *cacheFixture) { f.w.events["$"+strings.TrimPrefix(testRoom, "!")] = "v12 create" }},
		{"a cited event is gone", func(f *cacheFixture) { delete(f.w.events, "$create") }},
		{"a sender's stored keys", func(f *cacheFixture) { f.w.keys["b.test"] = "k2" }},
		{"own server's stored keys", func(f *cacheFixture) { f.w.keys["a.test"] = "own2" }},
		{"an authorising server's keys", func(f *cacheFixture) {
			f.w.authorising = []string{"@bob:c.test"}
			f.w.keys["c.test"] = "k1"
		}},
		{"Synapse's own key", func(f *cacheFixture) {
			f.u.OwnKey = func() (*federation.SigningKey, error) {
				return &federation.SigningKey{ID: "ed25519:new", Pub: "pub"}, nil
			}
		}},
		{"the checker binary", func(f *cacheFixture) {
			later := f.now.Add(time.Hour)
			if err := os.Chtimes(f.u.Checker, later, later); err != nil {
				panic(err)
			}
		}},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			f := newCacheFixture(t)
			if tc.name == "an authorising server's keys" {
				// The authorising server's keys are an input once it is named.
				f.w.authorising = []string{"@bob:c.test"}
				f.w.keys["c.test"] = "k0"
			}
			f.plan(t, testRoom, "", false)
			tc.change(f)
			if !f.plan(t, testRoom, "", false) {
				t.Fatalf("%s changed, but the re-plan reused the verification", tc.name)
			}
			// The new outcome is kept for the next plan (the superseding plan's approval).
			if f.plan(t, testRoom, "", false) {
				t.Fatal("the new verification was not kept")
			}
		})
	}
	t.Run("unrelated keys", func(t *testing.T) {
		f := newCacheFixture(t)
		f.plan(t, testRoom, "", false)
		f.w.keys["unrelated.test"] = "k9"
		if f.plan(t, testRoom, "", false) {
			t.Fatal("a key of a server the checks never use forced a verification")
		}
	})
}

// A change made while the verification runs (after the snapshot) is caught by the next plan,
// even though the verification may have seen it.
func TestVerdictCacheChangeDuringVerification(t *testing.T) {
	for name, change := range map[string]func(w *fakeWorld){
		"rejected": func(w *fakeWorld) { w.rejected = "r2" },
		"context":  func(w *fakeWorld) { w.events["$create"] = "c2" },
		"keys":     func(w *fakeWorld) { w.keys["b.test"] = "k2" },
	} {
		t.Run(name, func(t *testing.T) {
			f := newCacheFixture(t)
			f.during = func() { change(f.w) }
			f.plan(t, testRoom, "", false)
			f.during = nil
			if !f.plan(t, testRoom, "", false) {
				t.Fatal("a change during the verification went unnoticed")
			}
		})
	}
}

func TestVerdictCacheExpiry(t *testing.T) {
	f := newCacheFixture(t)
	f.plan(t, testRoom, "", false)
	f.now = f.now.Add(f.u.VerdictTTL - time.Second)
	if f.plan(t, testRoom, "", false) {
		t.Fatal("verified again before the entry expired")
	}
	f.plan(t, testRoom, "", false)
	f.now = f.now.Add(f.u.VerdictTTL)
	if !f.plan(t, testRoom, "", false) {
		t.Fatal("reused a verification after VerdictTTL")
	}
	// Without VerdictTTL, entries live for jobs.expire_after's default.
	f = newCacheFixture(t)
	f.u.VerdictTTL = 0
	f.plan(t, testRoom, "", false)
	f.now = f.now.Add(defaultVerdictTTL)
	if !f.plan(t, testRoom, "", false) {
		t.Fatal("reused a verification after the default TTL")
	}
}

func TestVerdictCacheBounded(t *testing.T) {
	f := newCacheFixture(t)
	for i := range verdictCacheSize + 1 {
		f.plan(t, fmt.Sprintf("!r%d:a.test", i), "", false)
	}
	if n := len(f.u.verdicts.entries); n != verdictCacheSize {
		t.Fatalf("%d entries kept, want %d", n, verdictCacheSize)
	}
	if !f.plan(t, "!r0:a.test", "", false) {
		t.Fatal("the oldest entry was not evicted")
	}
	if f.plan(t, fmt.Sprintf("!r%d:a.test", verdictCacheSize), "", false) {
		t.Fatal("the newest entry was evicted")
	}

	// Bounded by events too: two 100k-event rooms fit, a third evicts the oldest; a room
	// bigger than the bound alone is still kept.
	f = newCacheFixture(t)
	verify := f.u.verdicts.verify
	size := verdictCacheEvents / 2
	f.u.verdicts.verify = func(ctx context.Context, room, root string, force bool) (*Verification, *diagnose.RoomRejections, error) {
		v, rr, err := verify(ctx, room, root, force)
		if rr != nil {
			rr.Total = size
		}
		return v, rr, err
	}
	for _, room := range []string{"!big1:a.test", "!big2:a.test", "!big3:a.test"} {
		f.plan(t, room, "", false)
	}
	if !f.plan(t, "!big1:a.test", "", false) || f.plan(t, "!big3:a.test", "", false) {
		t.Fatal("the event bound evicted the wrong entry")
	}
	size = 2 * verdictCacheEvents
	f.plan(t, "!huge:a.test", "", false)
	if f.plan(t, "!huge:a.test", "", false) {
		t.Fatal("a room bigger than the bound was not kept")
	}
}

func TestVerdictCacheKeepsNoFailureOrFetchedKeys(t *testing.T) {
	f := newCacheFixture(t)
	f.fail = errors.New("checker died")
	f.plan(t, testRoom, "", false)
	f.fail = nil
	if !f.plan(t, testRoom, "", false) {
		t.Fatal("a failed verification was reused")
	}

	// A sender without stored keys: Verify fetches them over federation, which no digest pins.
	f = newCacheFixture(t)
	delete(f.w.keys, "b.test")
	f.u.Federation = func() (*federation.Client, error) { return nil, errors.New("unused") }
	f.plan(t, testRoom, "", false)
	if !f.plan(t, testRoom, "", false) {
		t.Fatal("a verification with keys fetched over federation was reused")
	}
	// Without federation the missing key is simply missing, the same every time.
	f.u.Federation = nil
	f.plan(t, testRoom, "", false)
	if f.plan(t, testRoom, "", false) {
		t.Fatal("a verification with no federation and no stored key was not reused")
	}
}
