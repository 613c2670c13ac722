package recovery

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/authcheck"
	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/synapse"
)

// !unreject verifies every rejected event of a room when it proposes a plan, and again when
// the plan is approved (the approval re-plans to detect drift). The second verification
// repeats the first unless something it depends on changed, so its outcome is kept and reused
// while these inputs are unchanged:
//
//   - the arguments: room, --root, --force;
//   - the room's version and its rejected events as the verification reads them: IDs, type,
//     state key, sender, depth, position, received time, both rejection rows, and the JSON
//     (auth events, content, hashes, signatures) by its row version, in depth order (one
//     digest query; synapse/unreject_digest.go says why the version and not the value);
//   - the events the rejected ones cite that are not rejected (the checker's context): their
//     JSON and rejection status, and which of them exist;
//   - the signing keys Synapse stored for the servers whose signatures the checks use (the
//     chains' senders and servers named by join_authorised_via_users_server), Synapse's own
//     key, and the checker binary (path, size, modification time).
//
// All database inputs are read in one snapshot taken before the verification starts, so any
// change after that moment (even one the verification saw) makes the next lookup miss. A
// verification that fetched keys over federation (a server with none stored) is not kept:
// nothing pins a remote answer.
//
// An entry serves one re-plan (the approval's) and is dropped then, so its memory (~17 MB for
// a 100k-event chain) is not held while the job runs. Entries expire after VerdictTTL
// (jobs.expire_after: no proposal waits longer); at most verdictCacheSize entries and
// verdictCacheEvents rejected events are kept (the newest entry always); a restart of medic
// just verifies again.

const (
	defaultVerdictTTL  = 15 * time.Minute // jobs.expire_after's default
	verdictCacheSize   = 4
	verdictCacheEvents = 200_000
)

// verdictSource reads what a verification depends on, all in one snapshot of Synapse's
// database (*synapse.Snapshot).
type verdictSource interface {
	RejectedDigest(ctx context.Context, room string) (synapse.RejectedDigest, error)
	EventsDigest(ctx context.Context, ids []string) (string, error)
	ServerKeysDigest(ctx context.Context, servers []string) (digest string, stored []string, err error)
	AuthorisingUsers(ctx context.Context, room string) ([]string, error)
	Close()
}

// verdictKey is what an entry is found by: the arguments, the checker and own key, and the
// room's rejected events.
type verdictKey struct {
	room, root string
	force      bool
	env        string // checker binary, Synapse's own key, server name
	version    string // room version
	rejected   string // count and digest of the rejected events
}

type verdictEntry struct {
	key verdictKey
	// contextIDs are the events the verification may read besides the rejected ones (a
	// superset: every chain's citations), keyServers the servers whose keys it may use;
	// side digests both, as of the snapshot.
	contextIDs, keyServers []string
	side                   string
	v                      *Verification
	rr                     *diagnose.RoomRejections
	expires                time.Time
}

// verdictCache keeps recent verifications. The zero value is ready to use.
type verdictCache struct {
	mu           sync.Mutex
	entries      []*verdictEntry
	hits, misses int

	// Tests replace these; nil means the real database, Verify and clock.
	open   func(ctx context.Context) (verdictSource, error)
	verify func(ctx context.Context, room, root string, force bool) (*Verification, *diagnose.RoomRejections, error)
	now    func() time.Time
}

// VerdictCacheStats says how often a plan reused a verification, and how often it verified.
func (u *Unrejecter) VerdictCacheStats() (hits, misses int) {
	u.verdicts.mu.Lock()
	defer u.verdicts.mu.Unlock()
	return u.verdicts.hits, u.verdicts.misses
}

func (c *verdictCache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// sameArgs reports whether an entry was made for the same arguments and environment.
func (k verdictKey) sameArgs(o verdictKey) bool {
	return k.room == o.room && k.root == o.root && k.force == o.force && k.env == o.env
}

// prune drops expired entries; c.mu is held.
func (c *verdictCache) prune(now time.Time) {
	c.entries = slices.DeleteFunc(c.entries, func(e *verdictEntry) bool { return !now.Before(e.expires) })
}

// take removes and returns the live entry for these arguments, if any: whether it matches or
// not, the plan that looks it up verifies afresh next time (and stores that instead).
func (c *verdictCache) take(args verdictKey, now time.Time) *verdictEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(now)
	for i, e := range c.entries {
		if e.key.sameArgs(args) {
			c.entries = slices.Delete(c.entries, i, i+1)
			return e
		}
	}
	return nil
}

// store keeps an entry, replacing the one for the same arguments and evicting the oldest
// beyond the cache's bounds.
func (c *verdictCache) store(e *verdictEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(now)
	c.entries = slices.DeleteFunc(c.entries, func(o *verdictEntry) bool { return o.key.sameArgs(e.key) })
	c.entries = append(c.entries, e)
	events := 0
	for _, o := range c.entries {
		events += o.rr.Total
	}
	for len(c.entries) > 1 && (len(c.entries) > verdictCacheSize || events > verdictCacheEvents) {
		events -= c.entries[0].rr.Total
		c.entries = slices.Delete(c.entries, 0, 1)
	}
}

func (c *verdictCache) count(hit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hit {
		c.hits++
	} else {
		c.misses++
	}
}

