package importer

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse/journal"
)

// write imports chunk c: the room's events in its key range that the target lacks, in one
// transaction with the journal of every inserted row. The rows go in Synapse's persist order,
// one writer per table (importer_tables.go): the state groups first (Synapse's state store
// persists them before the events), then the events and the rows that belong to them alone,
// then, once the previous chunk has committed, the rows chunks share.
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
	lo, hi := ChunkRange(im.chunks, c.idx)
	if c.idx+1 < len(im.chunks) {
		im.prefetch(ctx, c.idx+1)
	}
	sc := im.source(ctx, lo, hi)
	if err = sc.err; err != nil {
		return
	}
	ev, err := im.sortOut(ctx, sc)
	if err != nil || ev == nil {
		return
	}
	err = journal.InTx(ctx, im.DB, im.jobID, im.actor, func(j *journal.Tx) error {
		w := &chunkWriter{chunkEvents: ev, ctx: ctx, j: j, tx: j.Tx, crash: im.crashAt(c.idx), res: res,
			room: im.RoomID, instance: im.instance, chainIndex: im.hasChainIndex,
			byEventRows: map[string]int{}}
		if err := im.prepare(w, c); err != nil {
			return err
		}
		if err := c.prevFailed(false); err != nil {
			return err // no point writing a chunk that must roll back
		}
		for _, write := range []func() error{
			w.stateGroups, w.stateGroupEdges, w.stateGroupsState,
			w.eventJSON, w.events, w.stateEvents, w.exOutliersToTimeline, w.eventToStateGroups,
			w.eventAuth, w.chainCoverQueue, w.rejections, w.eventEdges,
			w.eventSearch, w.redactions, w.eventRelations, w.roomMemberships,
			w.journalEventRows,
		} {
			if err := write(); err != nil {
				return err
			}
		}
		// Rows chunks share come last, once the previous chunk has committed.
		if err := c.prevFailed(true); err != nil {
			return err
		}
		for _, write := range []func() error{
			w.roomDepth, w.backwardExtremities, w.threads, w.pulledExtremities,
		} {
			if err := write(); err != nil {
				return err
			}
		}
		return w.at("before commit")
	})
	if err == nil {
		res.Events, res.ExOutliers = len(ev.newEvents), len(ev.exOutliers)
	}
}

// chunkEvents is what a chunk imports, sorted out from what the source holds for its range
// before its transaction begins.
type chunkEvents struct {
	src *sourceChunk
	// newEvents are the events the target lacks; exOutliers those it has only as outliers
	// and the source has in its timeline.
	newEvents, exOutliers []SourceEvent
	newIDs, timelineIDs   []string
	isNew                 map[string]bool
	// groups are the source state groups at the timeline events.
	groups []int64
	// missingPrevs are the timeline events' prev events that the source lacks too (so no
	// later chunk brings them): backward extremities unless the target has them.
	missingPrevs []string
}

// sortOut sorts a chunk's source events into new events and ex-outliers (dropping events
// the target already has, and copies that conflict), or returns nil if there is nothing to do.
func (im *Importer) sortOut(ctx context.Context, sc *sourceChunk) (*chunkEvents, error) {
	ev := &chunkEvents{src: sc}
	var sharedIDs []string
	for _, e := range sc.events {
		if e.StateGroup == nil {
			// Without the state at it, Synapse cannot judge who may see a timeline event
			// ("No state group for unknown or outlier event"): keep it an outlier.
			e.Outlier = true
		}
		tgtOutlier, ok := sc.existing[e.EventID]
		switch {
		case !ok:
			ev.newEvents = append(ev.newEvents, e)
		case tgtOutlier && !e.Outlier:
			ev.exOutliers = append(ev.exOutliers, e)
			sharedIDs = append(sharedIDs, e.EventID)
		}
	}
	if len(sharedIDs) > 0 {
		conflicts, err := im.conflicts(ctx, sharedIDs)
		if err != nil {
			return nil, err
		}
		ev.exOutliers = slices.DeleteFunc(ev.exOutliers, func(e SourceEvent) bool { return conflicts[e.EventID] })
	}
	if len(ev.newEvents) == 0 && len(ev.exOutliers) == 0 {
		return nil, nil
	}
	ev.newIDs = idsOf(ev.newEvents)
	ev.isNew = make(map[string]bool, len(ev.newIDs))
	for _, id := range ev.newIDs {
		ev.isNew[id] = true
	}
	ev.timelineIDs = make([]string, 0, len(ev.newEvents)+len(ev.exOutliers))
	for _, e := range slices.Concat(ev.newEvents, ev.exOutliers) {
		if !e.Outlier {
			ev.timelineIDs = append(ev.timelineIDs, e.EventID)
		}
		if e.StateGroup != nil && !e.Outlier {
			ev.groups = append(ev.groups, *e.StateGroup)
		}
	}
	slices.Sort(ev.groups)
	ev.groups = slices.Compact(ev.groups)
	// Prev events that are neither here nor in the source (so no later chunk brings them)
	// become backward extremities, as in Synapse's _update_backward_extremeties.
	timeline := map[string]bool{}
	for _, id := range ev.timelineIDs {
		timeline[id] = true
	}
	for _, e := range sc.extra.Edges {
		if timeline[e.EventID] {
			ev.missingPrevs = append(ev.missingPrevs, e.PrevID)
		}
	}
	slices.Sort(ev.missingPrevs)
	ev.missingPrevs = slices.Compact(ev.missingPrevs)
	ev.missingPrevs = slices.DeleteFunc(ev.missingPrevs, func(p string) bool { return sc.inSource[p] })
	return ev, nil
}

