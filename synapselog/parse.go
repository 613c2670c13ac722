// Package synapselog reads Synapse's logs for the traces of rooms the server has forgotten:
// federation traffic it drops because it does not know the room or is not in it. It streams
// any number of sources in constant memory.
package synapselog

import (
	"bytes"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Kind is what a line says.
type Kind int

const (
	KindOther Kind = iota
	// KindUnknownRoom: "Ignoring PDU for unknown room_id: <room>" (room not in `rooms`).
	KindUnknownRoom
	// KindNotInRoomPDU: "Ignoring PDU from <server> as we're not in the room"; the room is
	// not named, the event ID is at the end of the request tag.
	KindNotInRoomPDU
	// KindReceipt / KindTyping: "Ignoring receipt|typing update for room '<room>' from server <server> as we're not in the room".
	KindReceipt
	KindTyping
	// KindTxn: "Received txn <id> from <origin>. (PDUs: n, EDUs: m)" ties a request tag to its origin.
	KindTxn
	// KindStart: "***** STARTING SERVER *****": request tags restart at 0.
	KindStart
	// KindRejectedInState: "While checking auth of <Event …> against auth_events: 403: During
	// auth for event <EventID>: found rejected event <RejectedID> in the state" — an incoming
	// event refused because an event it cites was rejected (a rejection chain).
	KindRejectedInState
	// KindJoin: an access-log line of a local user's join that succeeded ("{@user:server}
	// Processed request: … 200 "POST /_matrix/client/v3/join/<room>?via=… HTTP/1.1""). After a
	// restore it is the only trace of a room joined since the backup that no server has sent
	// traffic for yet.
	KindJoin
	// KindRoomDeleted: an admin's room deletion that Synapse accepted ("DELETE
	// /_synapse/admin/v1|v2/rooms/<room>"): the room's memberships go with it, and a join
	// before it is no lost join.
	KindRoomDeleted
)

// Line is one parsed Synapse log record.
type Line struct {
	Kind    Kind
	Time    time.Time // zero when the line carries no Synapse timestamp
	Tag     string    // request tag, e.g. PUT-2
	RoomID  string
	Server  string // origin server named in the message
	EventID string
	// RejectedID is the rejected event a KindRejectedInState line names.
	RejectedID string
	// PDUs is the number of events a KindTxn line says the transaction carried.
	PDUs int
	// User is who joined (KindJoin: the requester; for the admin join API, the admin); Via
	// the servers the join named (via= and server_name= parameters).
	User string
	Via  []string
}

// quick rejects most lines with one search for a byte string all interesting lines share.
var (
	markIgnoring = []byte("Ignoring ")
	markTxn      = []byte("Received txn ")
	markStart    = []byte("STARTING SERVER")
	markRejected = []byte("found rejected event ")
	// "join", not "/join": the scan looks for a marker's first byte first, and '/' is in
	// every request path of the access log.
	markJoin   = []byte("join")
	markDelete = []byte("DELETE /_synapse/admin/v")
)

// Interesting reports whether a raw line can be a line ParseLine cares about. It is the hot
// path of a scan: two or three substring searches per line.
func Interesting(raw []byte) bool {
	return bytes.Contains(raw, markIgnoring) || bytes.Contains(raw, markTxn) || bytes.Contains(raw, markStart) ||
		bytes.Contains(raw, markRejected) || bytes.Contains(raw, markJoin) || bytes.Contains(raw, markDelete)
}

const timeLayout = "2006-01-02 15:04:05,000"

// ParseLine parses a Synapse log line in the default format
// "time - logger - lineno - LEVEL - request - message", also when a prefix precedes it
// (journald, container runtimes). Lines it does not understand come back as KindOther.
func ParseLine(s string) Line {
	var l Line
	if strings.Contains(s, "***** STARTING SERVER *****") {
		l.Kind = KindStart
		l.Time = findTime(s)
		return l
	}
	// The level is fixed text; the earliest level marker ends the head (time, logger, line).
	head := -1
	var rest string
	for _, level := range []string{" - INFO - ", " - WARNING - ", " - DEBUG - ", " - ERROR - ", " - CRITICAL - "} {
		if i := strings.Index(s, level); i >= 0 && (head < 0 || i < head) {
			head, rest = i, s[i+len(level):]
		}
	}
	if head < 0 {
		return l
	}
	tag, msg, ok := strings.Cut(rest, " - ")
	if !ok {
		return l
	}
	l.Tag = tag
	l.Time = findTime(s[:head])
	switch {
	case strings.HasPrefix(msg, "Ignoring PDU for unknown room_id: "):
		l.Kind = KindUnknownRoom
		l.RoomID = firstField(msg[len("Ignoring PDU for unknown room_id: "):])
	case strings.HasPrefix(msg, "Ignoring PDU from ") && strings.Contains(msg, " as we're not in the room"):
		l.Kind = KindNotInRoomPDU
		l.Server = firstField(msg[len("Ignoring PDU from "):])
		if i := strings.LastIndex(l.Tag, "-$"); i >= 0 {
			l.EventID = l.Tag[i+1:]
		}
	case strings.HasPrefix(msg, "Ignoring receipt for room "):
		l.Kind = KindReceipt
		l.RoomID, l.Server = roomAndServer(msg[len("Ignoring receipt for room "):])
	case strings.HasPrefix(msg, "Ignoring typing update for room "):
		l.Kind = KindTyping
		l.RoomID, l.Server = roomAndServer(msg[len("Ignoring typing update for room "):])
	case strings.Contains(msg, ": found rejected event ") && strings.Contains(msg, "During auth for event "):
		_, after, _ := strings.Cut(msg, "During auth for event ")
		l.EventID = strings.TrimSuffix(firstField(after), ":")
		_, after, _ = strings.Cut(msg, ": found rejected event ")
		l.RejectedID = firstField(after)
		if strings.HasPrefix(l.EventID, "$") && strings.HasPrefix(l.RejectedID, "$") {
			l.Kind = KindRejectedInState
		}
	case strings.Contains(msg, "Processed request: ") && strings.Contains(msg, "/join"):
		l.User, l.RoomID, l.Via = parseJoin(msg)
		if l.RoomID != "" {
			l.Kind = KindJoin
		}
	case strings.Contains(msg, "Processed request: ") && strings.Contains(msg, `"DELETE /_synapse/admin/v`):
		if l.RoomID = parseRoomDeletion(msg); l.RoomID != "" {
			l.Kind = KindRoomDeleted
		}
	case strings.HasPrefix(msg, "Received txn "):
		if _, after, ok := strings.Cut(msg[len("Received txn "):], " from "); ok {
			l.Kind = KindTxn
			l.Server = strings.TrimSuffix(firstField(after), ".")
			l.PDUs = countAfter(after, "(PDUs: ")
		}
	}
	if (l.Kind == KindUnknownRoom || l.Kind == KindReceipt || l.Kind == KindTyping || l.Kind == KindJoin || l.Kind == KindRoomDeleted) && !validRoomID(l.RoomID) {
		l.Kind = KindOther
	}
	return l
}

// joinPaths are the endpoints through which a local user joins a room by its ID (an alias
// names no room: skipped).
var joinPaths = []string{"/_matrix/client/v3/join/", "/_matrix/client/r0/join/", "/_synapse/admin/v1/join/",
	"/_matrix/client/v3/rooms/", "/_matrix/client/r0/rooms/"}

// parseJoin reads a Synapse access-log message ("{@user:server} Processed request: … 200
// "POST <path> HTTP/1.1" …") for a join that succeeded: who, which room, through which servers.
func parseJoin(msg string) (user, room string, via []string) {
	head, rest, _ := strings.Cut(msg, " Processed request: ")
	if i := strings.LastIndex(head, "{@"); i >= 0 && strings.HasSuffix(head, "}") {
		user = head[i+1 : len(head)-1]
		// A puppeted request (login-as-user) names "{@admin:server|@user:server}": the
		// user is who joined.
		if j := strings.LastIndexByte(user, '|'); j >= 0 {
			user = user[j+1:]
		}
		if !strings.HasPrefix(user, "@") {
			user = ""
		}
	}
	// The status precedes the quoted request line: `… 47B 200 "POST /… HTTP/1.1"`.
	status, req, ok := strings.Cut(rest, ` "POST `)
	if !ok || !strings.HasSuffix(status, " 200") || user == "" {
		return "", "", nil
	}
	target := firstField(req)
	path, query, _ := strings.Cut(target, "?")
	for _, p := range joinPaths {
		seg, ok := strings.CutPrefix(path, p)
		if !ok {
			continue
		}
		if strings.HasSuffix(p, "/rooms/") {
			if seg, ok = strings.CutSuffix(seg, "/join"); !ok {
				return "", "", nil
			}
		}
		if r, err := url.PathUnescape(seg); err == nil && !strings.Contains(r, "/") {
			room = r
		}
		break
	}
	if !validRoomID(room) {
		return "", "", nil
	}
	if q, err := url.ParseQuery(query); err == nil {
		for _, key := range []string{"via", "server_name"} {
			for _, v := range q[key] {
				if v != "" && !slices.Contains(via, v) {
					via = append(via, v)
				}
			}
		}
	}
	return user, room, via
}

// parseRoomDeletion reads a Synapse access-log message for an admin's room deletion that
// succeeded (`… 200 "DELETE /_synapse/admin/v2/rooms/<room> HTTP/1.1" …`, v1 too) and returns
// the room ("" otherwise).
func parseRoomDeletion(msg string) string {
	_, rest, _ := strings.Cut(msg, " Processed request: ")
	status, req, ok := strings.Cut(rest, ` "DELETE `)
	if !ok || !strings.HasSuffix(status, " 200") {
		return ""
	}
	path, _, _ := strings.Cut(firstField(req), "?")
	for _, p := range []string{"/_synapse/admin/v1/rooms/", "/_synapse/admin/v2/rooms/"} {
		if seg, ok := strings.CutPrefix(path, p); ok {
			if r, err := url.PathUnescape(seg); err == nil && validRoomID(r) && !strings.Contains(r, "/") {
				return r
			}
		}
	}
	return ""
}

// countAfter reads the number after mark in s (0 when there is none).
func countAfter(s, mark string) int {
	_, rest, ok := strings.Cut(s, mark)
	if !ok {
		return 0
	}
	n := 0
	for i := 0; i < len(rest) && i < 9 && rest[i] >= '0' && rest[i] <= '9'; i++ {
		n = n*10 + int(rest[i]-'0')
	}
	return n
}

func firstField(s string) string {
	if i := strings.IndexAny(s, " \t\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// roomAndServer parses "'<room>' from server <server> as we're not in the room".
func roomAndServer(s string) (room, server string) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || (s[0] != '\'' && s[0] != '"') {
		return "", ""
	}
	q := s[0]
	end := strings.IndexByte(s[1:], q)
	if end < 0 {
		return "", ""
	}
	room = s[1 : 1+end]
	rest := s[2+end:]
	if _, after, ok := strings.Cut(rest, " from server "); ok {
		server = firstField(after)
	}
	return room, server
}

func validRoomID(r string) bool {
	return len(r) > 1 && r[0] == '!' && !strings.ContainsAny(r, " \t'\"")
}

// findTime finds a Synapse timestamp ("2026-11-21 21:39:36,351") at the start of the line or
// right after a prefix.
func findTime(s string) time.Time {
	for i := 0; i+len(timeLayout) <= len(s) && i < 200; i++ {
		if s[i] >= '0' && s[i] <= '9' && (i == 0 || s[i-1] == ' ' || s[i-1] == '"' || s[i-1] == ':') {
			if t, err := time.Parse(timeLayout, s[i:i+len(timeLayout)]); err == nil {
				return t
			}
		}
	}
	return time.Time{}
}
