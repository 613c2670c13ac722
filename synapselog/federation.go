package synapselog

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Synapse records a dead destination in its `destinations` table only once its retries of
// one outgoing transaction give up: about 9.5 minutes after the peer died (measured on the
// testbed). Meanwhile its federation client logs every attempt, one line per request:
//
//	… - synapse.http.matrixfederationclient - 838 - INFO - … - {PUT-O-4} [hs2.test:8482] Request failed: PUT matrix-federation://hs2.test:8482/…: ConnectionRefusedError('Connection refused')
//	… - synapse.http.matrixfederationclient - 371 - INFO - … - {GET-O-1} [hs2.test:8482] Completed request: 200 OK in 0.15 secs, …
//
// so the log tells within a minute or two which peers Synapse cannot reach.
var (
	markFedClient = []byte("matrixfederationclient")
	markFailed    = []byte("] Request failed: ")
	markCompleted = []byte("] Completed request: ")
)

// Peer is what the log says about Synapse's latest requests to one server.
type Peer struct {
	Server string
	// Failures counts the failed requests since the last completed one (or since the start of
	// what was read); First and Last are the first and last of them.
	Failures    int
	First, Last time.Time
	LastError   string
	// LastOK is the last completed request (any HTTP status: the server answered).
	LastOK time.Time
}

// Failing reports whether the server's latest requests all failed, the last one at or after
// recent, and the failures span at least minSpan (a single refused connection is no outage).
func (p *Peer) Failing(recent time.Time, minSpan time.Duration) bool {
	return p.Failures > 0 && !p.Last.Before(recent) && p.Last.Sub(p.First) >= minSpan
}

// PeerLog collects federation client lines by server.
type PeerLog map[string]*Peer

// Feed reads one raw log line; other lines are ignored.
func (pl PeerLog) Feed(raw []byte) {
	if !bytes.Contains(raw, markFedClient) {
		return
	}
	failed := bytes.Index(raw, markFailed)
	completed := -1
	if failed < 0 {
		if completed = bytes.Index(raw, markCompleted); completed < 0 {
			return
		}
	}
	end := max(failed, completed)
	open := bytes.LastIndexByte(raw[:end], '[')
	if open < 0 {
		return
	}
	server := string(raw[open+1 : end])
	if server == "" || strings.ContainsAny(server, " \t[]") {
		return
	}
	at := findTime(string(raw[:min(len(raw), 240)]))
	p := pl[server]
	if p == nil {
		p = &Peer{Server: server}
		pl[server] = p
	}
	if completed >= 0 {
		p.Failures, p.First, p.Last, p.LastError = 0, time.Time{}, time.Time{}, ""
		p.LastOK = at
		return
	}
	msg := string(bytes.TrimSpace(raw[failed+len(markFailed):]))
	// "PUT matrix-federation://host/path: Error(…)": the error follows the URL.
	if i := strings.Index(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if p.Failures == 0 {
		p.First = at
	}
	p.Failures++
	p.Last, p.LastError = at, msg
}

// Read feeds every line of r.
func (pl PeerLog) Read(r io.Reader) error { return pl.read(bufio.NewReaderSize(r, 1<<16), false) }

// read feeds the lines of br; with skipFirst, the first (partial) line is dropped.
func (pl PeerLog) read(br *bufio.Reader, skipFirst bool) error {
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer (a huge request tag): skip the rest of it.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			skipFirst = false
			continue
		}
		if skipFirst {
			skipFirst = false
		} else if len(line) > 0 {
			pl.Feed(line)
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// TailBytes is how much of the end of a log file RecentPeers reads: at Synapse's default INFO
// level that is far more than the last half hour of a busy server, and it bounds the cost of
// a check that runs every few minutes whatever the size of the log.
const TailBytes = 32 << 20

// RecentPeers reads the recent end of Synapse's logs (the newest file of each file source, its
// last TailBytes; journald since the window) and returns what they say about each server
// Synapse sent requests to.
func RecentPeers(ctx context.Context, sources []Source, window time.Duration, now time.Time) (PeerLog, error) {
	pl := PeerLog{}
	for _, src := range sources {
		var err error
		switch src.Type {
		case "file", "container":
			err = pl.readTail(src.Path)
		case "journald":
			err = readJournal(ctx, src.Unit, now.Add(-window), pl.Read)
		default:
			err = fmt.Errorf("unknown log source type %q", src.Type)
		}
		if err != nil {
			return pl, err
		}
	}
	return pl, nil
}

// readTail reads the end of the newest uncompressed file matching the pattern.
func (pl PeerLog) readTail(pattern string) error {
	files, err := logFiles(pattern)
	if err != nil {
		return err
	}
	files = slices.DeleteFunc(files, func(p string) bool { return strings.HasSuffix(p, ".gz") })
	if len(files) == 0 {
		return fmt.Errorf(noLogFile, pattern)
	}
	f, err := openLog(files[len(files)-1])
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if off := fi.Size() - TailBytes; off > 0 {
		if _, err = f.Seek(off, io.SeekStart); err != nil {
			return err
		}
		// The offset falls inside a line: skip it.
		return pl.read(bufio.NewReaderSize(f, 1<<16), true)
	}
	return pl.Read(f)
}

// Sorted returns the peers by server name.
func (pl PeerLog) Sorted() []*Peer {
	out := make([]*Peer, 0, len(pl))
	for _, p := range pl {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Peer) int { return strings.Compare(a.Server, b.Server) })
	return out
}
