package commands

import (
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event/cmdschema"
)

func helpCommand() *Handler {
	return &Handler{
		Name:        "help",
		Description: text("List commands, or show how to use one"),
		Parameters: []*cmdschema.Parameter{{
			Key:         "command",
			Schema:      cmdschema.PrimitiveTypeString.Schema(),
			Optional:    true,
			Description: text("The command to explain"),
		}},
		TailParam: "command",
		Func:      help,
	}
}

func help(ce *Event) {
	pfx := prefix(ce)
	if len(ce.Args) > 0 {
		helpOne(ce, pfx, ce.Args)
		return
	}
	var b strings.Builder
	b.WriteString("**Synapse Medic commands**\n\n")
	for _, h := range ce.Meta.Commands {
		fmt.Fprintf(&b, "* `%s` — %s\n", usage(pfx, h), describe(h))
		for _, sub := range h.Subcommands {
			fmt.Fprintf(&b, "* `%s` — %s\n", usage(pfx, sub, h.Name), describe(sub))
		}
	}
	fmt.Fprintf(&b, "\n`%shelp <command>` explains one command.", pfx)
	replyWhole(ce, b.String())
}

func helpOne(ce *Event, pfx string, path []string) {
	name := strings.TrimPrefix(strings.ToLower(path[0]), pfx)
	var h *Handler
	for _, c := range ce.Meta.Commands {
		if c.Name == name || slices.Contains(c.Aliases, name) {
			h = c
		}
	}
	if h == nil {
		Fail(ce, "There is no command `%s%s`.%s", pfx, name, suggestion(ce.Meta, name))
		return
	}
	var parents []string
	if len(path) > 1 {
		for _, sub := range h.Subcommands {
			if sub.Name == strings.ToLower(path[1]) {
				parents, h = []string{h.Name}, sub
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "`%s`\n\n%s\n", usage(pfx, h, parents...), describe(h))
	for _, p := range h.Parameters {
		opt := ""
		if p.Optional {
			opt = " (optional)"
		}
		fmt.Fprintf(&b, "\n* `%s`%s — %s", p.Key, opt, plain(p.Description))
	}
	if len(h.Aliases) > 0 {
		fmt.Fprintf(&b, "\n\nAlso: `%s%s`", pfx, strings.Join(h.Aliases, "`, `"+pfx))
	}
	for _, sub := range h.Subcommands {
		fmt.Fprintf(&b, "\n* `%s` — %s", usage(pfx, sub, h.Name), describe(sub))
	}
	replyWhole(ce, b.String())
}
