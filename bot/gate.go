package bot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	mcmd "maunium.net/go/mautrix/commands"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/config"
)

// handleMember joins rooms that a configured admin invites the bot into, and only those.
func (b *Bot) handleMember(ctx context.Context, evt *event.Event) {
	// Only the invite section of sync: the same invite shows up again in the room's
	// timeline once we have joined.
	if evt.Mautrix.EventSource&event.SourceInvite == 0 || evt.GetStateKey() != b.Client.UserID.String() ||
		evt.Content.AsMember().Membership != event.MembershipInvite {
		return
	}
	log := b.log.With().Stringer("room_id", evt.RoomID).Stringer("inviter", evt.Sender).Logger()
	if !b.isAdmin(evt.Sender) {
		log.Info().Msg("Ignoring invite from a non-admin")
		return
	}
	if !b.adminRooms.Has(evt.RoomID) && !b.cfg.Rooms.Adopt() {
		log.Info().Msg("Ignoring admin's invite: room is not a configured admin room and rooms.adopt_admin_invites is off")
		return
	}
	// Off the sync goroutine: joining may wait for federation.
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		ctx := context.WithoutCancel(ctx)
		if err := b.join(ctx, evt.RoomID); err != nil {
			log.Err(err).Msg("Failed to join room")
			return
		}
		if !b.adminRooms.Has(evt.RoomID) {
			if err := b.store.AddAdminRoom(ctx, evt.RoomID, evt.Sender); err != nil {
				log.Err(err).Msg("Failed to record admin room")
				return
			}
			b.adminRooms.Add(evt.RoomID)
			b.announce(ctx) // non-admins already in the room
		}
		log.Info().Msg("Joined admin room")
		b.publishSpecs(ctx, evt.RoomID)
	}()
}

