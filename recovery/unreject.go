package recovery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation"

	"github.com/synapse-medic/medic/authcheck"
	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapse/journal"
)

// UnrejectArgs name the room, optionally one chain root, and whether to accept that root
// although it fails the auth rules.
type UnrejectArgs struct {
	jobs.SchemaForce
	Room  string `json:"room"`
	Root  string `json:"root,omitempty"`
	Force bool   `json:"force,omitempty"`
}

// UnrejectData is what the plan hands the steps: the events to un-reject.
type UnrejectData struct {
	Events []string `json:"events"`
}

// RiskRejectedStays is the upstream warning the prompt quotes (synapse#13797).
const RiskRejectedStays = "Synapse assumes that a rejected event stays rejected (element-hq/synapse#13797) and caches " +
	"events with their rejection status: the change takes effect only after Synapse restarts, and events it " +
	"already built on the rejection (e.g. state computed while the event was rejected) are not recomputed."

// Unrejecter plans and runs !unreject.
type Unrejecter struct {
	DB         *synapse.DB
	Admin      *adminapi.Client
	Federation func() (*federation.Client, error)
	ServerName string
	// OwnKey is Synapse's signing key (its public half verifies the server's own events).
	OwnKey func() (*federation.SigningKey, error)
	// Checker is the configured medic-authcheck path ("" to look next to medic and in $PATH).
	Checker        string
	RestartCommand string
	// VerdictTTL is how long a verification may be reused by a later plan whose inputs are
	// unchanged (the approval's re-plan): at most jobs.expire_after; 0 means 15 minutes.
	VerdictTTL time.Duration

	verdicts verdictCache // recovery/unreject_cache.go
}

func (u *Unrejecter) restarter() *Restarter {
	return &Restarter{Admin: u.Admin, Command: u.RestartCommand}
}

// Operation is the job operation: un-reject (one transaction), restart, post-check, in
// order; nothing runs after a step that failed.
func (u *Unrejecter) Operation() *jobs.Operation[UnrejectArgs, UnrejectData] {
	return &jobs.Operation[UnrejectArgs, UnrejectData]{Kind: "unreject", Plan: u.plan, Step: u.step, RestartsSynapse: true,
		// It writes events.rejection_reason and rejections directly.
		Schema: &TestedSchema}
}

// Verification is the outcome of checking a room's rejected events.
type Verification struct {
	RoomID      string
	RoomVersion string
	Roots       []string            // the chains' roots that were checked
	Pass        []string            // events that now pass, in depth order
	Fail        []authcheck.Verdict // events that still fail, in depth order
	Forced      []string            // roots accepted despite failing (--force)
	Types       map[string]int      // types of the events to un-reject
}

// checkQueue hands the checked events' IDs and types from the feeding goroutine to the
// verdict reader, in order. Types are interned (a chain has few distinct ones), and the IDs
// are the walk's own strings: the verdicts keep those, not 100k copies decoded from the
// checker's answers.
type checkQueue struct {
	mu     sync.Mutex
	items  []checked
	next   int
	intern map[string]string
}

type checked struct{ eventID, evType string }

func (q *checkQueue) push(eventID, evType string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.intern == nil {
		q.intern = map[string]string{}
	}
	if s, ok := q.intern[evType]; ok {
		evType = s
	} else {
		q.intern[evType] = evType
	}
	q.items = append(q.items, checked{eventID, evType})
}

func (q *checkQueue) pop() (checked, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.next >= len(q.items) {
		return checked{}, false
	}
	c := q.items[q.next]
	q.items[q.next] = checked{}
	q.next++
	return c, true
}

func (v *Verification) verdict(eventID string) authcheck.Verdict {
	for _, f := range v.Fail {
		if f.EventID == eventID {
			return f
		}
	}
	return authcheck.Verdict{EventID: eventID, OK: true}
}

