package recovery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/proc"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapse/journal"
	"github.com/synapse-medic/medic/synapselog"
)

// RecoverArgs say which forgotten rooms to recover: the rooms named, or with All every room
// the logs show since Since; Via are servers to ask first.
type RecoverArgs struct {
	Rooms []string      `json:"rooms,omitempty"`
	All   bool          `json:"all,omitempty"`
	Since time.Duration `json:"since,omitempty"`
	Via   []string      `json:"via,omitempty"`
}

// RejoinData is what the plan hands the steps, per room: the servers to join through and
// whether the room is public (then the admin join API serves after the first join).
type RejoinData struct {
	Via    map[string][]string `json:"via"`
	Public map[string]bool     `json:"public,omitempty"`
	// Method is how the users will be joined, decided by the plan (and shown in it).
	Method JoinMethod `json:"method"`
}

// tokenLifetime bounds every minted token even if medic dies before logging it out. A join
// still retrying (429) when less than tokenRenewal of its token is left goes on with a fresh
// token, so no retry outlives the token it was given.
var (
	tokenLifetime = 10 * time.Minute
	tokenRenewal  = 2 * time.Minute
)

// Rejoiner plans and runs the rejoin of local users to forgotten rooms.
type Rejoiner struct {
	Admin         *adminapi.Client
	DB            *synapse.DB
	Store         *store.Store
	Federation    func() (*federation.Client, error)
	ServerName    string
	HomeserverURL string
	BotUser       id.UserID
	Logs          []synapselog.Source
	// JoinAs is recover.join_as (auto, appservice, login_as_user; "" is auto) and
	// Registration the appservice registration file it reads the as_token from.
	JoinAs, Registration string
	// PartialStateWait bounds the wait for Synapse to fetch a room's full state after the
	// first join (recover.partial_state_wait; 0: defaultPartialStateWait).
	PartialStateWait time.Duration

	// stepDB, when set, stands in for DB in the steps (unit tests of the rules).
	stepDB roomDB

	roomLocks sync.Map // room ID → *sync.Mutex: one bootstrap join per room
	rooms     sync.Map // job ID + " " + room ID → *roomProgress
	tallies   sync.Map // job ID → *tally
}

// roomDB is what the steps read of Synapse's database.
type roomDB interface {
	LocalMemberships(ctx context.Context, roomID string) (map[string]string, error)
	PartialState(ctx context.Context, roomID string) (bool, error)
}

func (r *Rejoiner) roomDB() roomDB {
	if r.stepDB != nil {
		return r.stepDB
	}
	return r.DB
}

// defaultPartialStateWait: Synapse fetches a big room's state in seconds to minutes; a room
// still partial after this is stuck (the health check's partial-joins says so too).
const defaultPartialStateWait = 10 * time.Minute

// roomProgress is where one room's rejoin stands in this process (guarded by its room lock):
// ready once the server is back in it with the full state, err once that failed for good.
type roomProgress struct {
	ready atomic.Bool // also read without the lock (join)
	err   error
}

// tally counts what a job's steps came to, for its report.
type tally struct {
	rejoined, resynced, failed, limited atomic.Int64
	noMethod                            atomic.Bool  // login-as-user turned out unavailable
	waitMillis                          atomic.Int64 // total time waited for partial-state rooms
}

// roomPlan is what one room's plan found.
type roomPlan struct {
	room                  string
	server                string
	public                bool
	join, already         []string
	missing, deactivated  []string
	invited, banned, left int
	answers               []string
	err                   error
}

