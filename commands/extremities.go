package commands

import (
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/event/cmdschema"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
)

func roomParam(desc string) []*cmdschema.Parameter {
	return []*cmdschema.Parameter{{Key: "room", Schema: cmdschema.PrimitiveTypeRoomID.Schema(), Description: text(desc)}}
}

func extremitiesCommand() *Handler {
	return &Handler{
		Name:        "extremities",
		Description: text("Rooms with many forward extremities, or one room's extremities"),
		Parameters: []*cmdschema.Parameter{{Key: "room", Schema: cmdschema.PrimitiveTypeRoomID.Schema(), Optional: true,
			Description: text("A room ID to show in detail")}},
		TailParam: "room",
		Func: func(ce *Event) {
			if len(ce.Args) == 1 {
				extremitiesOfRoom(ce, ce.Args[0])
				return
			}
			if !readDB(ce) {
				return
			}
			rooms, err := ce.Meta.DB.RoomsWithExtremities(ce.Ctx, diagnose.ExtremitiesWarn, 20)
			if err != nil {
				FailErr(ce, "Could not count forward extremities", err)
				return
			}
			if len(rooms) == 0 {
				reply(ce, "No room has %d or more forward extremities. ✅", diagnose.ExtremitiesWarn)
				return
			}
			var b strings.Builder
			fmt.Fprintf(&b, "Rooms with %d or more forward extremities:\n\n| room | extremities |\n|---|---|\n", diagnose.ExtremitiesWarn)
			for _, r := range rooms {
				fmt.Fprintf(&b, "| %s | %d |\n", mdtext.Code(r.RoomID), r.Count)
			}
			fmt.Fprintf(&b, "\n`%sextremities trim <room>` drops all but the newest (asks first).", prefix(ce))
			reply(ce, b.String())
		},
		Subcommands: []*Handler{{
			Name:        "trim",
			Description: text("Drop all but the newest forward extremity of a room (asks for approval)"),
			Parameters:  roomParam("The room ID"),
			TailParam:   "room",
			Func: func(ce *Event) {
				if len(ce.Args) != 1 {
					Fail(ce, "Usage: `%sextremities trim <room>`", prefix(ce))
					return
				}
				propose(ce, ce.Meta.Ops.ExtremitiesTrim.With(recovery.ExtremitiesTrimArgs{Room: ce.Args[0]}))
			},
		}},
	}
}

func extremitiesOfRoom(ce *Event, room string) {
	list, err := ce.Meta.Admin.ForwardExtremities(ce.Ctx, room)
	if err != nil {
		Fail(ce, "Could not get the forward extremities of %s: %s", mdtext.Code(room), mdtext.Text(err.Error()))
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s has %d forward extremities:\n\n| event | depth | received |\n|---|---|---|\n", mdtext.Code(room), len(list))
	for i, e := range list {
		if i == 20 {
			fmt.Fprintf(&b, "| … %d more | | |\n", len(list)-20)
			break
		}
		fmt.Fprintf(&b, "| %s | %d | %s |\n", mdtext.Code(e.EventID), e.Depth, time.UnixMilli(e.ReceivedTS).UTC().Format(time.DateTime))
	}
	reply(ce, b.String())
}