// chunkWriter writes one chunk in its transaction, one method per Synapse table.
type chunkWriter struct {
	*chunkEvents
	ctx   context.Context
	j     *journal.Tx
	tx    pgx.Tx
	crash journal.CrashPoint
	res   *ChunkResult

	room, instance string
	chainIndex     bool // the room has Synapse's chain cover index

	// Set by prepare.
	mapping map[int64]int64 // source state group → target state group
	created []newGroup      // the target state groups to create
	ordered []SourceEvent   // new events and ex-outliers, newest first
	stream  map[string]int64

	// byEvent are the tables written so far whose rows the new events' IDs select, in order:
	// journaled together, once, by journalEventRows.
	byEvent     []string
	byEventRows map[string]int
}

// prepare maps the chunk's state groups to the target's (after the previous chunk has mapped
// its own, so this one dedups against them) and takes the events' stream orderings, then
// lets the next chunk prepare.
func (im *Importer) prepare(w *chunkWriter, c *inflight) error {
	if c.prev != nil {
		<-c.prev.prepped
	}
	if err := im.loadGraphs(w.ctx); err != nil {
		return err
	}
	mapping, created, deduped, err := im.mapGroups(w.ctx, w.tx, w.groups)
	if err != nil {
		return err
	}
	// The next chunk maps its groups against these at once, before this one commits;
	// should this one fail, that one fails too.
	im.remember(mapping, created)
	w.mapping, w.created = mapping, created
	w.res.StateGroups, w.res.DedupedGroups = len(created), deduped
	if err = w.streamOrderings(); err != nil {
		return err
	}
	c.prepDone()
	return nil
}

// streamOrderings takes the events' stream orderings from the backfill sequence, newest
// event first (so the newest gets the highest, i.e. least negative, one, as repeated
// backfill does).
func (w *chunkWriter) streamOrderings() error {
	w.ordered = slices.Concat(w.newEvents, w.exOutliers)
	slices.SortFunc(w.ordered, newestFirst)
	rows, err := w.tx.Query(w.ctx, importBackfillSeqQuery, len(w.ordered))
	if err != nil {
		return fmt.Errorf("allocate stream orderings: %w", err)
	}
	seq, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("allocate stream orderings: %w", err)
	}
	slices.Sort(seq) // ascending nextval: -1, -2, … sorted → most negative first
	w.stream = make(map[string]int64, len(w.ordered))
	for i, e := range w.ordered {
		w.stream[e.EventID] = seq[len(seq)-1-i]
	}
	return nil
}

// at runs the chunk's crash point (tests only; nil in production).
func (w *chunkWriter) at(point string) error {
	if w.crash == nil {
		return nil
	}
	return w.crash(w.ctx, w.tx, point)
}

// copyByEvent copies rows of the new events into table; journalEventRows journals them.
func (w *chunkWriter) copyByEvent(table string, cols []string, rows [][]any) error {
	return w.copyRows(table, cols, rows, journal.Inserted{})
}

// copyRows copies rows into table and journals them as ins describes (its Match selecting
// exactly them); without a Match they are rows of the new events, journaled later by
// journalEventRows. A volatile table is journaled even when no row was copied: Synapse may
// fill it later.
func (w *chunkWriter) copyRows(table string, cols []string, rows [][]any, ins journal.Inserted) error {
	if len(rows) == 0 && !ins.Volatile {
		return nil
	}
	n, err := w.tx.CopyFrom(w.ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("copy into %s: %w", table, err)
	}
	w.res.Rows[table] += int(n)
	if ins.Match == nil {
		w.byEvent = append(w.byEvent, table)
		w.byEventRows[table] = int(n)
	} else {
		ins.Table, ins.Rows = table, int(n)
		if err = w.j.Inserted(w.ctx, ins); err != nil {
			return err
		}
	}
	return w.at("after copying " + table)
}

// journalEventRows journals the rows of every table copyByEvent wrote as one entry, by the
// new events' IDs.
func (w *chunkWriter) journalEventRows() error {
	if len(w.byEvent) == 0 {
		return nil
	}
	return w.j.Inserted(w.ctx, journal.Inserted{Tables: w.byEvent, RowsBy: w.byEventRows, Match: map[string]any{"event_id": w.newIDs}})
}
