package commands

import (
	"maunium.net/go/mautrix/event/cmdschema"

	"github.com/synapse-medic/medic/recovery"
)

func importCommand() *Handler {
	return &Handler{
		Name:        "import",
		Description: text("Bring history in from another homeserver's database"),
		Parameters:  []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			reply(ce, "Use `%simport history <room> from <source>`; sources are named in medic's config (`import.sources`).", prefix(ce))
		},
		Subcommands: []*Handler{{
			Name: "history",
			Description: text("`import history <room> from <source>`: copy a room's history this server lacks from another " +
				"Synapse's database (a source named in `import.sources`, PostgreSQL or SQLite), stored as Synapse stores " +
				"backfilled events (asks for approval; restarts Synapse at the end; `!undo` removes it)"),
			Parameters: []*cmdschema.Parameter{{Key: "room", Schema: cmdschema.PrimitiveTypeRoomID.Schema(),
				Description: text("The room ID, followed by: from <source>, and optionally --force-schema")}},
			TailParam: "room",
			Func:      importHistory,
		}},
	}
}

func importHistory(ce *Event) {
	forceSchema := takeForceSchema(ce)
	args := ce.Args
	if len(args) != 3 || args[1] != "from" || len(args[0]) < 2 || args[0][0] != '!' {
		Fail(ce, "Usage: `%simport history <room ID> from <source> [--force-schema]` (sources are named in `import.sources` of medic's config)", prefix(ce))
		return
	}
	if !needDB(ce) {
		return
	}
	im := recovery.ImportArgs{Room: args[0], Source: args[2]}
	im.ForceSchema = forceSchema
	propose(ce, ce.Meta.Ops.Import.With(im))
}
