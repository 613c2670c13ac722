package importer

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
)

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

func idsOf(events []SourceEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EventID
	}
	return out
}