// Verify checks a room's rejected events with the auth checker: the roots (all chains', or
// the one given) against their own auth events, then every event of their chains in depth
// order with the roots' verdicts applied. Nothing is changed.
//
// One walk of the room's rejected events both groups them into chains and feeds the checker:
// an event's chain is known when it is met (its auth events come before it), and the events
// it cites that are not rejected are fetched and sent just before it. So the checker starts
// on the first event rather than after a walk of its own.
func (u *Unrejecter) Verify(ctx context.Context, room, root string, force bool) (*Verification, *diagnose.RoomRejections, error) {
	if u.DB == nil {
		return nil, nil, fmt.Errorf("this needs Synapse's database: set synapse.database in medic's config")
	}
	if force && root == "" {
		return nil, nil, fmt.Errorf("--force needs --root: name the one event to accept despite the auth rules")
	}
	rv, err := u.DB.RoomVersion(ctx, room)
	if err != nil {
		return nil, nil, err
	} else if rv == "" {
		return nil, nil, fmt.Errorf("Synapse does not know room %s", room)
	} else if rv == "1" || rv == "2" {
		return nil, nil, fmt.Errorf("room %s is version %s; mautrix-go's auth rules do not cover versions 1 and 2, so medic cannot verify its events", room, rv)
	}
	keys, err := u.storedKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	v, rr, err := u.verifyWith(ctx, rv, room, root, force, keys)
	if err != nil || u.Federation == nil || rr.Total == 0 {
		return v, rr, err
	}
	// A server whose keys Synapse never stored: ask it, and check again with its keys (rare:
	// Synapse stores the keys it verifies events with).
	servers := map[string]bool{}
	for _, r := range v.Roots {
		for s := range rr.Chain(r).Servers {
			servers[s] = true
		}
	}
	if !u.fetchKeys(ctx, keys, servers) {
		return v, rr, nil
	}
	return u.verifyWith(ctx, rv, room, root, force, keys)
}

// verifyWith is Verify with the signing keys given.
func (u *Unrejecter) verifyWith(ctx context.Context, rv, room, root string, force bool, keys map[string]map[string]authcheck.Key) (*Verification, *diagnose.RoomRejections, error) {
	checker, err := authcheck.Find(u.Checker)
	if err != nil {
		return nil, nil, err
	}
	v := &Verification{RoomID: room, RoomVersion: rv, Types: map[string]int{}}
	walk := diagnose.NewChainWalk(room)
	// Verdicts come in the order events were sent to be checked, which wait in a queue.
	queue := &checkQueue{}
	sent := map[string]bool{} // context events asked for
	// sendContext sends the events ids names that the walk has not met as rejected and that
	// were not asked for before, with their rejection status (a rejected event the walk meets
	// later, or one of another room, is context that fails whatever cites it).
	sendContext := func(ids []string, send func(authcheck.Input) error) error {
		var fetch []string
		for _, a := range ids {
			if !sent[a] && walk.RootOf(a) == "" {
				sent[a] = true
				fetch = append(fetch, a)
			}
		}
		if len(fetch) == 0 {
			return nil
		}
		evs, err := u.DB.EventsByID(ctx, fetch)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := send(authcheck.Input{EventID: ev.EventID, Event: ev.JSON, Rejected: ev.Rejected}); err != nil {
				return err
			}
		}
		return nil
	}
	feed := func(send func(authcheck.Input) error) error {
		if rv == "12" || strings.HasPrefix(rv, "org.matrix.hydra") {
			// The create event's ID is the room ID, and events do not cite it.
			if err := sendContext([]string{"$" + strings.TrimPrefix(room, "!")}, send); err != nil {
				return err
			}
		}
		return u.DB.RoomRejectedJSON(ctx, room, func(ev synapse.RejectedEvent, js []byte) error {
			if err := sendContext(ev.AuthEvents, send); err != nil {
				return err
			}
			r := walk.Add(ev)
			check := root == "" || r == root
			if check {
				queue.push(ev.EventID, ev.Type)
			}
			return send(authcheck.Input{EventID: ev.EventID, Event: js, Rejected: true, Check: check,
				Force: check && force && ev.EventID == root})
		})
	}
	hdr := authcheck.Header{RoomVersion: rv, Keys: keys}
	err = authcheck.Run(ctx, checker, hdr, feed, func(vd authcheck.Verdict) error {
		c, ok := queue.pop()
		if !ok || c.eventID != vd.EventID {
			return fmt.Errorf("the auth checker answered for %s, not for %s", vd.EventID, c.eventID)
		}
		vd.EventID = c.eventID
		evType := c.evType
		switch {
		case vd.OK:
			v.Pass = append(v.Pass, vd.EventID)
			v.Types[evType]++
		case force && vd.EventID == root:
			v.Forced = append(v.Forced, vd.EventID)
			v.Fail = append(v.Fail, vd)
			v.Types[evType]++
		default:
			v.Fail = append(v.Fail, vd)
		}
		return nil
	})
	rr := walk.Done()
	if err == nil && rr.Total == 0 {
		return v, rr, nil
	}
	if root != "" {
		// Checked only now that the walk is done; an event that is not a root matched none
		// of the events, so nothing was checked.
		switch r := rr.RootOf(root); {
		case r == "":
			return nil, rr, fmt.Errorf("%s is not a rejected event of %s", root, room)
		case r != root:
			return nil, rr, fmt.Errorf("%s is not the root of its chain: it was rejected because of %s (use that as --root)", root, r)
		}
		v.Roots = []string{root}
	} else {
		for _, c := range rr.Chains {
			v.Roots = append(v.Roots, c.Root.EventID)
		}
	}
	if err != nil {
		return nil, rr, fmt.Errorf("verify events: %w", err)
	}
	return v, rr, nil
}