func (r *Rejoiner) candidates(ctx context.Context, room string, via []string, seen []string) []string {
	list := append([]string{}, via...)
	list = append(list, seen...)
	if r.DB != nil {
		if fromDB, err := r.DB.CandidateServers(ctx, room, r.ServerName); err == nil {
			list = append(list, fromDB...)
		} else {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Could not read candidate servers from the database")
		}
	}
	if _, server, ok := strings.Cut(room, ":"); ok { // rooms before version 12 name their creator's server
		list = append(list, server)
	}
	var out []string
	for _, s := range list {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// recentEvent finds a recent event ID in the room known to server: timestamp_to_event, or,
// for servers without it, the prev_events of a make_join template.
func (r *Rejoiner) recentEvent(ctx context.Context, fc *federation.Client, server string, room id.RoomID) (id.EventID, error) {
	resp, err := fc.TimestampToEvent(ctx, server, room, time.Now(), mautrix.DirectionBackward)
	if err == nil && resp.EventID != "" {
		return resp.EventID, nil
	}
	tsErr := err
	mj, err := fc.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: room, UserID: r.BotUser, Via: server,
		SupportedVersions: []id.RoomVersion{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}})
	if err != nil {
		return "", fmt.Errorf("timestamp_to_event: %v; make_join: %w", tsErr, err)
	}
	prev := gjson.GetBytes(mj.Event, "prev_events.0")
	if prev.IsArray() { // room versions 1 and 2: [event_id, hashes]
		prev = prev.Get("0")
	}
	if prev.Str == "" {
		return "", fmt.Errorf("timestamp_to_event: %v; make_join template has no prev_events", tsErr)
	}
	return id.EventID(prev.Str), nil
}

func shortErr(err error) string {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.RespError != nil {
		return fmt.Sprintf("%d %s %s", httpErr.Response.StatusCode, httpErr.RespError.ErrCode, httpErr.RespError.Err)
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "…"
	}
	return msg
}

// stateAfter returns the room state after eventID. Federation /state answers with the state
// *before* the event, and the newest event is often a membership (the last user to join), so
// a state event is laid over the answer.
func stateAfter(ctx context.Context, fc *federation.Client, server string, room id.RoomID, eventID id.EventID) (*federation.RespGetState, error) {
	state, err := fc.GetState(ctx, server, room, eventID)
	if err != nil {
		return nil, err
	}
	evt, err := fc.GetEvent(ctx, server, eventID)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", eventID, err)
	}
	for _, raw := range evt.PDUs {
		ev := gjson.ParseBytes(raw)
		stateKey := ev.Get("state_key")
		if !stateKey.Exists() {
			continue
		}
		evType := ev.Get("type").Str
		state.PDUs = slices.DeleteFunc(state.PDUs, func(p federation.PDU) bool {
			old := gjson.ParseBytes(p)
			return old.Get("type").Str == evType && old.Get("state_key").Str == stateKey.Str
		})
		state.PDUs = append(state.PDUs, raw)
	}
	return state, nil
}

func (r *Rejoiner) planRoom(ctx context.Context, fc *federation.Client, room string, via, seen []string) *roomPlan {
	rp := &roomPlan{room: room}
	var state *federation.RespGetState
	for _, server := range r.candidates(ctx, room, via, seen) {
		eventID, err := r.recentEvent(ctx, fc, server, id.RoomID(room))
		if err == nil {
			state, err = stateAfter(ctx, fc, server, id.RoomID(room), eventID)
		}
		if err != nil {
			rp.answers = append(rp.answers, fmt.Sprintf("%s: %s", server, shortErr(err)))
			continue
		}
		rp.server = server
		rp.answers = append(rp.answers, server+": state at "+eventID.String())
		break
	}
	if state == nil {
		rp.err = fmt.Errorf("no server gave the room's state (%s)", strings.Join(rp.answers, "; "))
		return rp
	}
	suffix := ":" + r.ServerName
	var joined []string
	for _, pdu := range state.PDUs {
		ev := gjson.ParseBytes(pdu)
		switch ev.Get("type").Str {
		case "m.room.join_rules":
			rp.public = ev.Get("content.join_rule").Str == "public"
		case "m.room.member":
			user := ev.Get("state_key").Str
			if !strings.HasSuffix(user, suffix) {
				continue
			}
			switch ev.Get("content.membership").Str {
			case "join":
				joined = append(joined, user)
			case "invite":
				rp.invited++
			case "ban":
				rp.banned++
			case "leave":
				rp.left++
			}
		}
	}
	slices.Sort(joined)
	local, err := r.DB.LocalUsers(ctx, joined)
	if err != nil {
		rp.err = err
		return rp
	}
	memberships, err := r.DB.LocalMemberships(ctx, room)
	if err != nil {
		rp.err = err
		return rp
	}
	for _, u := range joined {
		deactivated, exists := local[u]
		switch {
		case id.UserID(u) == r.BotUser:
			continue
		case !exists:
			rp.missing = append(rp.missing, u)
		case deactivated:
			rp.deactivated = append(rp.deactivated, u)
		case memberships[u] == "join":
			rp.already = append(rp.already, u)
		default:
			rp.join = append(rp.join, u)
		}
	}
	return rp
}

