package commands

import (
	"time"

	"maunium.net/go/mautrix/event/cmdschema"
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

func versionCommand() *Handler {
	return &Handler{
		Name:        "version",
		Description: text("Show medic's version and Synapse's server_version"),
		Parameters:  []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			var warning string
			if w := ce.Meta.TestingSwitchWarning(); w != "" {
				warning = "\n\n⚠️ " + w + "."
			}
			sv, err := ce.Meta.Admin.ServerVersion(ce.Ctx)
			if err != nil {
				Fail(ce, "Synapse Medic %s. Could not get Synapse's version: %v%s", ce.Meta.Version, err, warning)
				return
			}
			reply(ce, "Synapse Medic %s\nSynapse %s%s", ce.Meta.Version, sv, warning)
		},
	}
}
