package commands

import (
	"fmt"
	"time"

	"maunium.net/go/mautrix/event/cmdschema"

	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
)

func pingCommand() *Handler {
	return &Handler{
		Name:        "ping",
		Description: text("Check that medic is alive and how long the command took to reach it"),
		Parameters:  []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			if ce.Timestamp == 0 { // the terminal: nothing travelled
				reply(ce, "Pong!")
				return
			}
			lag := time.Since(time.UnixMilli(ce.Timestamp)).Round(time.Millisecond)
			reply(ce, "Pong! (your message reached me after %s)", lag)
		},
	}
}

// schemaLine is !version's line on Synapse's database schema and whether medic's repairs
// were tested on it ("" without a configured database). Read from the database, not the
// admin API: the schema is what the repairs write, and it can differ from what the running
// Synapse's version suggests (a downgrade, a database restored from a newer server).
func schemaLine(ce *Event) string {
	if ce.Meta.DB == nil {
		return ""
	}
	s, err := ce.Meta.DB.Schema(ce.Ctx)
	if err != nil {
		return fmt.Sprintf("\nSynapse's database: schema unknown (%s)", mdtext.Text(err.Error()))
	}
	mark := ""
	if !recovery.TestedSchema.Covers(recovery.SchemaState(s)) {
		mark = "⚠️ "
	}
	compat := ""
	if s.Compat > 0 {
		compat = fmt.Sprintf(" (compat %d)", s.Compat)
	}
	// The verdict names delta files, which Synapse's database holds: text, not Markdown.
	return fmt.Sprintf("\n%sSynapse's database: schema %d%s, %s", mark, s.Version, compat, mdtext.Text(recovery.TestedSchema.Verdict(recovery.SchemaState(s))))
}

func versionCommand() *Handler {
	return &Handler{
		Name:        "version",
		Description: text("Show medic's version, Synapse's server_version, and Synapse's database schema with whether medic was tested on it"),
		Parameters:  []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			var warning string
			if w := ce.Meta.TestingSwitchWarning(); w != "" {
				warning = "\n\n⚠️ " + w + "."
			}
			schema := schemaLine(ce)
			sv, err := ce.Meta.Admin.ServerVersion(ce.Ctx)
			if err != nil {
				Fail(ce, "Synapse Medic %s. Could not get Synapse's version: %v%s%s", ce.Meta.Version, err, schema, warning)
				return
			}
			reply(ce, "Synapse Medic %s\nSynapse %s%s%s", ce.Meta.Version, sv, schema, warning)
		},
	}
}