// storedKeys gathers the signing keys Synapse stored and Synapse's own key.
func (u *Unrejecter) storedKeys(ctx context.Context) (map[string]map[string]authcheck.Key, error) {
	stored, err := u.DB.ServerKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]authcheck.Key{}
	for server, ks := range stored {
		out[server] = map[string]authcheck.Key{}
		for keyID, k := range ks {
			out[server][keyID] = authcheck.Key{Key: k.Key, ValidUntilTS: k.ValidUntil}
		}
	}
	if u.OwnKey != nil {
		if own, err := u.OwnKey(); err == nil {
			if out[u.ServerName] == nil {
				out[u.ServerName] = map[string]authcheck.Key{}
			}
			// Our own current key has no expiry that matters here.
			out[u.ServerName][string(own.ID)] = authcheck.Key{Key: string(own.Pub), ValidUntilTS: 1 << 62}
		}
	}
	return out, nil
}

// fetchKeys asks the servers that have no keys in keys for theirs over federation
// (self-signature checked) and adds them; it reports whether any were added. Verify calls
// it only with a federation client.
func (u *Unrejecter) fetchKeys(ctx context.Context, keys map[string]map[string]authcheck.Key, servers map[string]bool) bool {
	added := false
	for server := range servers {
		if len(keys[server]) > 0 {
			continue
		}
		fc, err := u.Federation()
		if err != nil {
			continue
		}
		resp, err := fc.ServerKeys(ctx, server)
		if err != nil || resp.VerifySelfSignature() != nil {
			continue // the checker then reports the signature as unverifiable
		}
		keys[server] = map[string]authcheck.Key{}
		for keyID, k := range resp.VerifyKeys {
			keys[server][string(keyID)] = authcheck.Key{Key: string(k.Key), ValidUntilTS: resp.ValidUntilTS.UnixMilli()}
		}
		for keyID, k := range resp.OldVerifyKeys {
			keys[server][string(keyID)] = authcheck.Key{Key: string(k.Key), ValidUntilTS: k.ExpiredTS.UnixMilli()}
		}
		added = added || len(keys[server]) > 0
	}
	return added
}

