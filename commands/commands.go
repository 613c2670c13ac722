// Package commands defines medic's commands as declarative mautrix-go command handlers.
//
// The same handlers serve the Matrix bot (package bot) and the terminal (package terminal):
// both feed a commands.Processor; only the client behind the replies differs. Handlers never
// assume a Matrix room exists, and report failure through Fail so the terminal can exit ≠ 0.
package commands

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	mcmd "maunium.net/go/mautrix/commands"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/app"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapse"
)

// Env is the processor's Meta, shared by all commands: the application, and the transport
// the commands arrive by.
type Env struct {
	*app.App
	Transport Transport
	// Commands is the definition list the processor was built from (for !help).
	Commands []*Handler
}

// Transport is what commands need to know of where they came from.
type Transport interface {
	// Requester is who asked for a job by this command, and where the job spine speaks.
	Requester(ce *Event) jobs.Requester
	// Shared tells whether commands arrive in a shared Matrix room (other bots may use the
	// same prefix there, and images can be shown), rather than on medic's own terminal.
	Shared() bool
	// Outsiders are who can read a room (joined or invited) but are no admins and not
	// allowed by rooms.allow_non_admins (config.Outsider). Where there are any, or the
	// transport cannot tell (an error), medic posts only summaries (Withheld, Summary).
	Outsiders(ctx context.Context, room id.RoomID) (map[id.UserID]event.Membership, error)
}

type (
	Event     = mcmd.Event[*Env]
	Handler   = mcmd.Handler[*Env]
	Processor = mcmd.Processor[*Env]
)

// needDB answers that the command needs Synapse's database when none is configured.
func needDB(ce *Event) bool {
	if ce.Meta.DB == nil {
		Fail(ce, "This needs Synapse's database: set `synapse.database` in medic's config.")
		return false
	}
	return true
}

// dbHint is what the admin can do about Synapse's database being unreachable.
const dbHint = "Check that PostgreSQL runs and that `synapse.database` points at it."

// dbUnreachable answers, in one line, that what could not be done because Synapse's database
// is unreachable (why and where), and reports true, when err is such a failure; the driver's
// error, one line per host tried, goes to the log at debug level only.
func dbUnreachable(ce *Event, what string, err error) bool {
	ue, ok := synapse.Unreachable(err)
	if !ok {
		return false
	}
	zerolog.Ctx(ce.Ctx).Debug().Err(err).Msg("Synapse's database is unreachable")
	Fail(ce, "%s: %s. %s", ue.Error(), lowerFirst(what), dbHint)
	return true
}