// join joins a room, retrying for a while: a federated invite can reach us before the
// inviting server will accept our join (403 "You are not invited to this room").
func (b *Bot) join(ctx context.Context, roomID id.RoomID) error {
	var err error
	for attempt, delay := 0, 500*time.Millisecond; attempt < 5; attempt, delay = attempt+1, delay*2 {
		if _, err = b.Client.JoinRoomByID(ctx, roomID); err == nil || !errors.Is(err, mautrix.MForbidden) {
			return err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (b *Bot) isAdmin(user id.UserID) bool {
	_, ok := b.admins[user]
	return ok
}

// accept is the admin-room gate: only configured admins, only in admin rooms, only events
// from after the bot started, never the bot's own (its pre-reactions on prompts must not
// count as an admin's answer).
func (b *Bot) accept(evt *event.Event) (ok bool, why string) {
	switch {
	case evt.Sender == b.Client.UserID:
		return false, "own event"
	case evt.Timestamp < b.startTime.UnixMilli():
		return false, "sent before the bot started"
	case !b.isAdmin(evt.Sender):
		return false, "sender is not an admin"
	case !b.adminRooms.Has(evt.RoomID):
		return false, "not an admin room"
	}
	return true, ""
}

// handleCommandEvent gates messages and reactions and processes admins' commands off the
// sync goroutine, so a long command never blocks sync.
func (b *Bot) handleCommandEvent(ctx context.Context, evt *event.Event) {
	if ok, why := b.accept(evt); !ok {
		b.log.Trace().Stringer("event_id", evt.ID).Str("reason", why).Msg("Ignoring event")
		return
	}
	if r := untrusted(b.cfg.Encryption, evt); r != trusted {
		b.refuse(ctx, evt, r)
		return
	}
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		b.proc.Process(context.WithoutCancel(ctx), evt)
	}()
}

// refusal is why an admin's event fails the encryption requirements.
type refusal int

const (
	trusted refusal = iota
	notEncrypted
	notVerified
)

// untrusted applies encryption.require_encrypted and require_verified_device to an admin's
// message or reaction. It judges every such event, never only those that look like a
// command: the processor finds commands after leading whitespace, in the HTML
// formatted_body, in MSC4391 structured data, and behind a reaction (the command its
// prompt maps the key to), so whatever the processor would run has passed here.
//
// A reaction passes only as a message would: encrypted, from a cross-signed device. Element
// sends reactions in clear (matrix-js-sdk never encrypts m.reaction), and an event in clear
// says nothing of the device that sent it — an access token without any device keys can send
// one — so under these settings ✅/❌/⏹ from Element do nothing and `!approve <job>` (an
// encrypted message) is the way; the first refused reaction on a prompt says so.
func untrusted(enc config.Encryption, evt *event.Event) refusal {
	switch {
	case enc.RequireEncrypted && !evt.Mautrix.WasEncrypted:
		return notEncrypted
	case enc.RequireVerifiedDevice && evt.Mautrix.TrustState < id.TrustStateCrossSignedTOFU:
		return notVerified
	}
	return trusted
}

// refuse tells the admin why a command was not run: for a message that the processor would
// run as a medic command, and for the first reaction on each of the bot's prompts. Anything
// else (chat, other bots' commands, other reactions) is dropped quietly.
func (b *Bot) refuse(ctx context.Context, evt *event.Event, r refusal) {
	log := b.log.With().Stringer("event_id", evt.ID).Stringer("sender", evt.Sender).
		Bool("encrypted", evt.Mautrix.WasEncrypted).Stringer("trust", evt.Mautrix.TrustState).Logger()
	if evt.Type == event.EventReaction {
		cmd, prompt := b.reactionCommand(ctx, evt)
		if cmd == "" {
			return
		}
		log.Info().Str("command", cmd).Msg("Refused a reaction: encryption requirements")
		if b.hinted.Add(prompt) {
			b.notice(ctx, evt.RoomID, prompt, fmt.Sprintf("%s Send `%s` instead (Element sends reactions unencrypted).",
				rule(r, evt, "reaction"), cmd))
		}
		return
	}
	if !b.isCommand(ctx, evt) {
		return
	}
	log.Info().Msg("Refused a command: encryption requirements")
	b.notice(ctx, evt.RoomID, evt.ID, rule(r, evt, "message")+" Ignored.")
}

// rule says which requirement a refused event (a "message" or "reaction") fails, and how.
func rule(r refusal, evt *event.Event, what string) string {
	switch {
	case r == notEncrypted:
		return "Commands must be sent encrypted (encryption.require_encrypted is on); this " + what + " was not."
	case !evt.Mautrix.WasEncrypted:
		return "Commands must come encrypted from a cross-signed device (encryption.require_verified_device is on); " +
			"this " + what + " was not encrypted, so it cannot show which device sent it."
	}
	return "Commands must come from a cross-signed device (encryption.require_verified_device is on); this " + what +
		" comes from a device that is " + evt.Mautrix.TrustState.String() + "."
}

// isCommand tells whether the processor would run a message as one of medic's commands,
// reading it as the processor does (mautrix's ParseEvent and the prefix check).
func (b *Bot) isCommand(ctx context.Context, evt *event.Event) bool {
	ce := b.proc.ParseEvent(ctx, evt)
	if ce == nil || (!b.proc.PreValidator.Validate(ce) && ce.StructuredArgs == nil) {
		return false
	}
	h := b.proc.GetHandler(ce.Command)
	return h != nil && h.Name != mcmd.UnknownCommandName
}

// reactionCommand returns the command a reaction would run, as the processor finds it: the
// target is one of the bot's messages whose reaction commands map the key. Nothing is run,
// redacted or changed.
func (b *Bot) reactionCommand(ctx context.Context, evt *event.Event) (cmd string, prompt id.EventID) {
	content, ok := evt.Content.Parsed.(*event.ReactionEventContent)
	if !ok || content.RelatesTo.EventID == "" {
		return "", ""
	}
	prompt = content.RelatesTo.EventID
	target, err := b.Client.GetEvent(ctx, evt.RoomID, prompt)
	if err != nil || target.Sender != b.Client.UserID {
		return "", ""
	}
	if target.Type == event.EventEncrypted && b.crypto != nil {
		_ = target.Content.ParseRaw(target.Type)
		if target, err = b.crypto.Decrypt(ctx, target); err != nil {
			return "", ""
		}
	}
	cmds, _ := target.Content.Raw[mcmd.ReactionCommandsKey].(map[string]any)
	cmd, _ = cmds[content.RelatesTo.Key].(string)
	return cmd, prompt
}

// notice answers with a notice in reply to an event.
func (b *Bot) notice(ctx context.Context, roomID id.RoomID, replyTo id.EventID, msg string) {
	content := &event.MessageEventContent{MsgType: event.MsgNotice, Body: msg,
		RelatesTo: &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: replyTo}}}
	if _, err := b.Client.SendMessageEvent(ctx, roomID, event.EventMessage, content); err != nil {
		b.log.Err(err).Msg("Failed to send notice")
	}
}

// publishSpecs publishes the command descriptions as MSC4391 state events so clients can
// offer completion. Rooms where the bot lacks power for state events are skipped quietly.
func (b *Bot) publishSpecs(ctx context.Context, roomID id.RoomID) {
	for _, spec := range b.proc.AllSpecs() {
		stateKey := spec.StateKey(b.Client.UserID)
		var existing cmdschema.EventContent
		if err := b.Client.StateEvent(ctx, roomID, event.StateMSC4391BotCommand, stateKey, &existing); err == nil && existing.Equals(spec) {
			continue
		}
		_, err := b.Client.SendStateEvent(ctx, roomID, event.StateMSC4391BotCommand, stateKey, spec)
		if err != nil {
			b.log.Debug().Err(err).Stringer("room_id", roomID).Str("command", spec.Command).Msg("Could not publish command description")
			return
		}
	}
}