// listSome shows up to five user IDs (as code: they are state keys from other servers).
func listSome(users []string) string {
	if len(users) > 5 {
		return mdtext.Codes(users[:5]) + fmt.Sprintf(" and %d more", len(users)-5)
	}
	return mdtext.Codes(users)
}

// Operation returns the job operation: one step per user, independent of each other, so a
// user who cannot rejoin does not keep the others out.
func (r *Rejoiner) Operation() *jobs.Operation[RecoverArgs, RejoinData] {
	return &jobs.Operation[RecoverArgs, RejoinData]{
		Kind:    "recover",
		Order:   jobs.Parallel(8),
		Plan:    r.plan,
		Step:    r.step,
		Summary: r.summary,
	}
}

func (r *Rejoiner) tally(jobID string) *tally {
	t, _ := r.tallies.LoadOrStore(jobID, &tally{})
	return t.(*tally)
}

// summary is the report's count of this run: who was rejoined, who the resync of the room's
// state had joined already, who failed (the failures are listed with their reasons above).
func (r *Rejoiner) summary(jobID string) string {
	// The run is over: a later run (resume) starts from what Synapse says again.
	r.rooms.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), jobID+" ") {
			r.rooms.Delete(k)
		}
		return true
	})
	v, ok := r.tallies.LoadAndDelete(jobID)
	if !ok {
		return ""
	}
	t := v.(*tally)
	line := fmt.Sprintf("Rejoined %d user(s); %d already joined by Synapse's resync of the room's state; %d failed.",
		t.rejoined.Load(), t.resynced.Load(), t.failed.Load())
	if w := time.Duration(t.waitMillis.Load()) * time.Millisecond; w > 0 {
		line += fmt.Sprintf(" Waited %s for Synapse to fetch the rooms' full state after their first join.", w.Round(100*time.Millisecond))
	}
	if n := t.limited.Load(); n > 0 {
		line += fmt.Sprintf(" Synapse answered %d join(s) with 429 (rate limited); they were retried.", n)
	}
	return line
}

