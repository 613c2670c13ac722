package importer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/journal"
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
//
// The parts: importer_plan.go (what an import would do), importer_read.go (a chunk's rows
// from the source), importer_stategroups.go (the source's state groups mapped onto this
// database's), importer_write.go (a chunk's transaction) and importer_tables.go (one writer
// per Synapse table), with the SQL in importer_sql.go. Of the rest of the package it uses the
// Source reader, the DB's journaled transactions (journal.Tx, Inserted, journal.RowChange) and
// journal.CrashPoint.
type Importer struct {
	DB     *synapse.DB
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
	crash        journal.CrashPoint
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

// ChunkResult counts what one chunk wrote.
type ChunkResult struct {
	Events, ExOutliers, StateGroups, DedupedGroups int
	Rows                                           map[string]int
}

// NewImporter opens an import of roomID from src into db.
func New(ctx context.Context, db *synapse.DB, src *Source, roomID string) (*Importer, error) {
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
func (im *Importer) Run(jobID, actor string, chunks []EventKey, crash journal.CrashPoint) {
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
	if err := journal.Ensure(ctx, im.DB); err != nil {
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
func (im *Importer) crashAt(i int) journal.CrashPoint {
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
