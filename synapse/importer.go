package synapse

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix/crypto/canonicaljson"
)

// Importer copies a room's history that this server lacks from another Synapse's database
// into this one, the way Synapse stores backfilled events (storage/databases/main/events.py
// _persist_events_txn): negative stream orderings from events_backfill_stream_seq so nothing
// comes down incremental /sync, topological_ordering = depth, room_depth.min_depth lowered,
// and the state at each event copied as state groups with this database's own ids.
//
// One Importer serves one job: Plan, then Run and Import chunk by chunk (two write at once).
// It caches the two databases' state-group graphs between chunks, so after a failed chunk it
// is spent: Close it and open another, which reads what was committed.
type Importer struct {
	DB     *DB
	Src    *Source
	RoomID string

	instance      string
	hasChainIndex bool

	srcGraph *StateGraph
	srcFull  map[int64]stateMap
	// srcToTgt maps source state groups to the target groups holding the same state.
	srcToTgt map[int64]int64
	// tgtByHash finds target groups of the room by the hash of their full state.
	tgtByHash map[string]int64
	tgtFull   map[int64]stateMap

	// The run: set by Run, used by Import.
	jobID, actor string
	chunks       []EventKey
	crash        CrashPoint
	runLock      sync.Mutex
	running      map[int]*inflight
	tail         *inflight // the chunk started last: the next one's predecessor
	wg           sync.WaitGroup
	runCtx       context.Context
	abort        context.CancelFunc // cancels runCtx: the chunks under way (Abort)

	// prefetched holds source reads of coming chunks, started while an earlier chunk writes.
	prefetchLock sync.Mutex
	prefetched   map[[2]EventKey]chan *sourceChunk
}

// sourceChunk is what the source holds for one chunk's key range.
type sourceChunk struct {
	events []SourceEvent
	extra  *EventRows
	// inSource are the prev events of the range's events that the source has in its timeline.
	inSource map[string]bool
	// search and meta are derived from the events' JSON here, off the write path: parsing
	// every event for its search text inside the chunk's transaction left the database idle.
	existing map[string]bool // event ID → outlier, of the events the target has
	search   map[string]searchRow
	meta     map[string]string // event ID → cleaned internal_metadata
	err      error
}

// readChunk reads a key range from the source: events, their other rows, and which of their
// prev events the source has (so are imported by some chunk of this job).
func (im *Importer) readChunk(ctx context.Context, lo, hi EventKey) *sourceChunk {
	sc := &sourceChunk{}
	if sc.events, sc.err = im.Src.EventsInRange(ctx, im.RoomID, lo, hi); sc.err != nil {
		return sc
	}
	if sc.extra, sc.err = im.Src.RowsFor(ctx, idsOf(sc.events)); sc.err != nil {
		return sc
	}
	prevs := make([]string, 0, len(sc.extra.Edges))
	for _, e := range sc.extra.Edges {
		prevs = append(prevs, e.PrevID)
	}
	slices.Sort(prevs)
	if sc.inSource, sc.err = im.Src.NonOutliers(ctx, slices.Compact(prevs)); sc.err != nil {
		return sc
	}
	// Which of them this server has, and which only as outliers. Should Synapse backfill one
	// of them before the chunk commits, the chunk's insert fails on the duplicate and writes
	// nothing; a resumed job reads the range afresh.
	if sc.existing, sc.err = im.existing(ctx, idsOf(sc.events)); sc.err != nil {
		return sc
	}
	sc.search, sc.meta = map[string]searchRow{}, make(map[string]string, len(sc.events))
	for _, e := range sc.events {
		sc.meta[e.EventID] = cleanMetadata(e.InternalMeta)
		key, ok := searchKeys[e.Type]
		if !ok {
			continue
		}
		// Stemming is most of an import's database time, and parsing every message most of
		// medic's: take the vector a PostgreSQL source's Synapse already computed (the same
		// to_tsvector('english', …)) and parse only events it has none for.
		if vec, ok := sc.extra.Vectors[[2]string{e.EventID, key}]; ok {
			sc.search[e.EventID] = searchRow{key: key, vector: &vec}
		} else if text, ok := searchText(key, e.JSON); ok {
			sc.search[e.EventID] = searchRow{key: key, text: &text}
		}
	}
	return sc
}

// existing returns which of ids the target has, with whether each is an outlier there.
func (im *Importer) existing(ctx context.Context, ids []string) (map[string]bool, error) {
	return im.outliers(ctx, "look up events", importExistingQuery, ids)
}

// prefetch starts reading a chunk's key range from the source in the background, so the
// source read of the next chunk overlaps the writes of this one.
func (im *Importer) prefetch(ctx context.Context, i int) {
	lo, hi := ChunkRange(im.chunks, i)
	im.prefetchLock.Lock()
	defer im.prefetchLock.Unlock()
	if im.prefetched == nil {
		im.prefetched = map[[2]EventKey]chan *sourceChunk{}
	}
	key := [2]EventKey{lo, hi}
	if _, ok := im.prefetched[key]; ok {
		return
	}
	ch := make(chan *sourceChunk, 1)
	im.prefetched[key] = ch
	go func() { ch <- im.readChunk(context.WithoutCancel(ctx), lo, hi) }()
}

func (im *Importer) source(ctx context.Context, lo, hi EventKey) *sourceChunk {
	im.prefetchLock.Lock()
	key := [2]EventKey{lo, hi}
	ch, ok := im.prefetched[key]
	delete(im.prefetched, key)
	im.prefetchLock.Unlock()
	if ok {
		return <-ch
	}
	return im.readChunk(ctx, lo, hi)
}

type stateMap map[[2]string]string

