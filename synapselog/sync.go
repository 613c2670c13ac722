package synapselog

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SyncTokenStreams names the positions of a /sync token ("s13_1_0_1_1_1_7_10_0_5_2_1_1_1"),
// field by field in the order of Synapse 1.160's StreamToken (synapse/types/__init__.py),
// by the stream_positions name of the stream each counts ("" for a field no sequence backs:
// typing, which restarts with Synapse, and the unused groups key).
var SyncTokenStreams = []string{
	"events",                        // room_key
	"presence_stream",               // presence_key
	"",                              // typing_key
	"receipts",                      // receipt_key
	"account_data",                  // account_data_key
	"push_rules_stream",             // push_rules_key
	"to_device",                     // to_device_key
	"device_lists_stream",           // device_list_key
	"",                              // groups_key
	"un_partial_stated_room_stream", // un_partial_stated_rooms_key
	"thread_subscriptions",          // thread_subscriptions_key
	"sticky_events",                 // sticky_events_key
	"quarantined_media",             // quarantined_media_key
	"profile_updates",               // profile_updates_key
}

// ParseSyncToken returns the highest position a /sync token holds in each stream, keyed as
// SyncTokenStreams. A multi-writer field ("m5~1.7~2.9") counts its highest position; the room
// field may be "s13", "t5-13" (topological-stream) or multi-writer "m13~1.15". Fields it cannot
// read are left out; a token that is not a sync token ("", a sliding sync position) gives none.
func ParseSyncToken(tok string) map[string]int64 {
	if !strings.HasPrefix(tok, "s") && !strings.HasPrefix(tok, "m") && !strings.HasPrefix(tok, "t") {
		return nil
	}
	out := map[string]int64{}
	for i, field := range strings.Split(tok, "_") {
		if i >= len(SyncTokenStreams) {
			break
		}
		if SyncTokenStreams[i] == "" {
			continue
		}
		if i == 0 {
			switch {
			case strings.HasPrefix(field, "s"):
				field = field[1:]
			case strings.HasPrefix(field, "t"):
				_, field, _ = strings.Cut(field[1:], "-")
			case !strings.HasPrefix(field, "m"):
				return nil
			}
		}
		if pos, ok := highestPosition(field); ok {
			out[SyncTokenStreams[i]] = pos
		}
	}
	return out
}

// highestPosition reads "7" or a multi-writer "m5~1.7~2.9" (stream, then instance.position).
func highestPosition(field string) (int64, bool) {
	if rest, ok := strings.CutPrefix(field, "m"); ok {
		parts := strings.Split(rest, "~")
		best, found := int64(0), false
		for i, p := range parts {
			if i > 0 {
				_, p, ok = strings.Cut(p, ".")
				if !ok {
					return 0, false
				}
			}
			v, err := strconv.ParseInt(p, 10, 64)
			if err != nil || v < 0 {
				return 0, false
			}
			best, found = max(best, v), true
		}
		return best, found
	}
	v, err := strconv.ParseInt(field, 10, 64)
	return v, err == nil && v >= 0
}

var (
	markSync  = []byte("/sync?")
	markSince = []byte("since=")
)

// syncSince returns the since parameter of an access-log line of a /sync request ("" if
// the line is none).
func syncSince(line []byte) string {
	i := bytes.Index(line, markSync)
	if i < 0 {
		return ""
	}
	rest := line[i+len(markSync):]
	if end := bytes.IndexAny(rest, " \""); end >= 0 {
		rest = rest[:end]
	}
	// ParseQuery keeps every pair it could decode and reports the first it could not: an
	// odd parameter elsewhere does not hide since.
	q, _ := url.ParseQuery(string(rest))
	return q.Get("since")
}

// SyncPositions reads Synapse's access log for the /sync tokens clients sent since a time
// and returns the highest position per stream (keyed as SyncTokenStreams). After a restore
// those are positions clients hold that the restored database may be behind: Synapse gives
// what arrives next positions those clients think they have seen, and never shows it to
// them (it bounds such "tokens from the future" to what it has allocated at their next sync).
func SyncPositions(ctx context.Context, sources []Source, since time.Time) (map[string]int64, error) {
	out := map[string]int64{}
	err := readSources(ctx, sources, since, func(_ string, r io.Reader) error {
		return readSyncPositions(r, since, out)
	})
	return out, err
}

func readSyncPositions(r io.Reader, since time.Time, out map[string]int64) error {
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer is no access-log line of /sync: skip it.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			continue
		}
		if bytes.Contains(line, markSync) && bytes.Contains(line, markSince) {
			if t := findTime(string(line)); t.IsZero() || !t.Before(since) {
				for stream, pos := range ParseSyncToken(syncSince(line)) {
					out[stream] = max(out[stream], pos)
				}
			}
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}
