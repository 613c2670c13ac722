package synapselog

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Room is what the logs say about one room the server dropped traffic for.
type Room struct {
	RoomID  string
	Servers map[string]int // origin server → lines
	First   time.Time
	Last    time.Time
	Count   int
	Kinds   map[Kind]int
}

// Unresolved is a PDU dropped for a room Synapse knows but is not in; the log names the
// event, not the room, so the room must be found from the event (over federation).
type Unresolved struct {
	EventID string
	Servers map[string]int
	First   time.Time
	Last    time.Time
	Count   int
	// Why says why no server told the event's room (set by whoever asked them).
	Why string
}

// RejectedTrace counts the log lines that blame one rejected event for refusing others.
type RejectedTrace struct {
	RejectedID string
	Count      int       // lines
	Events     int       // distinct events refused (approximate: consecutive repeats folded)
	Example    string    // one refused event
	First      time.Time // zero when lines carry no time
	Last       time.Time
}

// Received is what the log says one server sent (federation transactions it delivered).
type Received struct {
	Server string
	Txns   int
	PDUs   int
	First  time.Time
	Last   time.Time
}

// Join is a local user's join the access log shows (the last one when there are several).
type Join struct {
	RoomID string
	User   string
	Via    []string
	Time   time.Time
}

// Report is the result of a scan.
type Report struct {
	// Received holds the transactions received, by origin server.
	Received   map[string]*Received
	Rooms      map[string]*Room
	Unresolved map[string]*Unresolved
	// RejectedInState holds "found rejected event … in the state" lines by rejected event.
	RejectedInState map[string]*RejectedTrace
	// Joins holds the joins that succeeded, by room and user: after a restore, those made
	// since the backup are missing from the database (diagnose.ScanForgotten compares).
	Joins map[[2]string]*Join
	// Deleted holds the rooms an admin deleted (the last time): their members\' joins before
	// that are no lost joins.
	Deleted map[string]time.Time
	Lines   int64
	Bytes   int64
	Sources []string
}

func newReport() *Report {
	return &Report{Received: map[string]*Received{}, Rooms: map[string]*Room{}, Unresolved: map[string]*Unresolved{}, RejectedInState: map[string]*RejectedTrace{}, Joins: map[[2]string]*Join{}, Deleted: map[string]time.Time{}}
}

// AddLostJoin adds the room of a join the database lacks to the rooms, with the servers the
// join named as the servers to ask for its state (the recovery adds the room ID's own).
func (r *Report) AddLostJoin(j *Join) {
	room := r.Rooms[j.RoomID]
	if room == nil {
		room = &Room{RoomID: j.RoomID, Servers: map[string]int{}, Kinds: map[Kind]int{}, First: j.Time}
		r.Rooms[j.RoomID] = room
	}
	room.Count++
	room.Kinds[KindJoin]++
	if !j.Time.IsZero() {
		if room.First.IsZero() || j.Time.Before(room.First) {
			room.First = j.Time
		}
		if j.Time.After(room.Last) {
			room.Last = j.Time
		}
	}
	for _, v := range j.Via {
		room.Servers[v]++
	}
}

// SortedRooms returns the rooms, most recently seen first.
func (r *Report) SortedRooms() []*Room {
	rooms := make([]*Room, 0, len(r.Rooms))
	for _, room := range r.Rooms {
		rooms = append(rooms, room)
	}
	sort.Slice(rooms, func(i, j int) bool {
		if !rooms[i].Last.Equal(rooms[j].Last) {
			return rooms[i].Last.After(rooms[j].Last)
		}
		return rooms[i].RoomID < rooms[j].RoomID
	})
	return rooms
}

// ServerList returns a room's origin servers, most frequent first.
func ServerList(servers map[string]int) []string {
	list := make([]string, 0, len(servers))
	for s := range servers {
		list = append(list, s)
	}
	sort.Slice(list, func(i, j int) bool {
		if servers[list[i]] != servers[list[j]] {
			return servers[list[i]] > servers[list[j]]
		}
		return list[i] < list[j]
	})
	return list
}

// AddResolved files a dropped event under the room it turned out to belong to.
func (r *Report) AddResolved(roomID string, u *Unresolved) {
	room := r.Rooms[roomID]
	if room == nil {
		room = &Room{RoomID: roomID, Servers: map[string]int{}, Kinds: map[Kind]int{}, First: u.First}
		r.Rooms[roomID] = room
	}
	room.Count += u.Count
	room.Kinds[KindNotInRoomPDU] += u.Count
	for s, n := range u.Servers {
		room.Servers[s] += n
	}
	if room.First.IsZero() || (!u.First.IsZero() && u.First.Before(room.First)) {
		room.First = u.First
	}
	if u.Last.After(room.Last) {
		room.Last = u.Last
	}
}

// tagOrigins remembers which origin server each recent request tag belongs to. Bounded: a
// transaction's lines follow its "Received txn" line closely, so old tags can be forgotten.
type tagOrigins struct {
	m    map[string]string
	ring []string
	next int
}

const tagMemory = 8192