func (r *Rejoiner) plan(ctx context.Context, args RecoverArgs) (*jobs.Plan, error) {
	if r.DB == nil {
		return nil, fmt.Errorf("recovery needs Synapse's database: set synapse.database in medic's config")
	}
	fc, err := r.Federation()
	if err != nil {
		return nil, err
	} else if fc == nil {
		return nil, fmt.Errorf("recovery asks other servers for room state, signed with the server's key: set synapse.signing_key_path in medic's config")
	}
	via, rooms := args.Via, args.Rooms
	seen := map[string][]string{}
	if args.All {
		found, _, err := diagnose.ScanForgotten(ctx, r.Logs, time.Now().Add(-args.Since), r.DB, fc)
		if err != nil {
			return nil, fmt.Errorf("scan the logs: %w", err)
		}
		rooms = nil
		for _, f := range found {
			rooms = append(rooms, f.RoomID)
			seen[f.RoomID] = synapselog.ServerList(f.Servers)
		}
		if len(rooms) == 0 {
			return &jobs.Plan{Nothing: "The logs show no forgotten rooms; nothing to recover."}, nil
		}
	}
	plan := &jobs.Plan{}
	data := RejoinData{Via: map[string][]string{}, Public: map[string]bool{}}
	var failures, firsts, rest []string
	users, roomsDone := 0, 0
	for _, room := range rooms {
		rp := r.planRoom(ctx, fc, room, via, seen[room])
		if rp.err != nil {
			failures = append(failures, fmt.Sprintf("%s: cannot recover: %s", mdtext.Code(room), mdtext.Text(rp.err.Error())))
			continue
		}
		// Room IDs, servers, user IDs and remote servers' answers are remote text.
		line := fmt.Sprintf("%s (state from %s): rejoin %d user(s)", mdtext.Code(room), mdtext.Code(rp.server), len(rp.join))
		if len(rp.join) > 0 {
			line += ": " + listSome(rp.join)
		}
		if len(rp.already) > 0 {
			line += fmt.Sprintf("; %d already joined", len(rp.already))
		}
		if len(rp.missing) > 0 {
			line += fmt.Sprintf("; missing locally, not created: %s", listSome(rp.missing))
		}
		if len(rp.deactivated) > 0 {
			line += fmt.Sprintf("; deactivated, skipped: %s", listSome(rp.deactivated))
		}
		if rp.invited+rp.banned+rp.left > 0 {
			line += fmt.Sprintf("; also %d invited, %d banned, %d left (not touched)", rp.invited, rp.banned, rp.left)
		}
		if len(rp.answers) > 1 {
			line += "; servers asked: " + mdtext.Text(strings.Join(rp.answers, "; "))
		}
		plan.Changes = append(plan.Changes, line)
		if len(rp.join) == 0 {
			roomsDone++
		}
		viaList := append([]string{rp.server}, via...)
		data.Via[room] = viaList
		if rp.public {
			data.Public[room] = true
		}
		// Each room's first join goes first, all rooms' at once: it brings the server back
		// into the room, and the room's other joins wait for Synapse to fetch its state.
		for i, u := range rp.join {
			if i == 0 {
				firsts = append(firsts, room+" "+u)
			} else {
				rest = append(rest, room+" "+u)
			}
		}
		users += len(rp.join)
	}
	plan.Steps = append(firsts, rest...)
	plan.Changes = append(plan.Changes, failures...)
	if len(plan.Steps) == 0 {
		return &jobs.Plan{Nothing: "Nothing to rejoin.\n\n* " + strings.Join(plan.Changes, "\n* ")}, nil
	}
	method, err := r.ChooseJoinMethod(ctx)
	if err != nil {
		return nil, err
	}
	data.Method = method
	plan.Data = jobs.Encode(data)
	plan.Title = fmt.Sprintf("Rejoin %d local user(s) to %d forgotten room(s)", users, len(data.Via)-roomsDone)
	plan.Why = "Other servers still list these users as members, but this server forgot the rooms (e.g. after a database restore) and drops their traffic."
	switch method.Kind {
	case JoinAppservice:
		plan.Risks = append(plan.Risks, fmt.Sprintf("Medic joins each user as medic's appservice (`?user_id=`), because %s: no token is minted, nothing is left to revoke.", method.Why))
	default:
		plan.Risks = append(plan.Risks, fmt.Sprintf("Medic joins each user with a short-lived token from Synapse's login-as-user admin API (valid %s, logged out right after the join), because %s.",
			tokenLifetime, method.Why))
		if !r.exemptFromRateLimits(ctx) {
			plan.Risks = append(plan.Risks, fmt.Sprintf("Synapse limits joins into one room to one a second after ten (`rc_joins_per_room`): login-as-user joins wait for it unless medic's account is exempt "+
				"(`POST /_synapse/admin/v1/users/%s/override_ratelimit` with `{\"messages_per_second\": 0, \"burst_count\": 0}`) or an appservice is set up (README).", r.BotUser))
		}
	}
	plan.Risks = append(plan.Risks,
		"Each room's first join is a partial-state join: the room's other users join once Synapse has fetched its full state, so none is checked against incomplete state.",
		"Users who do not exist locally any more are reported, never created.")
	return plan, nil
}

