package importer

import (
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/synapse-medic/medic/synapse/journal"
)

// One writer per Synapse table a chunk writes, in the order write calls them. Each builds its
// rows from the chunk (chunkEvents) and what prepare set (state-group mapping, stream
// orderings), writes them, and journals them: under its own match, or, for rows that the new
// events' IDs select, together with the other tables in one entry (journalEventRows).

// groupIDs are the ids of the state groups the chunk creates.
func (w *chunkWriter) groupIDs() []int64 {
	var ids []int64
	for _, g := range w.created {
		ids = append(ids, g.id)
	}
	return ids
}

// state_groups: the groups no target group matched, with this database's ids.
func (w *chunkWriter) stateGroups() error {
	var rows [][]any
	for _, g := range w.created {
		rows = append(rows, []any{g.id, w.room, g.event})
	}
	// Synapse may later store a group as a delta on one of these, or file an event under
	// one: undo must not delete them from under it.
	return w.copyRows("state_groups", []string{"id", "room_id", "event_id"}, rows, journal.Inserted{
		Match: map[string]any{"id": w.groupIDs()},
		Refs: []string{"state_group_edges.prev_state_group", "state_group_edges.state_group",
			"event_to_state_groups.state_group", "state_groups_state.state_group"}})
}

// state_group_edges: each new group that is a delta, on its parent.
func (w *chunkWriter) stateGroupEdges() error {
	var rows [][]any
	for _, g := range w.created {
		if g.parent != 0 {
			rows = append(rows, []any{g.id, g.parent})
		}
	}
	return w.copyRows("state_group_edges", []string{"state_group", "prev_state_group"}, rows,
		journal.Inserted{Match: map[string]any{"state_group": w.groupIDs()}})
}

// state_groups_state: each new group's delta (or full state, for a snapshot).
func (w *chunkWriter) stateGroupsState() error {
	var rows [][]any
	for _, g := range w.created {
		for k, ev := range g.rows {
			rows = append(rows, []any{g.id, w.room, k[0], k[1], ev})
		}
	}
	return w.copyRows("state_groups_state", []string{"state_group", "room_id", "type", "state_key", "event_id"}, rows,
		journal.Inserted{Match: map[string]any{"state_group": w.groupIDs()}})
}

// event_json: the new events' JSON, their internal metadata cleaned of the source's own.
func (w *chunkWriter) eventJSON() error {
	var rows [][]any
	for _, e := range w.newEvents {
		rows = append(rows, []any{e.EventID, w.room, w.src.meta[e.EventID], e.JSON, e.FormatVersion})
	}
	return w.copyByEvent("event_json", []string{"event_id", "room_id", "internal_metadata", "json", "format_version"}, rows)
}

// events: the new events, topological_ordering = depth and the backfill stream orderings.
func (w *chunkWriter) events() error {
	now := time.Now().UnixMilli()
	var rows [][]any
	for _, e := range w.newEvents {
		rows = append(rows, []any{w.instance, w.stream[e.EventID], e.Key.Depth, e.Key.Depth, e.EventID, w.room,
			e.Type, true, e.Outlier, e.TS, now, e.Sender, e.ContainsURL, e.StateKey, e.Rejection})
	}
	return w.copyByEvent("events", []string{"instance_name", "stream_ordering", "topological_ordering", "depth", "event_id",
		"room_id", "type", "processed", "outlier", "origin_server_ts", "received_ts", "sender", "contains_url", "state_key",
		"rejection_reason"}, rows)
}

// state_events: the new state events.
func (w *chunkWriter) stateEvents() error {
	var rows [][]any
	for _, e := range w.newEvents {
		if e.StateKey != nil {
			rows = append(rows, []any{e.EventID, w.room, e.Type, *e.StateKey})
		}
	}
	return w.copyByEvent("state_events", []string{"event_id", "room_id", "type", "state_key"}, rows)
}

// events (outlier = FALSE) and ex_outlier_stream: ex-outliers join the timeline in place,
// their stream ordering kept, as Synapse's _update_outliers_txn does.
func (w *chunkWriter) exOutliersToTimeline() error {
	if len(w.exOutliers) == 0 {
		return nil
	}
	var ids []string
	var rows [][]any
	for _, e := range w.exOutliers {
		ids = append(ids, e.EventID)
		rows = append(rows, []any{w.stream[e.EventID], e.EventID, w.mapping[*e.StateGroup], w.instance})
	}
	if _, err := w.j.Apply(w.ctx, journal.RowChange{Table: "events", Key: []string{"event_id"}, Where: "t.event_id = ANY($1)",
		Args: []any{ids}, Set: "outlier = FALSE"}, w.crash); err != nil {
		return err
	}
	return w.copyRows("ex_outlier_stream", []string{"event_stream_ordering", "event_id", "state_group", "instance_name"}, rows,
		journal.Inserted{Match: map[string]any{"event_id": ids}})
}

