package recovery

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/store/storetest"
	"github.com/synapse-medic/medic/synapse/adminapi"
)

// fakeRoom is one forgotten room as Synapse would have it: the first join makes it
// partial-state; after resyncAfter the state is full and the users resync lists are joined.
// Joins go through medic's appservice (POST /join?user_id=).
type fakeRoom struct {
	mu          sync.Mutex
	partial     bool
	joinedAt    time.Time // first join
	resyncAfter time.Duration
	resync      []string // users the resync shows joined
	never       bool     // the resync never finishes
	members     map[string]string
	reject      map[string]int // user → joins to reject with 403 before one succeeds
	rejectJoins map[string]bool
	joins       []string // users whose join request arrived, in order
	duringPart  []string // join requests that arrived while the room was partial (besides the first)
}

func (f *fakeRoom) tick() {
	if f.partial && !f.never && time.Since(f.joinedAt) >= f.resyncAfter {
		f.partial = false
		for _, u := range f.resync {
			f.members[u] = "join"
		}
	}
}

func (f *fakeRoom) LocalMemberships(context.Context, string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tick()
	out := map[string]string{}
	for k, v := range f.members {
		out[k] = v
	}
	return out, nil
}

func (f *fakeRoom) PartialState(context.Context, string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tick()
	return f.partial, nil
}

func (f *fakeRoom) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tick()
	user := r.URL.Query().Get("user_id")
	if !strings.Contains(r.URL.Path, "/join/") || user == "" {
		http.NotFound(w, r)
		return
	}
	f.joins = append(f.joins, user)
	if f.partial {
		f.duringPart = append(f.duringPart, user)
	}
	if f.reject[user] > 0 {
		f.reject[user]--
		if f.rejectJoins[user] {
			f.members[user] = "join" // rejected, but the resync had joined them meanwhile
		}
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errcode": "M_FORBIDDEN", "error": "You are not invited to this room."}`))
		return
	}
	if len(f.joins) == 1 {
		f.partial, f.joinedAt = true, time.Now()
	}
	f.members[user] = "join"
	_, _ = w.Write([]byte(`{"room_id": "!r:x"}`))
}

type sayings struct {
	mu   sync.Mutex
	said []string
}

func (s *sayings) Note(string, ...any) {}
func (s *sayings) Say(format string, args ...any) {
	s.mu.Lock()
	s.said = append(s.said, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

// runRejoin runs the job's steps for users of one room, 8 at a time as the job does, and
// returns each step's error by user and the report's summary.
func runRejoin(t *testing.T, room *fakeRoom, wait time.Duration, users ...string) (map[string]error, string, *sayings) {
	t.Helper()
	srv := httptest.NewServer(room)
	t.Cleanup(srv.Close)
	reg, _ := NewRegistration("x")
	cli, _ := mautrix.NewClient(srv.URL, "@medic:x", "admin")
	r := &Rejoiner{Admin: adminapi.New(cli), HomeserverURL: srv.URL, Registration: writeTemp(t, reg), stepDB: room, PartialStateWait: wait}
	data := RejoinData{Via: map[string][]string{"!r:x": {"y"}}, Method: JoinMethod{Kind: JoinAppservice}}
	say := &sayings{}
	errs := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := r.step(context.Background(), &jobs.Step[RecoverArgs, RejoinData]{Job: "j", Name: "!r:x " + u, Data: data, Reporter: say})
			mu.Lock()
			errs[u] = err
			mu.Unlock()
		}()
		if u == users[0] {
			time.Sleep(20 * time.Millisecond) // the plan puts the first user first
		}
	}
	wg.Wait()
	return errs, r.summary("j"), say
}

func users(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("@u%d:x", i))
	}
	return out
}