func (s stateMap) hash() string {
	keys := make([][2]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", k[0], k[1], s[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ImportPlan is what an import would do, computed without changing anything.
type ImportPlan struct {
	RoomVersion string
	// New are events the target lacks; ExOutliers are events the target has only as outliers
	// (e.g. the state it got when it joined), which become part of the timeline as Synapse's
	// _update_outliers_txn does.
	New, ExOutliers, Outliers int
	Bytes                     int64
	FirstTS, LastTS           int64
	Types                     map[string]int
	// Conflicts are events both databases have with different content: left as they are.
	Conflicts []string
	// Chunks are the upper bounds (inclusive, newest first) of the chunks' key ranges; a
	// chunk ends where the next one begins.
	Chunks []EventKey
}

// ChunkResult counts what one chunk wrote.
type ChunkResult struct {
	Events, ExOutliers, StateGroups, DedupedGroups int
	Rows                                           map[string]int
}

// NewImporter opens an import of roomID from src into db.
func NewImporter(ctx context.Context, db *DB, src *Source, roomID string) (*Importer, error) {
	im := &Importer{DB: db, Src: src, RoomID: roomID}
	var hasIndex *bool
	err := db.Pool.QueryRow(ctx, importTargetRoomQuery, roomID).Scan(&hasIndex)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("this server does not know room %s: a local user must join it first, so Synapse has its current state", roomID)
	} else if err != nil {
		return nil, fmt.Errorf("read room %s: %w", roomID, err)
	}
	im.hasChainIndex = hasIndex != nil && *hasIndex
	if err = db.Pool.QueryRow(ctx, importInstanceQuery).Scan(&im.instance); err != nil {
		return nil, fmt.Errorf("read Synapse's instance name: %w", err)
	}
	return im, nil
}

// Plan lists the room's events in the source that the target lacks, in chunks.
func (im *Importer) Plan(ctx context.Context, chunkSize int) (*ImportPlan, error) {
	var tgtVersion string
	if err := im.DB.Pool.QueryRow(ctx, importRoomVersionQuery, im.RoomID).Scan(&tgtVersion); err != nil {
		return nil, fmt.Errorf("read room version: %w", err)
	}
	srcVersion, err := im.Src.RoomVersion(ctx, im.RoomID)
	if err != nil {
		return nil, err
	}
	if srcVersion == "" {
		return nil, fmt.Errorf("the import source does not know room %s", im.RoomID)
	}
	if srcVersion != tgtVersion {
		return nil, fmt.Errorf("room %s has version %s in the source but %s here", im.RoomID, srcVersion, tgtVersion)
	}
	srcEvents, err := im.Src.RoomEvents(ctx, im.RoomID)
	if err != nil {
		return nil, err
	}
	have, err := im.targetEvents(ctx)
	if err != nil {
		return nil, err
	}
	plan := &ImportPlan{RoomVersion: srcVersion, Types: map[string]int{}}
	var shared []string
	var work []SourceEventInfo
	for _, e := range srcEvents {
		outlier, ok := have[e.EventID]
		if ok {
			shared = append(shared, e.EventID)
			if outlier && !e.Outlier {
				work = append(work, e)
			}
			continue
		}
		work = append(work, e)
	}
	conflicts, err := im.conflicts(ctx, shared)
	if err != nil {
		return nil, err
	}
	for _, e := range work {
		if conflicts[e.EventID] {
			continue
		}
		if _, ok := have[e.EventID]; ok {
			plan.ExOutliers++
		} else {
			plan.New++
			plan.Bytes += e.Size
			plan.Types[e.Type]++
			if e.Outlier {
				plan.Outliers++
			}
			if plan.FirstTS == 0 || e.TS < plan.FirstTS {
				plan.FirstTS = e.TS
			}
			plan.LastTS = max(plan.LastTS, e.TS)
		}
		if (plan.New+plan.ExOutliers-1)%chunkSize == 0 {
			plan.Chunks = append(plan.Chunks, e.Key)
		}
	}
	for id := range conflicts {
		plan.Conflicts = append(plan.Conflicts, id)
	}
	slices.Sort(plan.Conflicts)
	return plan, nil
}

// ChunkRange returns the key range (lo, hi] of chunk i of plan chunks.
func ChunkRange(chunks []EventKey, i int) (lo, hi EventKey) {
	hi = chunks[i]
	lo = EventKey{Depth: math.MinInt64, Stream: math.MinInt64}
	if i+1 < len(chunks) {
		lo = chunks[i+1]
	}
	return lo, hi
}

func (im *Importer) targetEvents(ctx context.Context) (map[string]bool, error) {
	return im.outliers(ctx, "list the room's events", importTargetEventsQuery, im.RoomID)
}

// outliers runs a query for (event_id, outlier) rows on the target: event → outlier.
func (im *Importer) outliers(ctx context.Context, what, query string, args ...any) (map[string]bool, error) {
	rows, err := im.DB.Pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out := map[string]bool{}
	var id string
	var outlier bool
	if _, err = pgx.ForEachRow(rows, []any{&id, &outlier}, func() error {
		out[id] = outlier
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// eventIdentity is what two copies of one event must agree on: the content hash covers the
// full content; the rest are the fields the event ID's reference hash covers that a
// tampered copy would most likely differ in.
type eventIdentity struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Sender   string          `json:"sender"`
	Depth    int64           `json:"depth"`
	Hashes   json.RawMessage `json:"hashes"`
	Prev     json.RawMessage `json:"prev_events"`
	Auth     json.RawMessage `json:"auth_events"`
	RoomID   string          `json:"room_id"`
}

// identity returns what two copies of an event must agree on, and whether the copy's content
// still matches its own content hash (a copy edited in the database does not).
func identity(js string) (string, bool, error) {
	var id eventIdentity
	if err := json.Unmarshal([]byte(js), &id); err != nil {
		return "", false, err
	}
	out, _ := json.Marshal(id)
	return string(out), contentHashMatches(js), nil
}

// contentHashMatches checks an event's hashes.sha256: the unpadded base64 SHA-256 of its
// canonical JSON without unsigned, signatures and hashes (the spec's content hash).
func contentHashMatches(js string) bool {
	var ev map[string]json.RawMessage
	if json.Unmarshal([]byte(js), &ev) != nil {
		return false
	}
	var hashes struct {
		SHA256 string `json:"sha256"`
	}
	if json.Unmarshal(ev["hashes"], &hashes) != nil || hashes.SHA256 == "" {
		return false
	}
	delete(ev, "unsigned")
	delete(ev, "signatures")
	delete(ev, "hashes")
	raw, err := json.Marshal(ev)
	if err != nil {
		return false
	}
	canonical, err := canonicaljson.CanonicalJSON(raw)
	if err != nil {
		return false
	}
	sum := sha256.Sum256(canonical)
	return base64.RawStdEncoding.EncodeToString(sum[:]) == strings.TrimRight(hashes.SHA256, "=")
}

// conflicts returns the shared events whose copies differ.
func (im *Importer) conflicts(ctx context.Context, shared []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(shared) == 0 {
		return out, nil
	}
	srcJSON, err := im.Src.EventJSON(ctx, shared)
	if err != nil {
		return nil, err
	}
	rows, err := im.DB.Pool.Query(ctx, importTargetJSONQuery, shared)
	if err != nil {
		return nil, fmt.Errorf("read event JSON: %w", err)
	}
	var id, js string
	_, err = pgx.ForEachRow(rows, []any{&id, &js}, func() error {
		a, okA, errA := identity(js)
		b, okB, errB := identity(srcJSON[id])
		// A copy whose content no longer matches its hash differs from the event its ID
		// names, unless both copies fail alike (e.g. both censored after a redaction).
		if errA != nil || errB != nil || a != b || okA != okB {
			out[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("compare events: %w", err)
	}
	return out, nil
}

// loadGraphs reads both databases' state groups of the room (once per Importer).
func (im *Importer) loadGraphs(ctx context.Context) error {
	if im.srcGraph != nil {
		return nil
	}
	g, err := im.Src.StateGroups(ctx, im.RoomID)
	if err != nil {
		return err
	}
	tg, err := im.targetStateGroups(ctx)
	if err != nil {
		return err
	}
	im.tgtFull = map[int64]stateMap{}
	im.tgtByHash = map[string]int64{}
	for sg := range tg.Event {
		full, err := fullState(tg, sg, im.tgtFull)
		if err != nil {
			return fmt.Errorf("target state group %d: %w", sg, err)
		}
		h := full.hash()
		if old, ok := im.tgtByHash[h]; !ok || sg < old {
			im.tgtByHash[h] = sg
		}
	}
	im.srcGraph, im.srcFull, im.srcToTgt = g, map[int64]stateMap{}, map[int64]int64{}
	return nil
}

func (im *Importer) targetStateGroups(ctx context.Context) (*StateGraph, error) {
	g := &StateGraph{Event: map[int64]string{}, Parent: map[int64]int64{}, Delta: map[int64][]StateEntry{}}
	rows, err := im.DB.Pool.Query(ctx, importTargetStateGroupsQuery, im.RoomID)
	if err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	var sg, prev int64
	var ev string
	var prevNull *int64
	if _, err = pgx.ForEachRow(rows, []any{&sg, &ev, &prevNull}, func() error {
		g.Event[sg] = ev
		if prevNull != nil {
			g.Parent[sg] = *prevNull
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	ids := make([]int64, 0, len(g.Event))
	for id := range g.Event {
		ids = append(ids, id)
	}
	rows, err = im.DB.Pool.Query(ctx, importTargetDeltasQuery, ids)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var e StateEntry
	if _, err = pgx.ForEachRow(rows, []any{&sg, &e.Type, &e.StateKey, &e.EventID}, func() error {
		g.Delta[sg] = append(g.Delta[sg], e)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	_ = prev
	return g, nil
}

// fullState resolves a state group's full state from its delta chain (memoised).
func fullState(g *StateGraph, sg int64, memo map[int64]stateMap) (stateMap, error) {
	if s, ok := memo[sg]; ok {
		return s, nil
	}
	var chain []int64
	for cur := sg; ; {
		if _, ok := memo[cur]; ok {
			break
		}
		if _, ok := g.Event[cur]; !ok {
			return nil, fmt.Errorf("state group %d is missing", cur)
		}
		chain = append(chain, cur)
		p, ok := g.Parent[cur]
		if !ok {
			break
		}
		cur = p
		if len(chain) > 100000 {
			return nil, errors.New("state group chain loops")
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		cur := chain[i]
		s := stateMap{}
		if p, ok := g.Parent[cur]; ok {
			for k, v := range memo[p] {
				s[k] = v
			}
		}
		for _, e := range g.Delta[cur] {
			s[[2]string{e.Type, e.StateKey}] = e.EventID
		}
		memo[cur] = s
	}
	return memo[sg], nil
}

// newGroup is a state group to create in the target.
type newGroup struct {
	id, parent int64 // parent 0: a full snapshot
	event      string
	rows       stateMap
	hash       string
	src        int64
}

// mapGroups maps the source groups to target groups, planning new ones (with ids from the
// target's sequence, in tx) where no target group holds the same state.
func (im *Importer) mapGroups(ctx context.Context, tx pgx.Tx, groups []int64) (map[int64]int64, []newGroup, int, error) {
	mapping := map[int64]int64{}
	var created []newGroup
	deduped := 0
	// Every ancestor's deltas are needed to resolve full states.
	var load []int64
	seen := map[int64]bool{}
	for _, sg := range groups {
		for cur := sg; !seen[cur]; {
			seen[cur] = true
			if _, ok := im.srcFull[cur]; !ok {
				if _, ok := im.srcGraph.Delta[cur]; !ok {
					load = append(load, cur)
				}
			}
			p, ok := im.srcGraph.Parent[cur]
			if !ok {
				break
			}
			cur = p
		}
	}
	if len(load) > 0 {
		if err := im.Src.LoadDeltas(ctx, im.srcGraph, load); err != nil {
			return nil, nil, 0, err
		}
	}
	localByHash := map[string]int64{}
	var resolve func(sg int64) (int64, error)
	resolve = func(sg int64) (int64, error) {
		if t, ok := im.srcToTgt[sg]; ok {
			return t, nil
		}
		if t, ok := mapping[sg]; ok {
			return t, nil
		}
		full, err := fullState(im.srcGraph, sg, im.srcFull)
		if err != nil {
			return 0, fmt.Errorf("source state group %d: %w", sg, err)
		}
		h := full.hash()
		if t, ok := im.tgtByHash[h]; ok {
			mapping[sg] = t
			deduped++
			return t, nil
		}
		if t, ok := localByHash[h]; ok {
			mapping[sg] = t
			deduped++
			return t, nil
		}
		ng := newGroup{event: im.srcGraph.Event[sg], hash: h, src: sg, rows: full}
		if p, ok := im.srcGraph.Parent[sg]; ok {
			tp, err := resolve(p)
			if err != nil {
				return 0, err
			}
			parentState := im.tgtFull[tp]
			if parentState == nil {
				parentState = im.srcFull[p]
			}
			// A delta on the parent's group works when the state only adds or replaces.
			delta, ok := stateMap{}, true
			for k := range parentState {
				if _, has := full[k]; !has {
					ok = false
				}
			}
			if ok {
				for k, v := range full {
					if parentState[k] != v {
						delta[k] = v
					}
				}
				ng.parent, ng.rows = tp, delta
			}
		}
		if err := tx.QueryRow(ctx, importNextStateGroupQuery).Scan(&ng.id); err != nil {
			return 0, fmt.Errorf("allocate a state group id: %w", err)
		}
		mapping[sg] = ng.id
		localByHash[h] = ng.id
		created = append(created, ng)
		return ng.id, nil
	}
	for _, sg := range groups {
		if _, err := resolve(sg); err != nil {
			return nil, nil, 0, err
		}
	}
	return mapping, created, deduped, nil
}

// localOnlyMetadata are internal_metadata keys that describe how the source server itself
// handled an event (its client transaction, access token, device): meaningless here.
var localOnlyMetadata = []string{"txn_id", "token_id", "device_id", "stream_ordering", "instance_name",
	"send_on_behalf_of", "proactively_send", "delay_id"}

func cleanMetadata(raw string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(raw), &m) != nil {
		return "{}"
	}
	for _, k := range localOnlyMetadata {
		delete(m, k)
	}
	out, _ := json.Marshal(m)
	return string(out)
}

type searchContent struct {
	Body  any `json:"body"`
	Name  any `json:"name"`
	Topic any `json:"topic"`
}

// searchKeys are the event types Synapse's _store_room_{message,name,topic}_txn index, with
// the content field each indexes.
var searchKeys = map[string]string{"m.room.message": "content.body", "m.room.name": "content.name", "m.room.topic": "content.topic"}

// searchText is the text Synapse indexes under key for an event: the field, if a string.
func searchText(key, js string) (string, bool) {
	var ev struct {
		Content searchContent `json:"content"`
	}
	if json.Unmarshal([]byte(js), &ev) != nil {
		return "", false
	}
	var v any
	switch key {
	case "content.body":
		v = ev.Content.Body
	case "content.name":
		v = ev.Content.Name
	case "content.topic":
		v = ev.Content.Topic
	}
	s, isStr := v.(string)
	if !isStr {
		return "", false
	}
	return strings.ReplaceAll(s, "\x00", " "), true
}

// searchRow is an event's event_search row to write: the source's vector, or the text to
// compute one from.
type searchRow struct {
	key          string
	text, vector *string
}

// inflight is one chunk under way, in its own goroutine and transaction. Two chunks run at a
// time so that one's writes overlap the other's (a PostgreSQL connection works on one core,
// and it idles while medic reads and prepares); gates keep the rest in chunk order.
type inflight struct {
	idx  int
	prev *inflight
	// prepped closes once the chunk has mapped its state groups and taken its stream
	// orderings: the next chunk dedups against those groups and takes lower orderings.
	prepped    chan struct{}
	prepClosed bool
	// done closes once the chunk has committed or failed. The next chunk touches rows that
	// chunks share (room_depth, backward extremities) and commits only after it, and fails
	// if it failed: its state groups may build on this chunk's.
	done chan struct{}
	res  *ChunkResult
	err  error
}

// Run sets the importer up to import chunks (a plan's Chunks) under jobID. crash, if set, is
// called at points inside each chunk's transaction, named "chunk N: <point>" (N from 1).
func (im *Importer) Run(jobID, actor string, chunks []EventKey, crash CrashPoint) {
	im.jobID, im.actor, im.chunks, im.crash = jobID, actor, chunks, crash
}

// Import imports chunk i (from 0), committed when it returns. Chunk i+1 starts alongside in
// its own transaction and commits after chunk i. After a failure the importer is spent (its
// state-group caches may hold groups that were rolled back): Close it and open another.
func (im *Importer) Import(ctx context.Context, i int) (*ChunkResult, error) {
	if i < 0 || i >= len(im.chunks) {
		return nil, fmt.Errorf("the plan has no chunk %d", i+1)
	}
	// Before chunks start two at a time: creating the journal's schema concurrently races.
	if err := im.DB.EnsureJournal(ctx); err != nil {
		return nil, err
	}
	c := im.start(ctx, i)
	if i+1 < len(im.chunks) {
		im.start(ctx, i+1)
	}
	<-c.done
	im.runLock.Lock()
	delete(im.running, i)
	im.runLock.Unlock()
	return c.res, c.err
}

// crashAt is the run's crash point for chunk i, its points prefixed "chunk N: ".
func (im *Importer) crashAt(i int) CrashPoint {
	if im.crash == nil {
		return nil
	}
	return func(ctx context.Context, tx pgx.Tx, point string) error {
		return im.crash(ctx, tx, fmt.Sprintf("chunk %d: %s", i+1, point))
	}
}

// Close waits for the chunks under way and closes the source.
func (im *Importer) Close() {
	im.wg.Wait()
	im.Src.Close()
}

// Abort rolls back the chunks under way (a chunk started beside the last one imported would
// otherwise commit on its own), waits for them, and closes the source.
func (im *Importer) Abort() {
	im.runLock.Lock()
	if im.abort != nil {
		im.abort()
	}
	im.runLock.Unlock()
	im.Close()
}

func (im *Importer) start(ctx context.Context, i int) *inflight {
	im.runLock.Lock()
	defer im.runLock.Unlock()
	if c := im.running[i]; c != nil {
		return c
	}
	c := &inflight{idx: i, prev: im.tail, prepped: make(chan struct{}), done: make(chan struct{})}
	if im.running == nil {
		im.running = map[int]*inflight{}
		// The chunks outlive the call that starts them: they run under the first caller's
		// context (a job's run), and Abort can cancel them.
		ctx, im.abort = context.WithCancel(ctx)
		im.runCtx = ctx
	}
	ctx = im.runCtx
	im.running[i], im.tail = c, c
	im.wg.Add(1)
	go func() {
		defer im.wg.Done()
		im.write(ctx, c)
	}()
	return c
}

// prevFailed reports whether the previous chunk failed; with wait, it waits for it to end.
func (c *inflight) prevFailed(wait bool) error {
	if c.prev == nil {
		return nil
	}
	if wait {
		<-c.prev.done
	} else {
		select {
		case <-c.prev.done:
		default:
			return nil
		}
	}
	if c.prev.err != nil {
		return fmt.Errorf("chunk %d failed, so chunk %d (which may build on its state groups) was rolled back too", c.prev.idx+1, c.idx+1)
	}
	return nil
}

// prepDone opens c's first gate, after the previous chunk's.
func (c *inflight) prepDone() {
	if c.prepClosed {
		return
	}
	if c.prev != nil {
		<-c.prev.prepped
	}
	c.prepClosed = true
	close(c.prepped)
}

// write imports chunk c: the room's events in its key range that the target lacks, in one
// transaction with the journal of every inserted row.
func (im *Importer) write(ctx context.Context, c *inflight) {
	res := &ChunkResult{Rows: map[string]int{}}
	var err error
	defer func() {
		c.prepDone()
		if c.prev != nil {
			<-c.prev.done
		}
		c.res, c.err = res, err
		close(c.done)
	}()
	crash := im.crashAt(c.idx)
	lo, hi := ChunkRange(im.chunks, c.idx)
	if c.idx+1 < len(im.chunks) {
		im.prefetch(ctx, c.idx+1)
	}
	sc := im.source(ctx, lo, hi)
	if err = sc.err; err != nil {
		return
	}
	srcEvents, existing := sc.events, sc.existing
	var newEvents, exOutliers []SourceEvent
	var sharedIDs []string
	for _, e := range srcEvents {
		if e.StateGroup == nil {
			// Without the state at it, Synapse cannot judge who may see a timeline event
			// ("No state group for unknown or outlier event"): keep it an outlier.
			e.Outlier = true
		}
		tgtOutlier, ok := existing[e.EventID]
		switch {
		case !ok:
			newEvents = append(newEvents, e)
		case tgtOutlier && !e.Outlier:
			exOutliers = append(exOutliers, e)
			sharedIDs = append(sharedIDs, e.EventID)
		}
	}
	if len(sharedIDs) > 0 {
		var conflicts map[string]bool
		if conflicts, err = im.conflicts(ctx, sharedIDs); err != nil {
			return
		}
		exOutliers = slices.DeleteFunc(exOutliers, func(e SourceEvent) bool { return conflicts[e.EventID] })
	}
	if len(newEvents) == 0 && len(exOutliers) == 0 {
		return
	}
	newIDs := make([]string, len(newEvents))
	for i, e := range newEvents {
		newIDs[i] = e.EventID
	}
	timelineIDs := make([]string, 0, len(newEvents)+len(exOutliers))
	var groups []int64
	for _, e := range slices.Concat(newEvents, exOutliers) {
		if !e.Outlier {
			timelineIDs = append(timelineIDs, e.EventID)
		}
		if e.StateGroup != nil && !e.Outlier {
			groups = append(groups, *e.StateGroup)
		}
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	extra := sc.extra
	// Prev events that are neither here nor in the source (so no later chunk brings them)
	// become backward extremities, as in Synapse's _update_backward_extremeties.
	timeline := map[string]bool{}
	for _, id := range timelineIDs {
		timeline[id] = true
	}
	var prevs []string
	for _, e := range extra.Edges {
		if timeline[e.EventID] {
			prevs = append(prevs, e.PrevID)
		}
	}
	slices.Sort(prevs)
	prevs = slices.Compact(prevs)
	prevs = slices.DeleteFunc(prevs, func(p string) bool { return sc.inSource[p] })

	err = im.DB.InJournaledTx(ctx, im.jobID, im.actor, func(j *JournalTx) error {
		tx := j.Tx
		if c.prev != nil {
			<-c.prev.prepped
		}
		if err := im.loadGraphs(ctx); err != nil {
			return err
		}
		mapping, created, deduped, err := im.mapGroups(ctx, tx, groups)
		if err != nil {
			return err
		}
		// The next chunk maps its groups against these at once, before this one commits;
		// should this one fail, that one fails too.
		for src, tgt := range mapping {
			im.srcToTgt[src] = tgt
		}
		for _, g := range created {
			im.tgtByHash[g.hash] = g.id
			im.tgtFull[g.id] = im.srcFull[g.src]
		}
		res.StateGroups, res.DedupedGroups = len(created), deduped
		// Stream orderings from the backfill sequence, newest event first (so the newest
		// gets the highest, i.e. least negative, one, as repeated backfill does).
		all := slices.Concat(newEvents, exOutliers)
		slices.SortFunc(all, func(a, b SourceEvent) int {
			return cmp.Or(cmp.Compare(b.Key.Depth, a.Key.Depth), cmp.Compare(b.Key.Stream, a.Key.Stream))
		})
		seqRows, err := tx.Query(ctx, importBackfillSeqQuery, len(all))
		if err != nil {
			return fmt.Errorf("allocate stream orderings: %w", err)
		}
		seq, err := pgx.CollectRows(seqRows, pgx.RowTo[int64])
		if err != nil {
			return fmt.Errorf("allocate stream orderings: %w", err)
		}
		slices.Sort(seq) // ascending nextval: -1, -2, … sorted → most negative first
		stream := map[string]int64{}
		for i, e := range all {
			stream[e.EventID] = seq[len(seq)-1-i]
		}
		c.prepDone()
		if err := c.prevFailed(false); err != nil {
			return err // no point writing a chunk that must roll back
		}
		var byEvent []string
		byEventRows := map[string]int{}
		copyRows := func(table string, cols []string, rows [][]any, match map[string]any, volatile bool) error {
			if len(rows) == 0 && !volatile {
				return nil
			}
			n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows))
			if err != nil {
				return fmt.Errorf("copy into %s: %w", table, err)
			}
			res.Rows[table] += int(n)
			if match == nil {
				// Rows of the new events: journaled together, by their event IDs, at the end.
				byEvent = append(byEvent, table)
				byEventRows[table] = int(n)
			} else if err = j.Inserted(ctx, Inserted{Table: table, Match: match, Rows: int(n), Volatile: volatile}); err != nil {
				return err
			}
			return crash.at(ctx, tx, "after copying "+table)
		}
		// State groups (Synapse's state store persists them before the events).
		var sgRows, edgeRows, stateRows [][]any
		var sgIDs []int64
		for _, g := range created {
			sgIDs = append(sgIDs, g.id)
			sgRows = append(sgRows, []any{g.id, im.RoomID, g.event})
			if g.parent != 0 {
				edgeRows = append(edgeRows, []any{g.id, g.parent})
			}
			for k, ev := range g.rows {
				stateRows = append(stateRows, []any{g.id, im.RoomID, k[0], k[1], ev})
			}
		}
		sgMatch := map[string]any{"state_group": sgIDs}
		if len(sgRows) > 0 {
			n, err := tx.CopyFrom(ctx, pgx.Identifier{"state_groups"}, []string{"id", "room_id", "event_id"}, pgx.CopyFromRows(sgRows))
			if err != nil {
				return fmt.Errorf("copy into state_groups: %w", err)
			}
			res.Rows["state_groups"] += int(n)
			// Synapse may later store a group as a delta on one of these, or file an event
			// under one: undo must not delete them from under it.
			if err = j.Inserted(ctx, Inserted{Table: "state_groups", Match: map[string]any{"id": sgIDs}, Rows: int(n),
				Refs: []string{"state_group_edges.prev_state_group", "state_group_edges.state_group",
					"event_to_state_groups.state_group", "state_groups_state.state_group"}}); err != nil {
				return err
			}
			if err = crash.at(ctx, tx, "after copying state_groups"); err != nil {
				return err
			}
		}
		if err = copyRows("state_group_edges", []string{"state_group", "prev_state_group"}, edgeRows, sgMatch, false); err != nil {
			return err
		}
		if err = copyRows("state_groups_state", []string{"state_group", "room_id", "type", "state_key", "event_id"}, stateRows, sgMatch, false); err != nil {
			return err
		}
		// event_json, events, state_events.
		now := time.Now().UnixMilli()
		var jsonRows, eventRows, stateEvRows, esgRows, authCalc [][]any
		for _, e := range newEvents {
			jsonRows = append(jsonRows, []any{e.EventID, im.RoomID, sc.meta[e.EventID], e.JSON, e.FormatVersion})
			eventRows = append(eventRows, []any{im.instance, stream[e.EventID], e.Key.Depth, e.Key.Depth, e.EventID, im.RoomID,
				e.Type, true, e.Outlier, e.TS, now, e.Sender, e.ContainsURL, e.StateKey, e.Rejection})
			if e.StateKey != nil {
				stateEvRows = append(stateEvRows, []any{e.EventID, im.RoomID, e.Type, *e.StateKey})
				if im.hasChainIndex {
					authCalc = append(authCalc, []any{e.EventID, im.RoomID, e.Type, *e.StateKey})
				}
			}
		}
		evMatch := map[string]any{"event_id": newIDs}
		if err = copyRows("event_json", []string{"event_id", "room_id", "internal_metadata", "json", "format_version"}, jsonRows, nil, false); err != nil {
			return err
		}
		if err = copyRows("events", []string{"instance_name", "stream_ordering", "topological_ordering", "depth", "event_id", "room_id",
			"type", "processed", "outlier", "origin_server_ts", "received_ts", "sender", "contains_url", "state_key", "rejection_reason"},
			eventRows, nil, false); err != nil {
			return err
		}
		if err = copyRows("state_events", []string{"event_id", "room_id", "type", "state_key"}, stateEvRows, nil, false); err != nil {
			return err
		}
		// Ex-outliers join the timeline in place (their stream ordering stays, as in Synapse).
		var exIDs []string
		var exStream [][]any
		for _, e := range exOutliers {
			exIDs = append(exIDs, e.EventID)
			exStream = append(exStream, []any{stream[e.EventID], e.EventID, mapping[*e.StateGroup], im.instance})
		}
		if len(exIDs) > 0 {
			if _, err = j.Apply(ctx, RowChange{Table: "events", Key: []string{"event_id"}, Where: "t.event_id = ANY($1)",
				Args: []any{exIDs}, Set: "outlier = FALSE"}, crash); err != nil {
				return err
			}
			if err = copyRows("ex_outlier_stream", []string{"event_stream_ordering", "event_id", "state_group", "instance_name"},
				exStream, map[string]any{"event_id": exIDs}, false); err != nil {
				return err
			}
		}
		// event_to_state_groups, remapped.
		var esgIDs []string
		for _, e := range all {
			if e.StateGroup != nil && !e.Outlier {
				esgRows = append(esgRows, []any{e.EventID, mapping[*e.StateGroup]})
				esgIDs = append(esgIDs, e.EventID)
			}
		}
		if err = copyRows("event_to_state_groups", []string{"event_id", "state_group"}, esgRows, map[string]any{"event_id": esgIDs}, false); err != nil {
			return err
		}
		// event_auth (state events) and the chain cover's to-calculate queue, which Synapse
		// works off when it next persists a state event in the room (_add_chain_cover_index);
		// until then auth-chain queries fall back to the slow path for these events.
		isNew := map[string]bool{}
		for _, id := range newIDs {
			isNew[id] = true
		}
		var authRows [][]any
		for _, a := range extra.Auth {
			if isNew[a[0]] {
				authRows = append(authRows, []any{a[0], im.RoomID, a[1]})
			}
		}
		if err = copyRows("event_auth", []string{"event_id", "room_id", "auth_id"}, authRows, nil, false); err != nil {
			return err
		}
		if len(authCalc) > 0 {
			stateIDs := make([]string, len(authCalc))
			for i, r := range authCalc {
				stateIDs[i] = r[0].(string)
			}
			stateMatch := map[string]any{"event_id": stateIDs}
			if err = copyRows("event_auth_chain_to_calculate", []string{"event_id", "room_id", "type", "state_key"}, authCalc, stateMatch, true); err != nil {
				return err
			}
			// Synapse moves queue entries into the chain cover: undo must find them there.
			if err = j.Inserted(ctx, Inserted{Table: "event_auth_chains", Match: stateMatch, Volatile: true}); err != nil {
				return err
			}
		}
		// rejections, event_edges.
		var rejRows, edgeCopy [][]any
		for _, r := range extra.Rejections {
			if isNew[r.EventID] {
				rejRows = append(rejRows, []any{r.EventID, r.Reason, r.LastCheck})
			}
		}
		if err = copyRows("rejections", []string{"event_id", "reason", "last_check"}, rejRows, nil, false); err != nil {
			return err
		}
		for _, e := range extra.Edges {
			if isNew[e.EventID] {
				edgeCopy = append(edgeCopy, []any{e.EventID, e.PrevID, e.RoomID, e.IsState})
			}
		}
		if err = copyRows("event_edges", []string{"event_id", "prev_event_id", "room_id", "is_state"}, edgeCopy, nil, false); err != nil {
			return err
		}
		// event_search (built as Synapse builds it), redactions, relations, memberships.
		var sIDs, sKeys []string
		var sValues, sVectors []*string
		var sStream, sTS []int64
		for _, e := range newEvents {
			if r, ok := sc.search[e.EventID]; ok {
				sIDs, sKeys = append(sIDs, e.EventID), append(sKeys, r.key)
				sValues, sVectors = append(sValues, r.text), append(sVectors, r.vector)
				sStream, sTS = append(sStream, stream[e.EventID]), append(sTS, e.TS)
			}
		}
		if len(sIDs) > 0 {
			tag, err := tx.Exec(ctx, importSearchQuery, sIDs, im.RoomID, sKeys, sValues, sStream, sTS, sVectors)
			if err != nil {
				return fmt.Errorf("index events for search: %w", err)
			}
			res.Rows["event_search"] += int(tag.RowsAffected())
			byEvent = append(byEvent, "event_search")
			byEventRows["event_search"] = int(tag.RowsAffected())
		}
		var redRows, relRows, memRows [][]any
		for _, r := range extra.Redactions {
			if isNew[r.EventID] {
				redRows = append(redRows, []any{r.EventID, r.Redacts, r.HaveCensored, r.ReceivedTS, r.Recheck})
			}
		}
		for _, r := range extra.Relations {
			if isNew[r.EventID] {
				relRows = append(relRows, []any{r.EventID, r.RelatesTo, r.Type, r.AggregationKey})
			}
		}
		for _, m := range extra.Memberships {
			if isNew[m.EventID] {
				memRows = append(memRows, []any{m.EventID, m.UserID, m.Sender, im.RoomID, m.Membership, m.DisplayName, m.AvatarURL,
					stream[m.EventID], 0, false})
			}
		}
		if err = copyRows("redactions", []string{"event_id", "redacts", "have_censored", "received_ts", "recheck"}, redRows, nil, false); err != nil {
			return err
		}
		if err = copyRows("event_relations", []string{"event_id", "relates_to_id", "relation_type", "aggregation_key"}, relRows, nil, false); err != nil {
			return err
		}
		if err = copyRows("room_memberships", []string{"event_id", "user_id", "sender", "room_id", "membership", "display_name",
			"avatar_url", "event_stream_ordering", "forgotten", "participant"}, memRows, nil, false); err != nil {
			return err
		}
		if len(byEvent) > 0 {
			if err = j.Inserted(ctx, Inserted{Tables: byEvent, RowsBy: byEventRows, Match: evMatch}); err != nil {
				return err
			}
		}
		// Rows chunks share come last, once the previous chunk has committed.
		if err := c.prevFailed(true); err != nil {
			return err
		}
		// room_depth.min_depth lowered to the oldest imported timeline event.
		minDepth := int64(math.MaxInt64)
		for _, e := range newEvents {
			if !e.Outlier && e.Rejection == nil {
				minDepth = min(minDepth, e.Key.Depth)
			}
		}
		if minDepth != math.MaxInt64 {
			if _, err = j.Apply(ctx, RowChange{Table: "room_depth", Key: []string{"room_id"},
				Where: "t.room_id = $1 AND (t.min_depth IS NULL OR t.min_depth > $2)", Args: []any{im.RoomID, minDepth},
				Set: "min_depth = $2"}, crash); err != nil {
				return err
			}
		}
		if len(prevs) > 0 {
			rows, err := tx.Query(ctx, importBackwardExtremitiesQuery, prevs, im.RoomID)
			if err != nil {
				return fmt.Errorf("add backward extremities: %w", err)
			}
			added, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("add backward extremities: %w", err)
			}
			res.Rows["event_backward_extremities"] += len(added)
			// Volatile: Synapse removes them when it backfills those events itself.
			if err = j.Inserted(ctx, Inserted{Table: "event_backward_extremities",
				Match: map[string]any{"room_id": im.RoomID, "event_id": added}, Rows: len(added), Volatile: true}); err != nil {
				return err
			}
		}
		if err = im.threads(ctx, j, extra.Relations, isNew, newEvents, stream, res); err != nil {
			return err
		}
		for _, tbl := range []string{"event_backward_extremities", "event_failed_pull_attempts"} {
			if _, err = j.Apply(ctx, RowChange{Table: tbl, Key: []string{"room_id", "event_id"},
				Where: "t.room_id = $1 AND t.event_id = ANY($2)", Args: []any{im.RoomID, timelineIDs}}, crash); err != nil {
				return err
			}
		}
		return crash.at(ctx, tx, "before commit")
	})
	if err == nil {
		res.Events, res.ExOutliers = len(newEvents), len(exOutliers)
	}
}

// threads adds the threads the new events reply in (m.thread relations) that the server
// does not have yet, each with its latest reply of the chunk, as Synapse lists them for
// /threads. Chunks go newest first, so the first chunk to reach a thread has its latest reply.
func (im *Importer) threads(ctx context.Context, j *JournalTx, relations []Relation, isNew map[string]bool,
	events []SourceEvent, stream map[string]int64, res *ChunkResult) error {
	depth := make(map[string]int64, len(events))
	for _, e := range events {
		depth[e.EventID] = e.Key.Depth
	}
	key := func(id string) EventKey { return EventKey{Depth: depth[id], Stream: stream[id]} }
	latest := map[string]string{} // thread root → its latest reply here
	for _, r := range relations {
		if r.Type != "m.thread" || !isNew[r.EventID] {
			continue
		}
		if cur, ok := latest[r.RelatesTo]; !ok || key(cur).Less(key(r.EventID)) {
			latest[r.RelatesTo] = r.EventID
		}
	}
	if len(latest) == 0 {
		return nil
	}
	var roots, replies []string
	var depths, streams []int64
	for root, reply := range latest {
		roots, replies = append(roots, root), append(replies, reply)
		depths, streams = append(depths, depth[reply]), append(streams, stream[reply])
	}
	rows, err := j.Tx.Query(ctx, importThreadsQuery, im.RoomID, roots, replies, depths, streams)
	if err != nil {
		return fmt.Errorf("add threads: %w", err)
	}
	var added, addedReplies []string
	var root, reply string
	if _, err = pgx.ForEachRow(rows, []any{&root, &reply}, func() error {
		added, addedReplies = append(added, root), append(addedReplies, reply)
		return nil
	}); err != nil {
		return fmt.Errorf("add threads: %w", err)
	}
	res.Rows["threads"] += len(added)
	// Volatile: a later reply makes Synapse point the row at it, and undo must then leave
	// the row (now about a live event) alone; the match on our replies does that.
	return j.Inserted(ctx, Inserted{Table: "threads", Rows: len(added), Volatile: true,
		Match: map[string]any{"room_id": im.RoomID, "thread_id": added, "latest_event_id": addedReplies}})
}

func idsOf(events []SourceEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EventID
	}
	return out
}