func newTagOrigins() *tagOrigins {
	return &tagOrigins{m: make(map[string]string, tagMemory), ring: make([]string, tagMemory)}
}

func (t *tagOrigins) put(tag, origin string) {
	if old := t.ring[t.next]; old != "" {
		delete(t.m, old)
	}
	t.ring[t.next] = tag
	t.next = (t.next + 1) % tagMemory
	t.m[tag] = origin
}

func (t *tagOrigins) reset() {
	clear(t.m)
	clear(t.ring)
	t.next = 0
}

// Scanner accumulates a report over log streams fed to it in chronological order.
type Scanner struct {
	Since  time.Time
	report *Report
	tags   *tagOrigins
}

func NewScanner(since time.Time) *Scanner {
	return &Scanner{Since: since, report: newReport(), tags: newTagOrigins()}
}

// Report returns what was found so far.
func (sc *Scanner) Report() *Report { return sc.report }

// Scan reads one stream in constant memory. Like grep, it searches big blocks for the
// few markers that interesting lines contain (SIMD-fast bytes.Index) and only looks at the
// lines around a hit, instead of examining every line.
func (sc *Scanner) Scan(r io.Reader) error {
	const bufSize = 4 << 20
	buf := make([]byte, bufSize)
	filled := 0
	skipping := false // inside a line longer than the buffer: not a Synapse record we parse
	for {
		n, err := io.ReadFull(r, buf[filled:])
		filled += n
		eof := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !eof {
			return err
		}
		end := bytes.LastIndexByte(buf[:filled], '\n') + 1
		if eof && end < filled {
			end = filled // the last line has no newline
		}
		if end == 0 { // no newline in a full buffer: a giant line
			sc.report.Bytes += int64(filled)
			filled, skipping = 0, true
			if eof {
				return nil
			}
			continue
		}
		block := buf[:end]
		if skipping { // drop the tail of the giant line
			i := bytes.IndexByte(block, '\n') + 1
			sc.report.Bytes += int64(i)
			sc.report.Lines++
			block, skipping = block[i:], false
		}
		sc.scanBlock(block)
		sc.report.Bytes += int64(len(block))
		copy(buf, buf[end:filled])
		filled -= end
		if eof && filled == 0 {
			return nil
		}
	}
}

var markers = [][]byte{markIgnoring, markTxn, markStart, markRejected, markJoin, markDelete}

// scanBlock feeds the lines of a block of whole lines that contain a marker, in order.
func (sc *Scanner) scanBlock(block []byte) {
	sc.report.Lines += int64(bytes.Count(block, []byte{'\n'}))
	if len(block) > 0 && block[len(block)-1] != '\n' {
		sc.report.Lines++
	}
	var starts []int
	for _, m := range markers {
		for off := 0; ; {
			i := bytes.Index(block[off:], m)
			if i < 0 {
				break
			}
			pos := off + i
			lineStart := bytes.LastIndexByte(block[:pos], '\n') + 1
			starts = append(starts, lineStart)
			next := bytes.IndexByte(block[pos:], '\n')
			if next < 0 {
				break
			}
			off = pos + next + 1
		}
	}
	if len(starts) == 0 {
		return
	}
	slices.Sort(starts)
	starts = slices.Compact(starts)
	for _, ls := range starts {
		le := bytes.IndexByte(block[ls:], '\n')
		if le < 0 {
			le = len(block) - ls
		}
		sc.feed(unwrap(block[ls : ls+le]))
	}
}

// unwrap returns the Synapse record inside a container runtime's JSON log line
// ({"log": "...", "stream": ..., "time": ...}); other lines are returned as they are.
func unwrap(line []byte) string {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) > 0 && trimmed[0] == '{' && bytes.Contains(trimmed, []byte(`"log"`)) {
		var rec struct {
			Log string `json:"log"`
		}
		if json.Unmarshal(trimmed, &rec) == nil && rec.Log != "" {
			return strings.TrimRight(rec.Log, "\r\n")
		}
	}
	return string(bytes.TrimRight(line, "\r\n"))
}