func (u *Unrejecter) plan(ctx context.Context, args UnrejectArgs) (*jobs.Plan, error) {
	room, root, force := args.Room, args.Root, args.Force
	v, rr, err := u.verifyCached(ctx, room, root, force) // the approval's re-plan reuses the proposal's verification
	if err != nil {
		return nil, err
	}
	if rr.Total == 0 {
		return &jobs.Plan{Nothing: fmt.Sprintf("%s has no rejected events; nothing to un-reject.", mdtext.Code(room))}, nil
	}
	unreject := slices.Clone(v.Pass)
	unreject = append(unreject, v.Forced...)
	if len(unreject) == 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "Verification refuses: none of the %d rejected events checked in %s passes the auth rules, so nothing is un-rejected.", len(v.Fail), mdtext.Code(room))
		writeFailures(&b, v.Fail, 10)
		if root != "" && !force {
			fmt.Fprintf(&b, "\n\nIf you are sure the rules are wrong here, `--force` accepts the root anyway. That is dangerous: an event that breaks the auth rules may give someone power they never had, and other servers keep rejecting it, so the room's state would split from theirs.")
		}
		return &jobs.Plan{Nothing: b.String()}, nil
	}
	slices.Sort(unreject)
	// The IDs' digest is streamed: joined, 100k IDs would be one more 4.5 MB string.
	h := sha256.New()
	for i, e := range unreject {
		if i > 0 {
			h.Write([]byte{'\n'})
		}
		h.Write([]byte(e))
	}
	sum := h.Sum(nil)
	// Event types, IDs, senders and the auth checker's reasons are remote text.
	changes := []string{fmt.Sprintf("%s (room version %s): un-reject **%d** event(s) (%s): `events.rejection_reason` → NULL and their `rejections` rows deleted, in one transaction scoped to this room; the old rows are kept for `!undo`.",
		mdtext.Code(room), mdtext.Code(v.RoomVersion), len(unreject), typeList(v.Types))}
	for i, r := range v.Roots {
		if i == 5 {
			changes = append(changes, fmt.Sprintf("… and %d more chains", len(v.Roots)-5))
			break
		}
		c := rr.Chain(r)
		status := "passes the auth rules against its own auth events, its content hash and its signature"
		switch {
		case slices.Contains(v.Forced, r):
			status = "**FAILS** (" + mdtext.Text(VerdictText(v.verdict(r))) + ") but is forced by `--force`"
		case !slices.Contains(v.Pass, r):
			status = "fails (" + mdtext.Text(VerdictText(v.verdict(r))) + "): stays rejected"
		}
		line := fmt.Sprintf("Root %s (%s from %s, reason %s): %s; %d event(s) rejected after it.", mdtext.Code(r),
			mdtext.Code(c.Root.Type), mdtext.Code(c.Root.Sender), mdtext.Code(c.Root.Reason), status, c.Descendants)
		if c.Log != nil {
			line += fmt.Sprintf(" The logs show %d \"found rejected event … in the state\" line(s) for it.", c.Log.Count)
		}
		changes = append(changes, line)
	}
	if len(v.Fail) > len(v.Forced) {
		var b strings.Builder
		fmt.Fprintf(&b, "Stay rejected (%d): they fail the rules even with the roots accepted.", len(v.Fail)-len(v.Forced))
		writeFailures(&b, v.Fail, 10)
		changes = append(changes, b.String())
	}
	risks := []string{RiskRejectedStays, u.restarter().Text(),
		"Afterwards medic compares the room's state with another server in the room and reports any difference that un-rejecting alone does not fix."}
	if len(v.Forced) > 0 {
		risks = append([]string{"⚠️ **--force**: the root breaks the auth rules. Accepting it may hand someone power they never had, and other servers keep rejecting it, so this server's view of the room splits from theirs. Only do this if you know why the rules are wrong here."}, risks...)
	}
	return &jobs.Plan{
		Title:   fmt.Sprintf("Un-reject %d event(s) in %s", len(unreject), mdtext.Code(room)),
		Why:     "Events in this room were rejected because they cite an event this server rejected, but that event passes the auth rules; until it is un-rejected the room stays silent for local users.",
		Changes: changes,
		Risks:   risks,
		Steps: []string{
			fmt.Sprintf("un-reject %d event(s) of %s (one transaction)", len(unreject), room),
			"restart Synapse",
			"compare the room's state with a remote server",
		},
		Basis: []string{fmt.Sprintf("%d events %s", len(unreject), hex.EncodeToString(sum[:8]))},
		Data:  jobs.Encode(UnrejectData{Events: unreject}),
	}, nil
}

func writeFailures(b *strings.Builder, fails []authcheck.Verdict, limit int) {
	for i, f := range fails {
		if i == limit {
			fmt.Fprintf(b, "\n* … and %d more", len(fails)-limit)
			break
		}
		fmt.Fprintf(b, "\n* %s: %s", mdtext.Code(f.EventID), mdtext.Text(VerdictText(f)))
	}
}

// VerdictText says why an event fails, e.g. "auth rule 8: sender does not have sufficient
// power level to send event (100 > 0)".
func VerdictText(v authcheck.Verdict) string {
	switch v.Rule {
	case "signature", "event id", "parse", "auth":
		return v.Rule + " check failed: " + v.Error
	}
	return "auth rule " + v.Rule + ": " + v.Error
}

func typeList(types map[string]int) string {
	keys := make([]string, 0, len(types))
	for k := range types {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", types[k], mdtext.Code(k))
	}
	return strings.Join(parts, ", ")
}