// exemptFromRateLimits tells whether medic's account has Synapse's rate-limit override
// (login-as-user joins are counted against the account that minted their token).
func (r *Rejoiner) exemptFromRateLimits(ctx context.Context) bool {
	var raw map[string]any
	cli := r.Admin.Client.Client
	if _, err := cli.MakeRequest(ctx, http.MethodGet, r.Admin.BuildAdminURL("v1", "users", r.BotUser, "override_ratelimit"), nil, &raw); err != nil {
		return false
	}
	mps, ok := raw["messages_per_second"].(float64)
	return ok && mps == 0
}

func (r *Rejoiner) roomLock(room string) *sync.Mutex {
	l, _ := r.roomLocks.LoadOrStore(room, &sync.Mutex{})
	return l.(*sync.Mutex)
}

// progress is where room stands in a run of job: per job, because a server may forget a
// room again (another restore) while the bot runs on.
func (r *Rejoiner) progress(jobID, room string) *roomProgress {
	p, _ := r.rooms.LoadOrStore(jobID+" "+room, &roomProgress{})
	return p.(*roomProgress)
}

func (r *Rejoiner) step(ctx context.Context, s *jobs.Step[RecoverArgs, RejoinData]) error {
	room, user, _ := strings.Cut(s.Name, " ")
	t := r.tally(s.Job)
	if t.noMethod.Load() {
		t.failed.Add(1)
		return errors.New("not tried: login-as-user is unavailable (the steps to set up the appservice were given once above)")
	}
	err := r.rejoin(ctx, s, t, room, user)
	if err != nil {
		t.failed.Add(1)
		// Login-as-user went away since the plan (Synapse switched to MAS): say once what
		// to do, and try no other user the same way.
		if errors.Is(err, errLoginAsUserUnavailable) && t.noMethod.CompareAndSwap(false, true) {
			s.Say("❌ %s", (&NoJoinMethodError{Cause: err}).Error())
		}
	}
	return err
}

// rejoin joins one user. A room's first join brings the server back into it as a
// partial-state join: Synapse has not got the member list yet, and would check another local
// user's join against state without that user's earlier membership (and reject it). So the
// first join, and the wait until Synapse has fetched the full state, hold the room's lock;
// the room's other users join after that, in parallel.
func (r *Rejoiner) rejoin(ctx context.Context, s *jobs.Step[RecoverArgs, RejoinData], t *tally, room, user string) error {
	lock := r.roomLock(room)
	lock.Lock()
	rp := r.progress(s.Job, room)
	if rp.err != nil {
		lock.Unlock()
		return rp.err
	}
	if !rp.ready.Load() {
		joinedFirst, err := r.bootstrap(ctx, s, t, room, user)
		if err != nil {
			if !joinedFirst {
				lock.Unlock()
				return err // the next step tries to bring the server in
			}
			rp.err = err // the server is in, but Synapse is stuck fetching the state
			lock.Unlock()
			return err
		}
		rp.ready.Store(true)
		lock.Unlock()
		if joinedFirst {
			t.rejoined.Add(1)
			return nil
		}
	} else {
		lock.Unlock()
	}
	memberships, err := r.roomDB().LocalMemberships(ctx, room)
	if err != nil {
		return err
	}
	if memberships[user] == "join" {
		t.resynced.Add(1) // Synapse's resync listed them, or an earlier run joined them
		return nil
	}
	err = r.join(ctx, s, t, room, user)
	if err == nil {
		t.rejoined.Add(1)
		return nil
	}
	// Before reporting a failure: the room may have become partial-state again (another
	// process's join), and a rejected join may have been judged on incomplete state. Once the
	// state is full, a user the resync shows joined is no failure; anyone else gets one retry.
	if werr := r.waitFullState(ctx, s, t, room); werr != nil {
		return fmt.Errorf("%w (and %v)", err, werr)
	}
	if memberships, merr := r.roomDB().LocalMemberships(ctx, room); merr == nil && memberships[user] == "join" {
		t.resynced.Add(1)
		return nil
	}
	if retryErr := r.join(ctx, s, t, room, user); retryErr != nil {
		return fmt.Errorf("%w; retried once the room's state was complete: %s", err, strings.TrimPrefix(retryErr.Error(), "join: "))
	}
	t.rejoined.Add(1)
	return nil
}