func (sc *Scanner) feed(raw string) {
	l := ParseLine(raw)
	if l.Kind == KindOther {
		return
	}
	if l.Kind == KindStart {
		sc.tags.reset()
		return
	}
	if !l.Time.IsZero() && l.Time.Before(sc.Since) {
		return
	}
	switch l.Kind {
	case KindJoin:
		sc.report.Joins[[2]string{l.RoomID, l.User}] = &Join{RoomID: l.RoomID, User: l.User, Via: l.Via, Time: l.Time}
		return
	case KindRoomDeleted:
		if l.Time.After(sc.report.Deleted[l.RoomID]) {
			sc.report.Deleted[l.RoomID] = l.Time
		}
		return
	case KindRejectedInState:
		tr := sc.report.RejectedInState[l.RejectedID]
		if tr == nil {
			tr = &RejectedTrace{RejectedID: l.RejectedID, First: l.Time}
			sc.report.RejectedInState[l.RejectedID] = tr
		}
		tr.Count++
		if tr.Example != l.EventID {
			tr.Events++
			tr.Example = l.EventID
		}
		tr.Last = l.Time
		return
	case KindTxn:
		if l.Tag != "" && l.Server != "" {
			sc.tags.put(l.Tag, l.Server)
		}
		if l.Server != "" {
			rc := sc.report.Received[l.Server]
			if rc == nil {
				rc = &Received{Server: l.Server, First: l.Time}
				sc.report.Received[l.Server] = rc
			}
			rc.Txns++
			rc.PDUs += l.PDUs
			if l.Time.After(rc.Last) {
				rc.Last = l.Time
			}
		}
		return
	case KindNotInRoomPDU:
		if l.EventID == "" {
			return
		}
		u := sc.report.Unresolved[l.EventID]
		if u == nil {
			u = &Unresolved{EventID: l.EventID, Servers: map[string]int{}, First: l.Time}
			sc.report.Unresolved[l.EventID] = u
		}
		u.Count++
		u.Last = l.Time
		if l.Server != "" {
			u.Servers[l.Server]++
		}
		return
	}
	origin := l.Server
	if origin == "" {
		origin = sc.tags.m[l.Tag]
	}
	room := sc.report.Rooms[l.RoomID]
	if room == nil {
		room = &Room{RoomID: l.RoomID, Servers: map[string]int{}, Kinds: map[Kind]int{}, First: l.Time}
		sc.report.Rooms[l.RoomID] = room
	}
	room.Count++
	room.Kinds[l.Kind]++
	if !l.Time.IsZero() {
		if room.First.IsZero() || l.Time.Before(room.First) {
			room.First = l.Time
		}
		if l.Time.After(room.Last) {
			room.Last = l.Time
		}
	}
	if origin != "" {
		room.Servers[origin]++
	}
}

// Source is one place logs come from (config: synapse.logs).
type Source struct {
	Type string // file, journald, container
	Path string
	Unit string
}

// ScanSources scans every source, oldest data first within each.
func ScanSources(ctx context.Context, sources []Source, since time.Time) (*Report, error) {
	sc := NewScanner(since)
	err := readSources(ctx, sources, since, func(name string, r io.Reader) error {
		sc.report.Sources = append(sc.report.Sources, name)
		return sc.Scan(r)
	})
	return sc.report, err
}

// readSources has read consume every source's stream (named by its path, or journald:<unit>):
// files matching a path or glob, rotated and gzipped ones included, oldest first (by
// modification time) so request tags carry across rotation; a journald unit since a time.
func readSources(ctx context.Context, sources []Source, since time.Time, read func(name string, r io.Reader) error) error {
	for _, src := range sources {
		var err error
		switch src.Type {
		case "file", "container":
			err = readFiles(src.Path, read)
		case "journald":
			err = readJournal(ctx, src.Unit, since, func(r io.Reader) error { return read("journald:"+src.Unit, r) })
		default:
			err = fmt.Errorf("unknown log source type %q", src.Type)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func readFiles(pattern string, read func(name string, r io.Reader) error) error {
	files, err := logFiles(pattern)
	if err != nil {
		return err
	}
	for _, path := range files {
		if err := readFile(path, read); err != nil {
			return err
		}
	}
	return nil
}

// noLogFile is the error for a log path that names no file, with what to set.
const noLogFile = "no log file matches %q (set synapse.logs to the file of the handler in Synapse's log config, or use type journald)"

// logFiles lists the files matching a path or glob, oldest first (by modification time).
func logFiles(pattern string) ([]string, error) {
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("log path %q: %w", pattern, err)
	}
	if len(matches) == 0 {
		return nil, fmt.Errorf(noLogFile, pattern)
	}
	type file struct {
		path string
		mod  time.Time
	}
	files := make([]file, 0, len(matches))
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil || fi.IsDir() {
			continue
		}
		files = append(files, file{m, fi.ModTime()})
	}
	slices.SortStableFunc(files, func(a, b file) int { return a.mod.Compare(b.mod) })
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.path
	}
	return paths, nil
}

// openLog opens a log file, saying what to do when medic may not read it.
func openLog(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("%w (medic's user must be able to read Synapse's logs: add it to the logs' group, e.g. adm or matrix-synapse)", err)
	}
	return f, err
}

func readFile(path string, read func(name string, r io.Reader) error) error {
	f, err := openLog(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	if err = read(path, r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// readJournal has read consume a unit's journal (since a time, unless zero) as Synapse's log
// lines.
func readJournal(ctx context.Context, unit string, since time.Time, read func(io.Reader) error) error {
	args := []string{"-u", unit, "-o", "cat", "--no-pager"}
	if !since.IsZero() {
		args = append(args, "--since", since.Format("2006-01-02 15:04:05"))
	}
	cmd := exec.CommandContext(ctx, "journalctl", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err = cmd.Start(); err != nil {
		return fmt.Errorf("journalctl: %w", err)
	}
	readErr := read(out)
	if err = cmd.Wait(); err != nil {
		return fmt.Errorf("journalctl -u %s: %w: %s", unit, err, strings.TrimSpace(stderr.String()))
	}
	return readErr
}
