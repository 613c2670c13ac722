package synapselog

import (
	"maps"
	"strings"
	"testing"
	"time"
)

// TestParseSyncToken: each field of a /sync token counts for its stream, in Synapse 1.160's
// order; multi-writer and topological forms count their highest position; typing and groups
// count for nothing; what is no sync token gives nothing.
func TestParseSyncToken(t *testing.T) {
	for _, c := range []struct {
		tok  string
		want map[string]int64
	}{
		{"s13_1_0_4_5_6_7_10_0_11_2_3_8_9", map[string]int64{"events": 13, "presence_stream": 1, "receipts": 4, "account_data": 5,
			"push_rules_stream": 6, "to_device": 7, "device_lists_stream": 10, "un_partial_stated_room_stream": 11,
			"thread_subscriptions": 2, "sticky_events": 3, "quarantined_media": 8, "profile_updates": 9}},
		// Multi-writer forms: the highest of the stream and every instance's position.
		{"m13~1.15~2.14_1_0_m4~1.9_5", map[string]int64{"events": 15, "presence_stream": 1, "receipts": 9, "account_data": 5}},
		{"t5-42_2", map[string]int64{"events": 42, "presence_stream": 2}},
		// An unreadable field is left out, the others kept.
		{"s13_x_0_4", map[string]int64{"events": 13, "receipts": 4}},
		{"", nil},
		{"pos-abc", nil}, // not a sync token
		{"s-1_2", map[string]int64{"presence_stream": 2}},
		{"m5~junk_2", map[string]int64{"presence_stream": 2}},
	} {
		got := ParseSyncToken(c.tok)
		if len(got) == 0 && len(c.want) == 0 {
			continue
		}
		if !maps.Equal(got, c.want) {
			t.Errorf("ParseSyncToken(%q) = %v, want %v", c.tok, got, c.want)
		}
	}
}

// TestSyncPositions reads the access log's /sync lines from a time on and keeps the highest
// position per stream; other lines and /sync lines without since count for nothing.
func TestSyncPositions(t *testing.T) {
	line := func(at, query string) string {
		return at + ` - synapse.access.http.8008 - 643 - INFO - GET-19 - 127.0.0.1 - 8008 - {@alice:hs1.test} Processed request: 0.036sec/0.006sec ` +
			`ru=(0.004sec, 0.001sec) db=(0.006sec/0.006sec/3) 197B 200 "GET /_matrix/client/v3/sync?` + query + ` HTTP/1.1" "node" [0 dbevts]` + "\n"
	}
	log := line("2026-12-02 18:00:00,000", "filter=0&since=s99_1_0_1_1_1_99_7_0_1_2_1_1_1") + // before the time: not counted
		line("2026-12-02 18:02:06,734", "filter=0&timeout=30000&since=s13_1_0_1_1_1_7_10_0_5_2_1_1_1") +
		line("2026-12-02 18:02:07,000", "since=s12_1_0_m1~1.4_1_1_8_10_0_5_2_1_1_1&timeout=0") +
		line("2026-12-02 18:02:08,000", "filter=0") + // an initial sync
		"2026-12-02 18:02:09,000 - synapse.handlers.sync - INFO - since=s500 is only text here\n" +
		line("2026-12-02 18:02:10,000", "since=m20~1.21~2.25_1_0_1_1_1_7_10_0_5_2_1_1_1") // multi-writer room token
	got := map[string]int64{}
	if err := readSyncPositions(strings.NewReader(log), time.Date(2026, 12, 2, 18, 1, 0, 0, time.UTC), got); err != nil {
		t.Fatal(err)
	}
	for stream, want := range map[string]int64{"events": 25, "to_device": 8, "receipts": 4, "device_lists_stream": 10} {
		if got[stream] != want {
			t.Errorf("%s: %d, want %d (all: %v)", stream, got[stream], want, got)
		}
	}
}

func FuzzParseSyncToken(f *testing.F) {
	for _, s := range []string{"s13_1_0_1_1_1_7_10_0_5_2_1_1_1", "m13~1.15~2.14_1_0_m4~1.9_5", "t5-42_2", "", "m~", "s_", "t-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		for stream, pos := range ParseSyncToken(tok) {
			if pos < 0 || stream == "" {
				t.Errorf("ParseSyncToken(%q): %s = %d", tok, stream, pos)
			}
		}
	})
}

// TestSyncSinceOddQuery: a parameter that does not decode does not hide since.
func TestSyncSinceOddQuery(t *testing.T) {
	line := []byte(`200 "GET /_matrix/client/v3/sync?filter=%zz&since=s7_1_0_1_1_1_3_4_0_1_1_1_1_1&timeout=0 HTTP/1.1"`)
	if got := syncSince(line); got != "s7_1_0_1_1_1_3_4_0_1_1_1_1_1" {
		t.Errorf("syncSince = %q", got)
	}
}