// The first join makes the room partial-state; no other join starts until Synapse has the
// full state; the users the resync joined are counted as such, not joined again.
func TestRejoinWaitsForFullState(t *testing.T) {
	all := users(20)
	room := &fakeRoom{resyncAfter: 400 * time.Millisecond, resync: all[10:], members: map[string]string{}}
	errs, summary, say := runRejoin(t, room, time.Minute, all...)
	for u, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if len(room.duringPart) > 0 {
		t.Errorf("joins while the room was partial-state: %v", room.duringPart)
	}
	if len(room.joins) != 10 {
		t.Errorf("%d join requests, want 10 (the others were joined by the resync): %v", len(room.joins), room.joins)
	}
	if !strings.HasPrefix(summary, "Rejoined 10 user(s); 10 already joined by Synapse's resync of the room's state; 0 failed. Waited") {
		t.Errorf("summary: %s", summary)
	}
	if len(say.said) == 0 || !strings.Contains(say.said[0], "waiting for Synapse to finish fetching the room's state") {
		t.Errorf("said: %v", say.said)
	}
}

// A rejected join is no failure when the resync shows the user joined, and is retried once
// otherwise; a user still rejected after the retry fails with both answers.
func TestRejoinRechecksBeforeFailing(t *testing.T) {
	all := users(6)
	room := &fakeRoom{resyncAfter: 100 * time.Millisecond, members: map[string]string{},
		reject:      map[string]int{all[2]: 1, all[3]: 1, all[4]: 2},
		rejectJoins: map[string]bool{all[3]: true}}
	errs, summary, _ := runRejoin(t, room, time.Minute, all...)
	for _, u := range []string{all[0], all[1], all[2], all[3], all[5]} {
		if errs[u] != nil {
			t.Errorf("%s: %v", u, errs[u])
		}
	}
	if err := errs[all[4]]; err == nil || !strings.Contains(err.Error(), "retried once the room's state was complete") {
		t.Errorf("%s: %v", all[4], err)
	}
	if !strings.HasPrefix(summary, "Rejoined 4 user(s); 1 already joined by Synapse's resync of the room's state; 1 failed.") {
		t.Errorf("summary: %s", summary)
	}
}

// A room that stays partial-state past the bound fails its steps with the reason, and its
// other users are not joined against incomplete state.
func TestRejoinBoundedWait(t *testing.T) {
	all := users(5)
	room := &fakeRoom{never: true, members: map[string]string{}}
	errs, _, _ := runRejoin(t, room, 300*time.Millisecond, all...)
	if len(room.joins) != 1 {
		t.Errorf("joins: %v (only the first may join)", room.joins)
	}
	for _, u := range all {
		if err := errs[u]; err == nil || !strings.Contains(err.Error(), "still fetching the room's state") {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// Login-as-user gone since the plan (Synapse switched to MAS): the job says once what to do
// and tries no other user the same way.
func TestRejoinLoginAsUserGoneMidJob(t *testing.T) {
	var mu sync.Mutex
	logins := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/login") {
			logins++
		}
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}`))
	}))
	defer srv.Close()
	cli, _ := mautrix.NewClient(srv.URL, "@medic:x", "admin")
	st, _ := storetest.Open(t)
	room := &fakeRoom{members: map[string]string{}}
	r := &Rejoiner{Admin: adminapi.New(cli), Store: st, HomeserverURL: srv.URL, stepDB: room}
	data := RejoinData{Via: map[string][]string{"!r:x": {"y"}}, Method: JoinMethod{Kind: JoinLoginAsUser}}
	say := &sayings{}
	var failed int
	for _, u := range users(5) {
		if err := r.step(context.Background(), &jobs.Step[RecoverArgs, RejoinData]{Job: "j", Name: "!r:x " + u, Data: data, Reporter: say}); err != nil {
			failed++
		}
	}
	if logins != 1 || failed != 5 {
		t.Errorf("%d login-as-user calls, %d steps failed (want 1 call, every step failed)", logins, failed)
	}
	if len(say.said) != 1 || !strings.Contains(say.said[0], "app_service_config_files") {
		t.Errorf("said: %v", say.said)
	}
}