// event_to_state_groups: the state at each timeline event, remapped to the target's groups.
func (w *chunkWriter) eventToStateGroups() error {
	var ids []string
	var rows [][]any
	for _, e := range w.ordered {
		if e.StateGroup != nil && !e.Outlier {
			rows = append(rows, []any{e.EventID, w.mapping[*e.StateGroup]})
			ids = append(ids, e.EventID)
		}
	}
	return w.copyRows("event_to_state_groups", []string{"event_id", "state_group"}, rows,
		journal.Inserted{Match: map[string]any{"event_id": ids}})
}

// event_auth: the new events' auth events.
func (w *chunkWriter) eventAuth() error {
	var rows [][]any
	for _, a := range w.src.extra.Auth {
		if w.isNew[a[0]] {
			rows = append(rows, []any{a[0], w.room, a[1]})
		}
	}
	return w.copyByEvent("event_auth", []string{"event_id", "room_id", "auth_id"}, rows)
}

// event_auth_chain_to_calculate: the chain cover's queue, for rooms that have the index.
// Synapse works it off when it next persists a state event in the room
// (_add_chain_cover_index); until then auth-chain queries fall back to the slow path for
// these events.
func (w *chunkWriter) chainCoverQueue() error {
	if !w.chainIndex {
		return nil
	}
	var ids []string
	var rows [][]any
	for _, e := range w.newEvents {
		if e.StateKey != nil {
			rows = append(rows, []any{e.EventID, w.room, e.Type, *e.StateKey})
			ids = append(ids, e.EventID)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	match := map[string]any{"event_id": ids}
	if err := w.copyRows("event_auth_chain_to_calculate", []string{"event_id", "room_id", "type", "state_key"}, rows,
		journal.Inserted{Match: match, Volatile: true}); err != nil {
		return err
	}
	// Synapse moves queue entries into the chain cover: undo must find them there.
	return w.j.Inserted(w.ctx, journal.Inserted{Table: "event_auth_chains", Match: match, Volatile: true})
}

// rejections: the new events the source rejected, with its reasons.
func (w *chunkWriter) rejections() error {
	var rows [][]any
	for _, r := range w.src.extra.Rejections {
		if w.isNew[r.EventID] {
			rows = append(rows, []any{r.EventID, r.Reason, r.LastCheck})
		}
	}
	return w.copyByEvent("rejections", []string{"event_id", "reason", "last_check"}, rows)
}

// event_edges: the new events' prev events.
func (w *chunkWriter) eventEdges() error {
	var rows [][]any
	for _, e := range w.src.extra.Edges {
		if w.isNew[e.EventID] {
			rows = append(rows, []any{e.EventID, e.PrevID, e.RoomID, e.IsState})
		}
	}
	return w.copyByEvent("event_edges", []string{"event_id", "prev_event_id", "room_id", "is_state"}, rows)
}

// event_search: built as Synapse builds it, from the source's vector where it has one.
func (w *chunkWriter) eventSearch() error {
	var ids, keys []string
	var values, vectors []*string
	var streams, tss []int64
	for _, e := range w.newEvents {
		if r, ok := w.src.search[e.EventID]; ok {
			ids, keys = append(ids, e.EventID), append(keys, r.key)
			values, vectors = append(values, r.text), append(vectors, r.vector)
			streams, tss = append(streams, w.stream[e.EventID]), append(tss, e.TS)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	tag, err := w.tx.Exec(w.ctx, importSearchQuery, ids, w.room, keys, values, streams, tss, vectors)
	if err != nil {
		return fmt.Errorf("index events for search: %w", err)
	}
	n := int(tag.RowsAffected())
	w.res.Rows["event_search"] += n
	w.byEvent = append(w.byEvent, "event_search")
	w.byEventRows["event_search"] = n
	return nil
}

// redactions: the new redaction events.
func (w *chunkWriter) redactions() error {
	var rows [][]any
	for _, r := range w.src.extra.Redactions {
		if w.isNew[r.EventID] {
			rows = append(rows, []any{r.EventID, r.Redacts, r.HaveCensored, r.ReceivedTS, r.Recheck})
		}
	}
	return w.copyByEvent("redactions", []string{"event_id", "redacts", "have_censored", "received_ts", "recheck"}, rows)
}

// event_relations: the new events' relations (edits, reactions, replies in threads).
func (w *chunkWriter) eventRelations() error {
	var rows [][]any
	for _, r := range w.src.extra.Relations {
		if w.isNew[r.EventID] {
			rows = append(rows, []any{r.EventID, r.RelatesTo, r.Type, r.AggregationKey})
		}
	}
	return w.copyByEvent("event_relations", []string{"event_id", "relates_to_id", "relation_type", "aggregation_key"}, rows)
}

// room_memberships: the new membership events.
func (w *chunkWriter) roomMemberships() error {
	var rows [][]any
	for _, m := range w.src.extra.Memberships {
		if w.isNew[m.EventID] {
			rows = append(rows, []any{m.EventID, m.UserID, m.Sender, w.room, m.Membership, m.DisplayName, m.AvatarURL,
				w.stream[m.EventID], 0, false})
		}
	}
	return w.copyByEvent("room_memberships", []string{"event_id", "user_id", "sender", "room_id", "membership",
		"display_name", "avatar_url", "event_stream_ordering", "forgotten", "participant"}, rows)
}

// room_depth: min_depth lowered to the oldest imported timeline event.
func (w *chunkWriter) roomDepth() error {
	minDepth := int64(math.MaxInt64)
	for _, e := range w.newEvents {
		if !e.Outlier && e.Rejection == nil {
			minDepth = min(minDepth, e.Key.Depth)
		}
	}
	if minDepth == math.MaxInt64 {
		return nil
	}
	_, err := w.j.Apply(w.ctx, journal.RowChange{Table: "room_depth", Key: []string{"room_id"},
		Where: "t.room_id = $1 AND (t.min_depth IS NULL OR t.min_depth > $2)", Args: []any{w.room, minDepth},
		Set: "min_depth = $2"}, w.crash)
	return err
}

// event_backward_extremities: prev events that neither database has become backward
// extremities, so Synapse backfills them from other servers.
func (w *chunkWriter) backwardExtremities() error {
	if len(w.missingPrevs) == 0 {
		return nil
	}
	rows, err := w.tx.Query(w.ctx, importBackwardExtremitiesQuery, w.missingPrevs, w.room)
	if err != nil {
		return fmt.Errorf("add backward extremities: %w", err)
	}
	added, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("add backward extremities: %w", err)
	}
	w.res.Rows["event_backward_extremities"] += len(added)
	// Volatile: Synapse removes them when it backfills those events itself.
	return w.j.Inserted(w.ctx, journal.Inserted{Table: "event_backward_extremities",
		Match: map[string]any{"room_id": w.room, "event_id": added}, Rows: len(added), Volatile: true})
}

// threads adds the threads the new events reply in (m.thread relations) that the server
// does not have yet, each with its latest reply of the chunk, as Synapse lists them for
// /threads. Chunks go newest first, so the first chunk to reach a thread has its latest reply.
func (w *chunkWriter) threads() error {
	depth := make(map[string]int64, len(w.newEvents))
	for _, e := range w.newEvents {
		depth[e.EventID] = e.Key.Depth
	}
	key := func(id string) EventKey { return EventKey{Depth: depth[id], Stream: w.stream[id]} }
	latest := map[string]string{} // thread root → its latest reply here
	for _, r := range w.src.extra.Relations {
		if r.Type != "m.thread" || !w.isNew[r.EventID] {
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
		depths, streams = append(depths, depth[reply]), append(streams, w.stream[reply])
	}
	rows, err := w.tx.Query(w.ctx, importThreadsQuery, w.room, roots, replies, depths, streams)
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
	w.res.Rows["threads"] += len(added)
	// Volatile: a later reply makes Synapse point the row at it, and undo must then leave
	// the row (now about a live event) alone; the match on our replies does that.
	return w.j.Inserted(w.ctx, journal.Inserted{Table: "threads", Rows: len(added), Volatile: true,
		Match: map[string]any{"room_id": w.room, "thread_id": added, "latest_event_id": addedReplies}})
}

// event_backward_extremities and event_failed_pull_attempts: the imported timeline events
// are here now, so no longer extremities to backfill from nor events whose pull failed.
func (w *chunkWriter) pulledExtremities() error {
	for _, tbl := range []string{"event_backward_extremities", "event_failed_pull_attempts"} {
		if _, err := w.j.Apply(w.ctx, journal.RowChange{Table: tbl, Key: []string{"room_id", "event_id"},
			Where: "t.room_id = $1 AND t.event_id = ANY($2)", Args: []any{w.room, w.timelineIDs}}, w.crash); err != nil {
			return err
		}
	}
	return nil
}