// verifyCached is Verify, reusing the verification of the last plan with the same arguments
// (once) when nothing it depends on changed since, and keeping its own for the next plan.
func (u *Unrejecter) verifyCached(ctx context.Context, room, root string, force bool) (*Verification, *diagnose.RoomRejections, error) {
	c := &u.verdicts
	verify := u.Verify
	if c.verify != nil {
		verify = c.verify
	}
	var src verdictSource
	var err error
	switch {
	case c.open != nil:
		src, err = c.open(ctx)
	case u.DB != nil:
		var snap *synapse.Snapshot
		if snap, err = u.DB.Snapshot(ctx); err == nil {
			src = snap
		}
	default:
		return verify(ctx, room, root, force) // it says what is missing
	}
	if err != nil {
		return verify(ctx, room, root, force) // the cache is an optimisation, never a reason to fail
	}
	defer src.Close()

	now := c.clock()
	args := verdictKey{room: room, root: root, force: force, env: u.verdictEnv()}
	key, keyErr := args, error(nil)
	readKey := func(ctx context.Context) {
		d, err := src.RejectedDigest(ctx, room)
		key.version, key.rejected, keyErr = d.RoomVersion, fmt.Sprintf("%d:%s", d.Count, d.Digest), err
	}
	keyDone := make(chan struct{})
	if e := c.take(args, now); e != nil {
		readKey(ctx)
		close(keyDone)
		if keyErr == nil && e.key == key {
			side, ok, err := u.verdictSide(ctx, src, e.rr, e.contextIDs, e.keyServers)
			if err == nil && ok && side == e.side {
				c.count(true)
				return e.v, e.rr, nil
			}
		}
	} else {
		// Nothing to reuse: digest the rejected events in the snapshot (taken above, so as of
		// now) while the verification runs.
		keyCtx, cancel := context.WithCancel(ctx)
		go func() {
			defer close(keyDone)
			readKey(keyCtx)
		}()
		defer func() { cancel(); <-keyDone }()
	}
	c.count(false)
	v, rr, err := verify(ctx, room, root, force)
	if err != nil {
		return v, rr, err
	}
	<-keyDone
	if keyErr != nil || u.verdictEnv() != args.env {
		return v, rr, nil
	}
	ids := contextCandidates(rr, room)
	servers, err := u.keyServers(ctx, src, rr, room)
	if err != nil {
		return v, rr, nil
	}
	side, ok, err := u.verdictSide(ctx, src, rr, ids, servers)
	if err != nil || !ok {
		return v, rr, nil
	}
	ttl := u.VerdictTTL
	if ttl <= 0 {
		ttl = defaultVerdictTTL
	}
	c.store(&verdictEntry{key: key, contextIDs: ids, keyServers: servers, side: side, v: v, rr: rr, expires: now.Add(ttl)}, now)
	return v, rr, nil
}

// verdictEnv identifies what the verification depends on outside the database: the checker
// binary, Synapse's own signing key and the server name.
func (u *Unrejecter) verdictEnv() string {
	var b strings.Builder
	if path, err := authcheck.Find(u.Checker); err != nil {
		fmt.Fprintf(&b, "checker: %v", err)
	} else if fi, err := os.Stat(path); err != nil {
		fmt.Fprintf(&b, "checker: %v", err)
	} else {
		fmt.Fprintf(&b, "checker %s %d %d", path, fi.Size(), fi.ModTime().UnixNano())
	}
	if u.OwnKey != nil {
		if k, err := u.OwnKey(); err != nil {
			fmt.Fprintf(&b, "|own key: %v", err)
		} else {
			fmt.Fprintf(&b, "|own key %s %s", k.ID, k.Pub)
		}
	}
	b.WriteString("|" + u.ServerName)
	return b.String()
}

// contextCandidates lists the events a verification of rr may read besides the rejected
// ones: everything any chain cites, and the create event of a room whose create event ID is
// the room ID (v12). A superset of Verify's context (which leaves out the rejected ones; their
// rows are in the rejected events' digest anyway), sorted.
func contextCandidates(rr *diagnose.RoomRejections, room string) []string {
	set := map[string]bool{"$" + strings.TrimPrefix(room, "!"): true}
	for _, c := range rr.Chains {
		for a := range c.Cites {
			set[a] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// chainServers lists the servers that sent the chains' events (their keys are the ones
// Verify fetches over federation when Synapse has none).
func chainServers(rr *diagnose.RoomRejections) []string {
	set := map[string]bool{}
	for _, c := range rr.Chains {
		for s := range c.Servers {
			set[s] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// keyServers lists the servers whose keys the checks may use: the chains' senders, the
// servers named by join_authorised_via_users_server, and this server.
func (u *Unrejecter) keyServers(ctx context.Context, src verdictSource, rr *diagnose.RoomRejections, room string) ([]string, error) {
	users, err := src.AuthorisingUsers(ctx, room)
	if err != nil {
		return nil, err
	}
	servers := append(chainServers(rr), u.ServerName)
	for _, user := range users {
		servers = append(servers, id.UserID(user).Homeserver())
	}
	slices.Sort(servers)
	return slices.Compact(servers), nil
}

// verdictSide digests the context events and the servers' stored keys. ok is false when the
// verification would have fetched a key over federation (a chain's sender with no key stored):
// such an outcome is not reused.
func (u *Unrejecter) verdictSide(ctx context.Context, src verdictSource, rr *diagnose.RoomRejections, ids, servers []string) (digest string, ok bool, err error) {
	events, err := src.EventsDigest(ctx, ids)
	if err != nil {
		return "", false, err
	}
	keys, stored, err := src.ServerKeysDigest(ctx, servers)
	if err != nil {
		return "", false, err
	}
	if u.Federation != nil {
		for _, s := range chainServers(rr) {
			if !slices.Contains(stored, s) && !(s == u.ServerName && u.OwnKey != nil) {
				return "", false, nil
			}
		}
	}
	return events + "|" + keys, true, nil
}
