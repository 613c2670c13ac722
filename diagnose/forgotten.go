package diagnose

import (
	"context"
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
	rooms := rep.SortedRooms()
	out := make([]*ForgottenRoom, len(rooms))
	ids := make([]string, len(rooms))
	for i, r := range rooms {
		out[i] = &ForgottenRoom{Room: r}
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
