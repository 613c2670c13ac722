package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/synapse-medic/medic/synapselog"
)

// writeLog generates a Synapse log of about size bytes: mostly access and other INFO lines,
// with 1 in 200 lines about a forgotten room (and their "Received txn" lines).
func writeLog(b *testing.B, path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	start := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	var written int64
	for i := 0; written < size; i++ {
		ts := start.Add(time.Duration(i) * time.Millisecond).Format("2006-01-02 15:04:05,000")
		var n int
		switch {
		case i%200 == 0:
			n, _ = fmt.Fprintf(w, "%s - synapse.federation.transport.server.federation - 118 - INFO - PUT-%d - Received txn %d from hs%d.example.org. (PDUs: 1, EDUs: 0)\n", ts, i%5000, i, i%7)
		case i%200 == 1:
			n, _ = fmt.Fprintf(w, "%s - synapse.federation.federation_server - 1331 - INFO - PUT-%d - Ignoring PDU for unknown room_id: !room%d:hs%d.example.org\n", ts, (i-1)%5000, i%300, (i-1)%7)
		case i%3 == 0:
			n, _ = fmt.Fprintf(w, "%s - synapse.access.http.8008 - 473 - INFO - GET-%d - 10.0.0.%d - 8008 - {@user%d:example.org} Processed request: 0.003sec/0.000sec (0.001sec, 0.000sec) (0.000sec/0.001sec/2) 1234B 200 \"GET /_matrix/client/v3/sync?since=s%d&timeout=30000 HTTP/1.1\" \"Element/1.11\" [0 dbevts]\n", ts, i, i%250, i%1000, i)
		default:
			n, _ = fmt.Fprintf(w, "%s - synapse.storage.SQL - 454 - DEBUG - GET-%d - [SQL] {get_users_in_room-%x} SELECT state_key FROM current_state_events WHERE type = 'm.room.member' AND room_id = ? AND membership = ?\n", ts, i, i)
		}
		written += int64(n)
	}
	if err = w.Flush(); err != nil {
		b.Fatal(err)
	}
	_ = f.Close()
}

// BenchmarkRecoverScan prints the log scanner's throughput next to `grep -F 'Ignoring'` on
// the same file (target: at least half of grep's). Size: MEDIC_BENCH_LOG_MB (default 1024).
func BenchmarkRecoverScan(b *testing.B) {
	mb, _ := strconv.Atoi(os.Getenv("MEDIC_BENCH_LOG_MB"))
	if mb <= 0 {
		mb = 1024
	}
	path := filepath.Join(b.TempDir(), "homeserver.log")
	writeLog(b, path, int64(mb)<<20)
	fi, _ := os.Stat(path)
	size := float64(fi.Size()) / (1 << 20)

	// grep first (it also warms the page cache for both). Its output goes through a pipe:
	// given /dev/null, GNU grep stops at the first match.
	grep := func() float64 {
		start := time.Now()
		cmd := exec.Command("grep", "-F", "Ignoring", path)
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start).Seconds()
	}
	grepSecs := min(grep(), grep())

	b.ResetTimer()
	var secs float64
	var rooms int
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rep, err := synapselog.ScanSources(b.Context(), []synapselog.Source{{Type: "file", Path: path}}, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		secs = time.Since(start).Seconds()
		rooms = len(rep.Rooms)
	}
	b.StopTimer()
	b.ReportMetric(size/secs, "medic-MB/s")
	b.ReportMetric(size/grepSecs, "grep-MB/s")
	b.ReportMetric(grepSecs/secs, "ratio-to-grep")
	b.ReportMetric(float64(rooms), "rooms")
	b.ReportMetric(size, "log-MB")
}
