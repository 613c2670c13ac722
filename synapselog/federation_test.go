package synapselog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	fedFailed = `2026-12-02 08:17:21,219 - synapse.http.matrixfederationclient - 838 - INFO - federation_transaction_transmission_loop-0 - {PUT-O-4} [hs2.test:8482] Request failed: PUT matrix-federation://hs2.test:8482/_matrix/federation/v1/send/1796199430147: ConnectionRefusedError('Connection refused')`
	fedOK     = `2026-12-02 08:10:00,000 - synapse.http.matrixfederationclient - 371 - INFO - POST-802 - {GET-O-1} [hs2.test:8482] Completed request: 200 OK in 0.15 secs, got 482 bytes - GET matrix-federation://hs2.test:8482/_matrix/federation/v1/make_join/x`
)

func at(s string) time.Time { t, _ := time.Parse(time.DateTime, s); return t }

func TestPeerLog(t *testing.T) {
	pl := PeerLog{}
	lines := []string{
		fedOK,
		strings.Replace(fedFailed, "08:17:21", "08:15:00", 1),
		// A completed request, even a 404, means the server answers: failures start again.
		strings.Replace(strings.Replace(fedOK, "08:10:00", "08:15:30", 1), "200 OK", "404 Not Found", 1),
		strings.Replace(fedFailed, "08:17:21", "08:16:00", 1),
		// journald's prefix before Synapse's format.
		"Dec 02 08:17:21 host python3[123]: " + fedFailed,
		// Another server, and lines that only look similar.
		strings.ReplaceAll(fedFailed, "hs2.test:8482", "hs3.test:8483"),
		`2026-12-02 08:17:22,000 - synapse.federation.sender - 1 - INFO - x - [hs4.test] Request failed: no client line`,
		`2026-12-02 08:17:22,000 - synapse.http.matrixfederationclient - 838 - INFO - x - Request failed: no server`,
		`2026-12-02 08:17:22,000 - synapse.http.matrixfederationclient - 838 - INFO - x - {PUT-O-9} [bad server] Request failed: PUT x: E`,
	}
	for _, l := range lines {
		pl.Feed([]byte(l + "\n"))
	}
	if len(pl) != 2 {
		t.Fatalf("peers %v, want hs2 and hs3", pl.Sorted())
	}
	p := pl["hs2.test:8482"]
	if p.Failures != 2 || !p.First.Equal(at("2026-12-02 08:16:00").Add(219*time.Millisecond)) || !p.Last.Equal(at("2026-12-02 08:17:21").Add(219*time.Millisecond)) ||
		!p.LastOK.Equal(at("2026-12-02 08:15:30")) || p.LastError != "ConnectionRefusedError('Connection refused')" {
		t.Errorf("hs2: %+v", p)
	}
	if !p.Failing(at("2026-12-02 08:17:00"), time.Minute) {
		t.Error("hs2 failing for 81 s with a failure after 08:17 is not failing")
	}
	if p.Failing(at("2026-12-02 08:18:00"), time.Minute) || p.Failing(at("2026-12-02 08:17:00"), 2*time.Minute) {
		t.Error("failing although the last failure is too old or the span too short")
	}
	if q := pl["hs3.test:8483"]; q.Failures != 1 || q.Failing(time.Time{}, time.Second) {
		t.Errorf("hs3: one failure is no outage: %+v", q)
	}
}

func TestRecentPeersReadsTheTail(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	// An old failure far before the tail, then enough filler to push it out, then the tail.
	b.WriteString(strings.ReplaceAll(fedFailed, "hs2.test:8482", "old.example") + "\n")
	filler := strings.Repeat("2026-12-02 08:00:00,000 - synapse.x - 1 - INFO - x - filler line\n", TailBytes/60)
	b.WriteString(filler)
	b.WriteString(fedFailed + "\n")
	path := filepath.Join(dir, "homeserver.log")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// A rotated, gzipped file is not read.
	if err := os.WriteFile(path+".1.gz", []byte("not gzip"), 0o600); err != nil {
		t.Fatal(err)
	}
	pl, err := RecentPeers(t.Context(), []Source{{Type: "file", Path: filepath.Join(dir, "homeserver.log*")}}, 30*time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pl["old.example"]; ok || pl["hs2.test:8482"] == nil || pl["hs2.test:8482"].Failures != 1 {
		t.Errorf("peers %+v: want only hs2 from the tail", pl.Sorted())
	}
}

func FuzzPeerLogFeed(f *testing.F) {
	f.Add(fedFailed)
	f.Add(fedOK)
	f.Add("] Request failed: matrixfederationclient [")
	f.Fuzz(func(t *testing.T, line string) {
		pl := PeerLog{}
		pl.Feed([]byte(line))
		for s, p := range pl {
			if s == "" || p.Server != s {
				t.Fatalf("bad peer %q: %+v", s, p)
			}
		}
	})
}
