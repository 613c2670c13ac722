package bot

import (
	"context"
	"errors"
	"time"

	"maunium.net/go/mautrix"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"
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
	if evt.Type == event.EventMessage && !b.trusted(ctx, evt) {
		return
	}
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		b.proc.Process(context.WithoutCancel(ctx), evt)
	}()
}

// trusted applies the optional encryption requirements to a command message. Reactions are
// never encrypted in Matrix, so they are not subject to it; a reaction can only answer a
// prompt the bot posted in reply to an accepted command.
func (b *Bot) trusted(ctx context.Context, evt *event.Event) bool {
	enc := b.cfg.Encryption
	content, ok := evt.Content.Parsed.(*event.MessageEventContent)
	if !ok || !isCommand(content.Body, b.cfg.Bot.CommandPrefix) {
		return true // not a command; the processor ignores it anyway
	}
	if enc.RequireEncrypted && !evt.Mautrix.WasEncrypted {
		b.notice(ctx, evt, "Commands must be sent encrypted (encryption.require_encrypted is on). Ignored.")
		return false
	}
	if enc.RequireVerifiedDevice && evt.Mautrix.TrustState < id.TrustStateCrossSignedTOFU {
		b.notice(ctx, evt, "Commands must come from a cross-signed device (encryption.require_verified_device is on); this device is "+evt.Mautrix.TrustState.String()+". Ignored.")
		return false
	}
	return true
}

func isCommand(body, prefix string) bool {
	return len(body) > len(prefix) && body[:len(prefix)] == prefix
}

func (b *Bot) notice(ctx context.Context, evt *event.Event, msg string) {
	content := &event.MessageEventContent{MsgType: event.MsgNotice, Body: msg}
	content.SetReply(evt)
	if _, err := b.Client.SendMessageEvent(ctx, evt.RoomID, event.EventMessage, content); err != nil {
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