// FailErr answers that what could not be done because of err (one line when Synapse's
// database is unreachable: see dbUnreachable).
func FailErr(ce *Event, what string, err error) {
	if !dbUnreachable(ce, what, err) {
		Fail(ce, "%s: %v", what, err)
	}
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// readDB is needDB for the read-only commands that read Synapse's tables: they run on any
// Synapse schema, and first say so when medic was not tested on this one.
func readDB(ce *Event) bool {
	if !needDB(ce) {
		return false
	}
	noteUntestedSchema(ce)
	return true
}

// noteUntestedSchema says, before a read-only answer, that Synapse's database is at a schema
// medic's repairs were not tested on (a changed table may make the answer incomplete). An
// unreadable version says nothing here: the command's own query reports the database.
func noteUntestedSchema(ce *Event) {
	if ce.Meta.DB == nil {
		return
	}
	s, err := ce.Meta.DB.Schema(ce.Ctx)
	if err != nil || recovery.TestedSchema.Covers(recovery.SchemaState(s)) {
		return
	}
	reply(ce, "⚠️ Synapse's database is at schema %d, %s.", s.Version, mdtext.Text(recovery.TestedSchema.Verdict(recovery.SchemaState(s))))
}

// takeForceSchema removes --force-schema from the command's arguments, wherever it stands,
// and tells whether it was there. The repairs that write Synapse's tables take it
// (jobs.SchemaForce in their arguments).
func takeForceSchema(ce *Event) bool {
	found := false
	args := ce.Args[:0:0]
	for _, a := range ce.Args {
		if a == jobs.ForceSchemaFlag {
			found = true
			continue
		}
		args = append(args, a)
	}
	ce.Args = args
	return found
}

// Outcome records what happened to one command, for callers (the terminal) that need to
// know whether it succeeded. It travels in the context given to Processor.Process.
type Outcome struct {
	Handled bool
	Failed  bool
}

type outcomeKey struct{}

// WithOutcome returns a context that collects the outcome of the command processed with it.
func WithOutcome(ctx context.Context) (context.Context, *Outcome) {
	o := &Outcome{}
	return context.WithValue(ctx, outcomeKey{}, o), o
}

func outcome(ctx context.Context) *Outcome {
	if o, ok := ctx.Value(outcomeKey{}).(*Outcome); ok {
		return o
	}
	return &Outcome{}
}

// Fail replies with an error message and marks the command as failed. An error among the
// arguments that the admin can fix (a database role without rights, a bot that is no server
// admin …) gets what to do appended.
func Fail(ce *Event, msg string, args ...any) {
	outcome(ce.Ctx).Failed = true
	for _, a := range args {
		if err, ok := a.(error); ok {
			if r := remedy(err); r != "" {
				msg += strings.ReplaceAll(r, "%", "%%")
				break
			}
		}
	}
	reply(ce, msg, args...)
}

// remedy is what to do about err, as a paragraph to append to a reply ("" if nothing).
func remedy(err error) string {
	if r := synapse.Remedy(err); r != "" {
		return "\n\n→ " + r
	}
	return ""
}

// reply answers a command as a notice; in a room where details are withheld, with the
// answer's first line only (Summary).
func reply(ce *Event, msg string, args ...any) {
	if len(args) > 0 {
		msg = fmt.Sprintf(msg, args...)
	}
	replyWhole(ce, Summary(msg, withheld(ce), SeeElsewhere))
}

// replyWhole answers with msg as it is, wherever it is asked: only for text that tells
// nothing about the server (!help).
func replyWhole(ce *Event, msg string) {
	content := MarkdownNotice(msg)
	content.SetReply(ce.Event)
	send(ce, content)
}

// MarkdownNotice makes a notice whose plain-text body is the Markdown source (tables stay
// readable in clients without HTML, and on the terminal) and whose HTML is rendered from it.
func MarkdownNotice(md string) *event.MessageEventContent {
	content := format.RenderMarkdown(md, true, false)
	content.Body = md
	content.MsgType = event.MsgNotice
	return &content
}

// guard wraps a handler body: it marks the command handled and turns a panic into a short
// reply (the stack goes to the log only, never to chat).
func guard(fn func(ce *Event)) func(ce *Event) {
	return func(ce *Event) {
		o := outcome(ce.Ctx)
		o.Handled = true
		defer func() {
			if p := recover(); p != nil {
				o.Failed = true
				zerolog.Ctx(ce.Ctx).Error().Any("panic", p).Bytes("stack", debug.Stack()).Msg("Command handler panicked")
				reply(ce, "Internal error while running `%s`; details are in medic's log.", ce.Command)
			}
		}()
		fn(ce)
	}
}

// NewProcessor builds a command processor with every medic command registered. cli is the
// client replies go through: the bot's Matrix client, or the terminal's printing client.
func NewProcessor(cli *mautrix.Client, a *app.App, t Transport) *Processor {
	proc := mcmd.NewProcessor[*Env](cli)
	env := &Env{App: a, Transport: t, Commands: All()}
	for _, h := range env.Commands {
		wrap(h)
	}
	proc.Register(env.Commands...)
	// Replace the library's unknown-command handler, which answers every prefixed word.
	proc.Unregister(proc.GetHandler(mcmd.UnknownCommandName))
	proc.Register(wrap(unknownCommand(env)))
	proc.PreValidator = mcmd.ValidatePrefixSubstring[*Env](env.Config.Bot.CommandPrefix)
	proc.ReactionCommandPrefix = ""
	proc.Meta = env
	return proc
}

// parsed gives fn the command's arguments parsed into T (JSON keys = parameter keys) from the
// handler's Parameters, so chat, the terminal and MSC4391 clients share one definition.
// Every field of T must be a single word; otherwise the usage is the answer.
func parsed[T any](usage string, fn func(ce *Event, args T)) func(*Event) {
	return func(ce *Event) {
		args, err := mcmd.ParseArgs[T](ce)
		if err != nil || len(ce.Args) > 1 {
			Fail(ce, "Usage: `%s%s`", prefix(ce), usage)
			return
		}
		fn(ce, args)
	}
}

func wrap(h *Handler) *Handler {
	if h.Func != nil {
		h.Func = guard(h.Func)
	}
	for _, sub := range h.Subcommands {
		wrap(sub)
	}
	return h
}

// All returns fresh definitions of every command, in the order !help lists them.
func All() []*Handler {
	return []*Handler{
		helpCommand(),
		pingCommand(),
		versionCommand(),
		federationCommand(),
		extremitiesCommand(),
		recoverCommand(),
		importCommand(),
		rejectedCommand(),
		unrejectCommand(),
		stateCommand(),
		aftercareCommand(),
		healthCommand(),
		roomsCommand(),
		approveCommand(),
		cancelCommand(),
		resumeCommand(),
		undoCommand(),
		jobsCommand(),
		jobCommandDetail(),
	}
}

func text(s string) *event.ExtensibleTextContainer { return event.MakeExtensibleText(s) }

func prefix(ce *Event) string { return ce.Meta.Config.Bot.CommandPrefix }

func describe(h *Handler) string { return plain(h.Description) }

// plain returns the text/plain body of an extensible text, or "".
func plain(t *event.ExtensibleTextContainer) string {
	if t == nil {
		return ""
	}
	for _, part := range t.Text {
		if part.MimeType == "" || part.MimeType == "text/plain" {
			return part.Body
		}
	}
	return ""
}

func usage(pfx string, h *Handler, parents ...string) string {
	var b strings.Builder
	b.WriteString(pfx)
	for _, p := range parents {
		b.WriteString(p + " ")
	}
	b.WriteString(h.Name)
	for _, p := range h.Parameters {
		switch {
		case p.Optional && p.Key == h.TailParam:
			fmt.Fprintf(&b, " [<%s>]", p.Key)
		case p.Optional:
			fmt.Fprintf(&b, " [--%s <%s>]", p.Key, p.Key)
		default:
			fmt.Fprintf(&b, " <%s>", p.Key)
		}
	}
	return b.String()
}