// bootstrap brings the server back into room (joining user, unless a local user is in
// already) and waits until Synapse has the room's full state. joinedFirst says whether user
// was the one joined.
func (r *Rejoiner) bootstrap(ctx context.Context, s *jobs.Step[RecoverArgs, RejoinData], t *tally, room, user string) (joinedFirst bool, err error) {
	memberships, err := r.roomDB().LocalMemberships(ctx, room)
	if err != nil {
		return false, err
	}
	serverIn := false
	for _, m := range memberships {
		serverIn = serverIn || m == "join"
	}
	if !serverIn {
		if err = r.join(ctx, s, t, room, user); err != nil {
			return false, err
		}
		joinedFirst = true
	}
	if err = r.waitFullState(ctx, s, t, room); err != nil {
		return joinedFirst, err
	}
	return joinedFirst, nil
}

// waitFullState waits, bounded, until Synapse has left the room's partial state, telling the
// requester while it waits.
func (r *Rejoiner) waitFullState(ctx context.Context, s *jobs.Step[RecoverArgs, RejoinData], t *tally, room string) error {
	limit := r.PartialStateWait
	if limit <= 0 {
		limit = defaultPartialStateWait
	}
	start := time.Now()
	lastSaid := time.Time{}
	for {
		partial, err := r.roomDB().PartialState(ctx, room)
		if err != nil {
			return err
		}
		waited := time.Since(start)
		if !partial {
			t.waitMillis.Add(waited.Milliseconds())
			if !lastSaid.IsZero() {
				s.Say("✅ %s: Synapse has the room's full state (after %s); joining its other users.", mdtext.Code(room), waited.Round(100*time.Millisecond))
			}
			return nil
		}
		if waited > limit {
			t.waitMillis.Add(waited.Milliseconds())
			return fmt.Errorf("Synapse was still fetching the room's state %s after the first join (a partial-state join); its other users were not joined, "+
				"so that none is checked against incomplete state: resume the job once `!health partial-joins` no longer lists the room", limit)
		}
		if lastSaid.IsZero() || time.Since(lastSaid) >= 15*time.Second {
			s.Say("⏳ %s: waiting for Synapse to finish fetching the room's state: %s so far (at most %s); the room's other users join after it.",
				mdtext.Code(room), waited.Round(time.Second), limit)
			lastSaid = time.Now()
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// join joins user to room the way the plan chose.
func (r *Rejoiner) join(ctx context.Context, s *jobs.Step[RecoverArgs, RejoinData], t *tally, room, user string) error {
	via := s.Data.Via[room]
	if s.Data.Method.Kind == JoinAppservice {
		return r.appserviceJoin(ctx, t, room, user, via)
	}
	if s.Data.Public[room] && r.progress(s.Job, room).ready.Load() {
		// Once the server is back in a public room, the admin join API (not rate limited)
		// serves.
		err := r.Admin.JoinUser(ctx, id.RoomID(room), id.UserID(user), via)
		if err == nil {
			return nil
		}
		zerolog.Ctx(ctx).Debug().Err(err).Str("user", user).Msg("Admin join failed, joining as the user")
	}
	return r.puppetJoin(ctx, t, s.Job, room, user, via)
}

// appserviceJoin joins as the user through medic's appservice (POST /join?user_id=): nothing
// is minted, so nothing is left behind if medic dies here.
func (r *Rejoiner) appserviceJoin(ctx context.Context, t *tally, room, user string, via []string) error {
	cli, err := r.appserviceClient(user)
	if err != nil {
		return err
	}
	if err = journal.HoldPoint().At(ctx, "rejoin: appservice join"); err != nil {
		return err
	}
	return r.joinRetrying(ctx, t, via, func() error {
		_, err := cli.JoinRoom(ctx, room, &mautrix.ReqJoinRoom{Via: via})
		return err
	})
}

// puppet is a login-as-user token of one user, recorded in medic's store from before it is
// minted until it is logged out.
type puppet struct {
	rec, user, token string
	until            time.Time
	cli              *mautrix.Client
}

// mint gets a fresh token for user. The mint is recorded, naming this process, before
// Synapse is asked, and the token before it is used: a medic starting meanwhile
// (RevokeMinted) leaves it alone, and one starting after a crash logs it out.
func (r *Rejoiner) mint(ctx context.Context, jobID, user string) (*puppet, error) {
	rec, err := r.Store.BeginMint(ctx, user, jobID, proc.Self())
	if err != nil {
		return nil, err
	}
	until := time.Now().Add(tokenLifetime)
	token, err := r.Admin.LoginAsUser(ctx, id.UserID(user), until)
	if err != nil {
		_ = r.Store.DeleteMinted(context.WithoutCancel(ctx), rec)
		var httpErr mautrix.HTTPError
		if errors.As(err, &httpErr) && httpErr.Response != nil &&
			(httpErr.Is(mautrix.MUnrecognized) || httpErr.Response.StatusCode == http.StatusMethodNotAllowed) {
			// The route is gone (404 M_UNRECOGNIZED, not "User not found"): Synapse was
			// switched to MAS since the plan.
			return nil, fmt.Errorf("%w (it answered %s)", errLoginAsUserUnavailable, shortErr(err))
		}
		return nil, err
	}
	p := &puppet{rec: rec, user: user, token: token, until: until}
	if err = r.Store.SetMinted(ctx, rec, token); err != nil {
		r.release(ctx, p)
		return nil, err
	}
	if p.cli, err = mautrix.NewClient(r.HomeserverURL, id.UserID(user), token); err != nil {
		r.release(ctx, p)
		return nil, err
	}
	return p, nil
}

// release logs the token out and forgets it. A token that cannot be logged out stays
// recorded, and a later start of medic logs it out once this process is gone.
func (r *Rejoiner) release(ctx context.Context, p *puppet) {
	ctx = context.WithoutCancel(ctx)
	if err := logoutToken(ctx, r.HomeserverURL, p.user, p.token); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("user", p.user).Msg("Could not log out minted token; it stays recorded and is retried at start")
		return
	}
	_ = r.Store.DeleteMinted(ctx, p.rec)
}

// puppetJoin joins as the user with a minted token, honouring 429, and logs the token out.
func (r *Rejoiner) puppetJoin(ctx context.Context, t *tally, jobID, room, user string, via []string) error {
	p, err := r.mint(ctx, jobID, user)
	if err != nil {
		return err
	}
	defer func() { r.release(ctx, p) }()
	// Tests hold here, with the token minted and recorded, to start another medic meanwhile.
	if err = journal.HoldPoint().At(ctx, "rejoin: token minted"); err != nil {
		return err
	}
	return r.joinRetrying(ctx, t, via, func() error {
		if time.Until(p.until) < tokenRenewal {
			fresh, err := r.mint(ctx, jobID, user)
			if err != nil {
				return fmt.Errorf("fresh token for a join still retrying: %w", err)
			}
			r.release(ctx, p)
			p = fresh
		}
		_, err := p.cli.JoinRoom(ctx, room, &mautrix.ReqJoinRoom{Via: via})
		return err
	})
}

// joinRetrying runs join until it succeeds, fails for good, or was retried 20 times.
func (r *Rejoiner) joinRetrying(ctx context.Context, t *tally, via []string, join func() error) error {
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		err := join()
		if err == nil {
			return nil
		}
		wait, retry := retryAfter(err)
		if !retry || attempt >= 20 {
			return fmt.Errorf("join: %s", shortErr(err))
		}
		if wait == backoffMarker {
			// One refused make_join (e.g. the other server's own join rate limit) makes
			// Synapse back off from that server for 10 minutes, which would stall the whole
			// recovery: clear that backoff (admin API) before trying again.
			for _, server := range via {
				_ = r.Admin.ResetConnection(ctx, server)
			}
			wait = min(backoff, 16*time.Second)
			backoff = min(backoff*2, 16*time.Second)
		} else if t != nil {
			t.limited.Add(1)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// retryAfter says whether a failed join is worth retrying and after how long: 429 (as long
// as the server asks), and a 502 from a remote join whose make_join was rate limited by the
// other server (Synapse does not pass that server's retry_after_ms on, so back off).
func retryAfter(err error) (time.Duration, bool) {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.RespError == nil {
		return 0, false
	}
	switch {
	case httpErr.RespError.ErrCode == "M_LIMIT_EXCEEDED":
		if ms, ok := httpErr.RespError.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			return min(time.Duration(ms)*time.Millisecond, 30*time.Second), true
		}
		return time.Second, true
	case httpErr.Response != nil && httpErr.Response.StatusCode == 502 && strings.Contains(httpErr.RespError.Err, "make_join"):
		return backoffMarker, true
	}
	return 0, false
}

// backoffMarker tells puppetJoin to clear Synapse's federation backoff and wait its own.
const backoffMarker = -1

func logoutToken(ctx context.Context, hsURL, user, token string) error {
	cli, err := mautrix.NewClient(hsURL, id.UserID(user), token)
	if err != nil {
		return err
	}
	_, err = cli.Logout(ctx)
	if errors.Is(err, mautrix.MUnknownToken) {
		return nil // already invalid
	}
	return err
}

// RevokeMinted logs out the login-as-user tokens that medic processes which are gone left
// valid (killed mid-join). Every start calls it, also a `medic exec` while the bot runs, so
// the tokens live processes use are left alone:
//   - a recorded token is logged out once its process is gone (proc.ID.Gone), or once it is
//     older than its lifetime whatever minted it;
//   - Synapse's database, when configured, names every login-as-user token the bot's account
//     minted, including one minted in the instant before a crash, before medic could record
//     it. Of those medic's store does not record, the ones of a user a live process is
//     minting for right now are left alone: a process records the mint before it asks
//     Synapse, and Synapse's database is read here before the store, so the record of every
//     token read is seen.
//
// A logout that fails does not stop the others; the failures are returned together, and
// their tokens stay recorded (or in Synapse's database) for the next start.
func RevokeMinted(ctx context.Context, st *store.Store, db *synapse.DB, botUser id.UserID, hsURL string) error {
	var inSynapse [][2]string
	if db != nil {
		var err error
		if inSynapse, err = db.PuppetTokens(ctx, botUser.String()); err != nil {
			return err
		}
	}
	recorded, err := st.AllMinted(ctx)
	if err != nil {
		return err
	}
	type leftover struct{ user, rec string }
	revoke := map[string]leftover{}
	known := map[string]bool{}   // tokens medic's store records
	minting := map[string]bool{} // users a live process is minting a token for
	for _, m := range recorded {
		known[m.Token] = m.Token != ""
		live := !m.By.Gone() && time.Since(m.MintedAt) < tokenLifetime
		switch {
		case live && m.Token == "":
			minting[m.UserID] = true
		case live:
		case m.Token == "":
			// A mint whose process died before recording the token: the token, if Synapse
			// made one, is among Synapse's.
			if err := st.DeleteMinted(ctx, m.ID); err != nil {
				return err
			}
		default:
			revoke[m.Token] = leftover{m.UserID, m.ID}
		}
	}
	for _, p := range inSynapse {
		if token, user := p[0], p[1]; !known[token] && !minting[user] {
			revoke[token] = leftover{user: user}
		}
	}
	var failed []string
	for token, l := range revoke {
		err := logoutToken(ctx, hsURL, l.user, token)
		if err == nil && l.rec != "" {
			err = st.DeleteMinted(ctx, l.rec)
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", l.user, err))
		}
	}
	if n := len(revoke) - len(failed); n > 0 {
		zerolog.Ctx(ctx).Info().Int("count", n).Msg("Logged out tokens left by an interrupted recovery")
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return fmt.Errorf("could not log out %d of %d login-as-user token(s) left by an interrupted recovery (retried at the next start): %s",
			len(failed), len(revoke), strings.Join(failed, "; "))
	}
	return nil
}
