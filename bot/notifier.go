package bot

import (
	"context"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
	mcmd "maunium.net/go/mautrix/commands"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/commands"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/store"
)

// roomNotifier is the job spine's voice in one admin room: plans with ✅/❌ reactions,
// one progress message edited in place with ⏹, notes and reports as notices.
type roomNotifier struct {
	b    *Bot
	room id.RoomID
}

// Requester implements commands.Transport: a job asked for in a room reports there.
func (b *Bot) Requester(ce *commands.Event) jobs.Requester {
	return jobs.Requester{User: ce.Sender, Room: ce.RoomID, Notifier: b.roomNotifier(ce.RoomID)}
}

// Shared implements commands.Transport: admin rooms are shared with people and other bots.
func (b *Bot) Shared() bool { return true }

func (b *Bot) roomNotifier(room id.RoomID) *roomNotifier { return &roomNotifier{b: b, room: room} }

func (n *roomNotifier) prefix() string { return n.b.cfg.Bot.CommandPrefix }

// send posts Markdown as a notice (the source is the plain body: tables read well as text),
// with extra top-level content (reaction commands) and as an edit of edit when set.
func (n *roomNotifier) send(ctx context.Context, md string, extra map[string]any, edit id.EventID) id.EventID {
	content := commands.MarkdownNotice(md)
	if edit != "" {
		content.SetEdit(edit)
	}
	var payload any = content
	if extra != nil {
		payload = &event.Content{Parsed: content, Raw: extra}
	}
	resp, err := n.b.Client.SendMessageEvent(ctx, n.room, event.EventMessage, payload)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Stringer("room_id", n.room).Msg("Failed to send job message")
		return ""
	}
	return resp.EventID
}

// reactions makes the content that turns reactions on a message into commands, with the
// configured prefix (the processor accepts only that prefix).
func (n *roomNotifier) reactions(cmds map[string]string) map[string]any {
	withPrefix := make(map[string]any, len(cmds))
	for key, cmd := range cmds {
		withPrefix[key] = n.prefix() + cmd
	}
	return map[string]any{mcmd.ReactionCommandsKey: withPrefix, mcmd.ReactionMultiUseKey: true}
}

func (n *roomNotifier) react(ctx context.Context, evt id.EventID, keys ...string) {
	if evt == "" {
		return
	}
	for _, key := range keys {
		if _, err := n.b.Client.SendReaction(ctx, n.room, evt, key); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to add reaction")
		}
	}
}

// withheld is why details are withheld in the room ("" when they are not): plans, notes and
// reports are then cut to their first line, with where to read the rest. Progress (counts)
// goes out as it is.
func (n *roomNotifier) withheld(ctx context.Context) string {
	return commands.Withheld(n.b.Outsiders(ctx, n.room))
}

// seeJob says where to read what a room was not told about a job.
func (n *roomNotifier) seeJob(job *store.Job, what string) string {
	return fmt.Sprintf("`%sjob %s` in a room with only admins, or `medic exec 'job %s'` on medic's host, shows %s.", n.prefix(), job.ID, job.ID, what)
}

func (n *roomNotifier) Say(ctx context.Context, md string) {
	n.send(ctx, commands.Summary(md, n.withheld(ctx), commands.SeeElsewhere), nil, "")
}

func (n *roomNotifier) Prompt(ctx context.Context, job *store.Job, plan string) jobs.Answer {
	need := ""
	if job.ApprovalsNeeded > 1 {
		need = fmt.Sprintf(" (%d different admins must approve)", job.ApprovalsNeeded)
	}
	if why := n.withheld(ctx); why != "" {
		plan = commands.Summary(jobs.ParsePlan(job.Plan).Markdown(job.ID), why, n.seeJob(job, "the plan")+"")
	}
	pfx := n.prefix()
	how := fmt.Sprintf("React ✅ to approve%s or ❌ to cancel, or send `%sapprove %s` / `%scancel %s`.", need, pfx, job.ID, pfx, job.ID)
	if !n.reactionsCount() {
		how = fmt.Sprintf("Send `%sapprove %s` to approve%s or `%scancel %s` to cancel.", pfx, job.ID, need, pfx, job.ID)
	}
	text := fmt.Sprintf("%s\n\n%s Expires at %s.", plan, how, job.ExpiresAt.UTC().Format("15:04 MST"))
	// The reaction commands stay: a client that encrypts its reactions may still use them.
	evt := n.send(ctx, text, n.reactions(map[string]string{"✅": "approve " + job.ID, "❌": "cancel " + job.ID}), "")
	if n.reactionsCount() {
		n.react(ctx, evt, "✅", "❌")
	}
	return jobs.AnswerLater
}

// reactionsCount tells whether Element's reactions can answer prompts: not when the
// encryption requirements are on, since Element sends reactions unencrypted (see untrusted).
// Prompts then offer the commands only, without pre-set reactions to click.
func (n *roomNotifier) reactionsCount() bool {
	enc := n.b.cfg.Encryption
	return !enc.RequireEncrypted && !enc.RequireVerifiedDevice
}

func (n *roomNotifier) Progress(ctx context.Context, job *store.Job, status string, final bool) {
	prev, _ := n.b.progress.Load(job.ID)
	prevID, _ := prev.(id.EventID)
	if final {
		n.b.progress.Delete(job.ID)
		if prevID != "" {
			n.send(ctx, status, nil, prevID)
		}
		return
	}
	if n.reactionsCount() {
		status += fmt.Sprintf(" React ⏹ or send `%scancel %s` to stop.", n.prefix(), job.ID)
	} else {
		status += fmt.Sprintf(" Send `%scancel %s` to stop.", n.prefix(), job.ID)
	}
	extra := n.reactions(map[string]string{"⏹": "cancel " + job.ID})
	if prevID != "" {
		n.send(ctx, status, extra, prevID)
		return
	}
	evt := n.send(ctx, status, extra, "")
	n.b.progress.Store(job.ID, evt)
	if n.reactionsCount() {
		n.react(ctx, evt, "⏹")
	}
}

func (n *roomNotifier) Report(ctx context.Context, job *store.Job, report string) {
	n.send(ctx, commands.Summary(report, n.withheld(ctx), n.seeJob(job, "its steps")), nil, "")
}

// progressMessages maps a running job's ID to its progress message.
type progressMessages = sync.Map
