package commands

import (
	"fmt"
	"strings"

	mcmd "maunium.net/go/mautrix/commands"
)

// unknownCommand answers a prefixed word that is no command. Only a near miss gets an
// answer: the admin room may hold other bots with their own "!" commands, and medic must
// not answer those. The bot's gate has already dropped everything not sent by an admin.
func unknownCommand(env *Env) *Handler {
	return &Handler{
		Name: mcmd.UnknownCommandName,
		Func: func(ce *Event) {
			name := ce.Command
			if len(ce.ParentCommands) > 0 {
				name = strings.Join(ce.ParentCommands, " ") + " " + name
			}
			if s := suggestion(env, name); s != "" || !ce.Meta.Transport.Shared() {
				Fail(ce, "Unknown command `%s%s`.%s", prefix(ce), name, s)
				return
			}
			// Not ours: stay silent, but tell the terminal caller it failed.
			outcome(ce.Ctx).Failed = true
		},
	}
}

// suggestion returns " Did you mean `!x`?" for the closest command name within a small edit
// distance, or "".
func suggestion(env *Env, typed string) string {
	best, bestDist := "", 3 // at most two edits away
	if len(typed) <= 3 {
		bestDist = 2
	}
	for _, name := range commandNames(env.Commands) {
		if d := editDistance(typed, name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean `%s%s`? (`%shelp` lists all commands)", env.Config.Bot.CommandPrefix, best, env.Config.Bot.CommandPrefix)
}

func commandNames(hs []*Handler) []string {
	var names []string
	for _, h := range hs {
		names = append(names, h.Name)
		names = append(names, h.Aliases...)
		for _, sub := range h.Subcommands {
			names = append(names, h.Name+" "+sub.Name)
		}
	}
	return names
}

// editDistance is the Levenshtein distance over runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