func (u *Unrejecter) step(ctx context.Context, s *jobs.Step[UnrejectArgs, UnrejectData]) error {
	room, events := s.Args.Room, s.Data.Events
	hold := journal.HoldPoint()
	switch s.Idx {
	case 0:
		jobID := s.Job
		if open, _, err := journal.Count(ctx, u.DB, jobID); err == nil && open > 0 {
			return nil // committed before a restart of medic: the journal is the proof
		}
		n, err := journal.Unreject(ctx, u.DB, jobID, room, events, hold)
		if err != nil {
			return fmt.Errorf("un-reject: %w", err)
		}
		s.Note("Changed %d row(s) in `events` and `rejections` of %s; `!undo %s` restores them.", n, mdtext.Code(room), jobID)
		return nil
	case 1:
		if err := hold.At(ctx, "before restart"); err != nil {
			return err
		}
		return u.restarter().Restart(ctx, s)
	case 2:
		return u.postCheck(ctx, s, room, events)
	}
	return fmt.Errorf("no step %d", s.Idx)
}

// postCheck confirms the events are accepted and compares the room's current state with a
// remote server's state at its latest event.
func (u *Unrejecter) postCheck(ctx context.Context, rep jobs.Reporter, room string, events []string) error {
	if n, err := u.DB.RejectedCount(ctx, room, events); err != nil {
		return err
	} else if n > 0 {
		return fmt.Errorf("%d of the events are rejected again", n)
	}
	local, err := u.DB.CurrentState(ctx, room)
	if err != nil {
		return err
	}
	if u.Federation == nil {
		rep.Note("No federation client: the state was not compared with another server.")
		return nil
	}
	fc, err := u.Federation()
	if err != nil {
		rep.Note("State not compared with another server: %s", mdtext.Text(err.Error()))
		return nil
	}
	servers, err := u.DB.CandidateServers(ctx, room, u.ServerName)
	if err != nil {
		return err
	}
	var tried []string
	for _, server := range servers {
		remote, err := u.remoteState(ctx, fc, server, room)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %s", server, shortErr(err)))
			continue
		}
		diffs := compareState(local, remote)
		if len(diffs) == 0 {
			rep.Note("Post-check: the room's current state matches the state %s has at its latest event (%d entries).", mdtext.Code(server), len(local))
		} else {
			var b strings.Builder
			fmt.Fprintf(&b, "Post-check: %d difference(s) from the state %s has at its latest event, which un-rejecting alone does not fix:", len(diffs), mdtext.Code(server))
			for i, d := range diffs {
				if i == 15 {
					fmt.Fprintf(&b, "\n* … and %d more", len(diffs)-15)
					break
				}
				fmt.Fprintf(&b, "\n* %s", d)
			}
			rep.Note("%s", b.String())
		}
		return nil
	}
	rep.Note("Post-check: no remote server gave the room's state (%s).", mdtext.Text(strings.Join(tried, "; ")))
	return nil
}

// remoteState asks server for the room's state after its latest event, as
// "type\x00state_key" → event ID (the state audit's fetch: diagnose.RemoteState).
func (u *Unrejecter) remoteState(ctx context.Context, fc *federation.Client, server, room string) (map[string]string, error) {
	rv, err := diagnose.RemoteState(ctx, fc, u.DB, server, room)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(rv.State))
	for k, e := range rv.State {
		out[k] = e.EventID
	}
	return out, nil
}

// compareState lists the (type, state key) entries where the local current state and the
// remote state disagree, as Markdown (types, state keys and event IDs as code: remote text).
func compareState(local, remote map[string]string) []string {
	var diffs []string
	for k, rid := range remote {
		lid, ok := local[k]
		typ, sk, _ := strings.Cut(k, "\x00")
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s %s: missing here (remote has %s)", mdtext.Code(typ), mdtext.Code(sk), mdtext.Code(rid)))
		case lid != rid:
			diffs = append(diffs, fmt.Sprintf("%s %s: here %s, remote %s", mdtext.Code(typ), mdtext.Code(sk), mdtext.Code(lid), mdtext.Code(rid)))
		}
	}
	for k, lid := range local {
		if _, ok := remote[k]; !ok {
			typ, sk, _ := strings.Cut(k, "\x00")
			diffs = append(diffs, fmt.Sprintf("%s %s: only here (%s)", mdtext.Code(typ), mdtext.Code(sk), mdtext.Code(lid)))
		}
	}
	slices.Sort(diffs)
	return diffs
}
