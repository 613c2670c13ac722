package diagnose

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapselog"
)

// ForgottenRoom is a room the logs show Synapse dropping traffic for, with what Synapse's
// database says of it.
type ForgottenRoom struct {
	*synapselog.Room
	synapse.RoomStatus
	// Checked is false when Synapse's database could not be asked.
	Checked bool
	// LostJoins are local users whose join the access log shows but the database does not
	// have (a restore to a backup from before it).
	LostJoins []string
}

// State says in words where the room stands.
func (f *ForgottenRoom) State() string {
	switch {
	case !f.Checked:
		return "not checked (no database)"
	case !f.Known:
		return "unknown to Synapse"
	case f.LocalJoined == 0:
		return "known, no local member joined"
	case len(f.LostJoins) > 0:
		return fmt.Sprintf("known, %d join(s) from the logs missing", len(f.LostJoins))
	default:
		return "rejoined"
	}
}

// Sources converts the configured log sources.
func Sources(logs []config.LogSource) []synapselog.Source {
	out := make([]synapselog.Source, len(logs))
	for i, l := range logs {
		out[i] = synapselog.Source{Type: l.Type, Path: l.Path, Unit: l.Unit}
	}
	return out
}

// ScanForgotten reads the logs since a time, finds the rooms of events dropped for rooms
// Synapse knows but is not in (by asking the servers that sent them, over federation signed
// with the server's key; fc may be nil), and cross-checks each room with Synapse's database
// (db may be nil).
func ScanForgotten(ctx context.Context, sources []synapselog.Source, since time.Time, db *synapse.DB, fc *federation.Client) ([]*ForgottenRoom, *synapselog.Report, error) {
	rep, err := synapselog.ScanSources(ctx, sources, since)
	if err != nil {
		return nil, rep, err
	}
	if fc != nil {
		resolveEvents(ctx, fc, rep)
	}
	var lost map[string][]string
	if db != nil {
		if lost, err = lostJoins(ctx, db, rep); err != nil {
			return nil, rep, err
		}
	}
	// Synapse drops the traffic of a room an admin deleted, as of a room it forgot: not a
	// room to rejoin, unless a local user joined it again after (a lost join, kept above).
	for roomID := range rep.Deleted {
		if len(lost[roomID]) == 0 {
			delete(rep.Rooms, roomID)
		}
	}
	rooms := rep.SortedRooms()
	out := make([]*ForgottenRoom, len(rooms))
	ids := make([]string, len(rooms))
	for i, r := range rooms {
		out[i] = &ForgottenRoom{Room: r, LostJoins: lost[r.RoomID]}
		ids[i] = r.RoomID
	}
	if db != nil && len(ids) > 0 {
		statuses, err := db.RoomStatuses(ctx, ids)
		if err != nil {
			return out, rep, err
		}
		for _, f := range out {
			f.RoomStatus, f.Checked = statuses[f.RoomID], true
		}
	}
	return out, rep, nil
}

// joinMissingAfter is how much older than a join in the access log the database's membership
// event of that user may be and still be the join (the line is written when the request
// ends, after the event was persisted; clocks of log and database may differ a little).
const joinMissingAfter = time.Minute

// joinLost tells whether the database lacks a join the log shows: the user's membership is
// not join, and it is none or older than the join (a later leave or kick is the database
// being right).
func joinLost(m synapse.Membership, j *synapselog.Join) bool {
	return m.Membership != "join" && (m.Membership == "" || m.Received.Before(j.Time.Add(-joinMissingAfter)))
}

// lostJoins finds the joins the access log shows that Synapse's database lacks: no membership
// of the user in the room, or one other than join from before the join. A restore to a
// backup older than the join is what produces them; a room joined since the backup that no
// server has sent traffic for shows nowhere else. It adds their rooms to the report, with
// the servers the joins named (and the room ID's own) as the servers to ask, and returns the
// users per room.
func lostJoins(ctx context.Context, db *synapse.DB, rep *synapselog.Report) (map[string][]string, error) {
	if len(rep.Joins) == 0 {
		return nil, nil
	}
	pairs := make([][2]string, 0, len(rep.Joins))
	for k := range rep.Joins {
		pairs = append(pairs, k)
	}
	have, err := db.Memberships(ctx, pairs)
	if err != nil {
		return nil, err
	}
	lost := map[string][]string{}
	for k, j := range rep.Joins {
		// A room an admin deleted since takes its memberships with it: no lost join (and
		// never one to rejoin).
		if d, deleted := rep.Deleted[j.RoomID]; !joinLost(have[k], j) || deleted && !d.Before(j.Time) {
			continue
		}
		lost[j.RoomID] = append(lost[j.RoomID], j.User)
		rep.AddLostJoin(j)
	}
	for _, users := range lost {
		slices.Sort(users)
	}
	return lost, nil
}

// resolveEvents moves dropped events whose room a sender names into the report's rooms.
// Events no server will describe stay unresolved, with each server's answer in Why.
func resolveEvents(ctx context.Context, fc *federation.Client, rep *synapselog.Report) {
	for eventID, u := range rep.Unresolved {
		var why []string
		for _, server := range synapselog.ServerList(u.Servers) {
			roomID, err := synapse.EventRoom(ctx, fc, server, id.EventID(eventID))
			if err != nil {
				zerolog.Ctx(ctx).Debug().Err(err).Str("event_id", eventID).Str("server", server).Msg("Could not resolve event's room")
				why = append(why, server+": "+err.Error())
				u.Why = strings.Join(why, "; ")
				continue
			}
			rep.AddResolved(roomID.String(), u)
			delete(rep.Unresolved, eventID)
			break
		}
	}
}
