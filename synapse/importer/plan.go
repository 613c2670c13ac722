package importer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix/crypto/canonicaljson"
)

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
