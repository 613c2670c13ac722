package bot

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/commands"
)

// roomView is the one place that knows whether a room is clean: for every room medic is
// joined to, its outsiders (members, joined or invited, who are no admins and not allowed by
// rooms.allow_non_admins: config.Outsider). A room is read in full when medic starts or
// joins it, and then kept from the member events of each sync, applied once the whole sync
// has been handled (so a sync replaying old joins and leaves never shows a passing state).
type roomView struct {
	lock sync.Mutex
	// outsiders is keyed by the rooms medic is joined to; a room medic is not in is absent.
	outsiders map[id.RoomID]map[id.UserID]event.Membership
	// told are the outsiders medic has announced in each room it posts to.
	told map[id.RoomID]map[id.UserID]bool
	// applied is the newest member event applied per room and user (by origin_server_ts): a
	// member event seen again (a sync delivering an older event after a newer one) changes
	// nothing.
	applied map[id.RoomID]map[id.UserID]int64
}

func newRoomView() *roomView {
	return &roomView{outsiders: map[id.RoomID]map[id.UserID]event.Membership{}, told: map[id.RoomID]map[id.UserID]bool{},
		applied: map[id.RoomID]map[id.UserID]int64{}}
}

// get returns a room's outsiders; ok is false when medic is not in the room (or could not
// read its members).
func (v *roomView) get(room id.RoomID) (outsiders map[id.UserID]event.Membership, ok bool) {
	v.lock.Lock()
	defer v.lock.Unlock()
	out, ok := v.outsiders[room]
	return maps.Clone(out), ok
}

func (v *roomView) known(room id.RoomID) bool {
	v.lock.Lock()
	defer v.lock.Unlock()
	_, ok := v.outsiders[room]
	return ok
}

// load sets a room's outsiders from a full read of its members.
func (v *roomView) load(room id.RoomID, outsiders map[id.UserID]event.Membership) {
	v.lock.Lock()
	defer v.lock.Unlock()
	v.outsiders[room] = outsiders
}

// update applies one sync's member events of outsiders to the rooms it knows, and forgets
// the rooms medic left.
func (v *roomView) update(changes []memberChange, left []id.RoomID) {
	v.lock.Lock()
	defer v.lock.Unlock()
	for _, c := range changes {
		out, known := v.outsiders[c.Room]
		if v.applied[c.Room] == nil {
			v.applied[c.Room] = map[id.UserID]int64{}
		}
		if c.TS != 0 && c.TS < v.applied[c.Room][c.User] {
			continue
		}
		v.applied[c.Room][c.User] = c.TS
		switch {
		case !known:
		case c.Membership == event.MembershipJoin || c.Membership == event.MembershipInvite:
			out[c.User] = c.Membership
		default:
			delete(out, c.User)
		}
	}
	for _, room := range left {
		delete(v.outsiders, room)
		delete(v.told, room)
		delete(v.applied, room)
	}
}

// news says what to announce in a room medic posts to: outsiders not announced yet, and
// whether the last announced ones have all gone. Each outsider is announced once while they
// stay (an invite that becomes a join is no news).
func (v *roomView) news(room id.RoomID) (arrived, gone []id.UserID) {
	v.lock.Lock()
	defer v.lock.Unlock()
	out, known := v.outsiders[room]
	if !known {
		return nil, nil
	}
	told := v.told[room]
	for u := range out {
		if !told[u] {
			arrived = append(arrived, u)
		}
	}
	if len(out) == 0 {
		gone = slices.Collect(maps.Keys(told))
	}
	v.told[room] = make(map[id.UserID]bool, len(out))
	for u := range out {
		v.told[room][u] = true
	}
	slices.Sort(arrived)
	slices.Sort(gone)
	return arrived, gone
}

// memberChange is one m.room.member event of an outsider.
type memberChange struct {
	Room       id.RoomID
	User       id.UserID
	Membership event.Membership
	EventID    id.EventID
	TS         int64 // origin_server_ts
}

// viewSyncer is mautrix's default syncer followed by the room view's update from the same
// response, after every handler has seen it: by then the crypto state store knows the new
// members, so a notice medic posts is encrypted for them.
//
// It also replaces the default's fixed 10 s between failed syncs with the outage's backoff
// (failed), and hands the handlers a context with medic's own logger: the sync loop's
// leaves out mautrix-go's failed-request lines (quiet), which a command's requests must keep.
type viewSyncer struct {
	*mautrix.DefaultSyncer
	after  func(ctx context.Context, res *mautrix.RespSync)
	failed func(err error) (time.Duration, error)
	log    zerolog.Logger
}

func (s *viewSyncer) OnFailedSync(_ *mautrix.RespSync, err error) (time.Duration, error) {
	return s.failed(err)
}

func (s *viewSyncer) ProcessResponse(ctx context.Context, res *mautrix.RespSync, since string) error {
	ctx = s.log.WithContext(ctx)
	err := s.DefaultSyncer.ProcessResponse(ctx, res, since)
	if err == nil {
		s.after(ctx, res)
	}
	return err
}

// loadRooms reads the members of every room medic is joined to (at start: a sync resumed
// from a stored token does not repeat the rooms' state).
func (b *Bot) loadRooms(ctx context.Context) error {
	resp, err := b.Client.JoinedRooms(ctx)
	if err != nil {
		return fmt.Errorf("list joined rooms: %w", err)
	}
	for _, room := range resp.JoinedRooms {
		b.loadRoom(ctx, room)
	}
	return nil
}

func (b *Bot) loadRoom(ctx context.Context, room id.RoomID) {
	members, err := b.app.Admin.JoinedOrInvited(ctx, room)
	if err != nil {
		// The room stays unknown: Outsiders answers with an error, so medic posts only
		// summaries there.
		b.log.Warn().Err(err).Stringer("room_id", room).Msg("Could not read the room's members")
		return
	}
	b.rooms.load(room, commands.OutsidersOf(b.cfg, members))
}

// afterSync updates the room view from a handled sync response and says what changed in
// the rooms medic posts to.
func (b *Bot) afterSync(ctx context.Context, res *mautrix.RespSync) {
	var changes []memberChange
	note := func(room id.RoomID, evts []*event.Event) {
		for _, evt := range evts {
			if evt.Type != event.StateMember || evt.StateKey == nil || !b.cfg.Outsider(id.UserID(*evt.StateKey)) {
				continue
			}
			// The syncer parses the events it dispatches, not every state_after event: an
			// unparsed member event reads as membership "", which would drop the member and
			// announce them again on their next event.
			if evt.Content.Parsed == nil {
				if err := evt.Content.ParseRaw(evt.Type); err != nil {
					continue
				}
			}
			if m := evt.Content.AsMember().Membership; m != "" {
				changes = append(changes, memberChange{Room: room, User: id.UserID(*evt.StateKey), Membership: m, EventID: evt.ID, TS: evt.Timestamp})
			}
		}
	}
	for room, r := range res.Rooms.Join {
		if r.StateAfter != nil {
			note(room, r.Timeline.Events)
			note(room, r.StateAfter.Events)
		} else {
			note(room, r.State.Events)
			note(room, r.Timeline.Events)
		}
	}
	left := slices.Collect(maps.Keys(res.Rooms.Leave))
	if len(changes) > 0 {
		b.log.Debug().Any("changes", changes).Msg("Member changes of outsiders")
	}
	b.rooms.update(changes, left)
	for _, room := range left {
		b.forgetAdopted(ctx, room)
	}
	// A room medic just joined (or could not read before) is read in full.
	for room := range res.Rooms.Join {
		if !b.rooms.known(room) {
			b.loadRoom(ctx, room)
		}
	}
	b.announce(ctx)
}

// forgetAdopted forgets an adopted admin room medic is no longer in (it left on `!rooms
// leave`, or was kicked). A configured room stays: the config says so.
func (b *Bot) forgetAdopted(ctx context.Context, room id.RoomID) {
	if slices.Contains(b.cfg.Rooms.Admin, room) || !b.adminRooms.Has(room) {
		return
	}
	if _, err := b.store.RemoveAdminRoom(ctx, room); err != nil {
		b.log.Err(err).Stringer("room_id", room).Msg("Failed to forget the admin room medic left")
		return
	}
	b.adminRooms.Remove(room)
	b.log.Info().Stringer("room_id", room).Msg("Left an adopted admin room; forgot it")
}

// postsTo lists the rooms medic posts to: admin rooms and report rooms.
func (b *Bot) postsTo() []id.RoomID {
	rooms := append(b.adminRooms.AsList(), b.cfg.Health.Rooms...)
	slices.Sort(rooms)
	return slices.Compact(rooms)
}

// announce tells each room medic posts to about outsiders who came, once, and when the
// last of them has gone.
func (b *Bot) announce(ctx context.Context) {
	for _, room := range b.postsTo() {
		arrived, gone := b.rooms.news(room)
		if len(arrived) > 0 || len(gone) > 0 {
			b.log.Debug().Stringer("room_id", room).Any("arrived", arrived).Any("gone", gone).Msg("Outsiders changed")
		}
		var msg string
		switch {
		case len(arrived) == 1:
			msg = fmt.Sprintf("%s is in this room but is no admin: until they leave (or `rooms.allow_non_admins` lists them), I post only summaries here.", commands.UserList(arrived))
		case len(arrived) > 1:
			msg = fmt.Sprintf("%s are in this room but are no admins: until they leave (or `rooms.allow_non_admins` lists them), I post only summaries here.", commands.UserList(arrived))
		case len(gone) > 0:
			msg = fmt.Sprintf("%s left: only admins are in this room now, so I post everything here again.", commands.UserList(gone))
		default:
			continue
		}
		b.running.Add(1)
		go func() {
			defer b.running.Done()
			b.roomNotifier(room).send(context.WithoutCancel(ctx), msg, nil, "")
		}()
	}
}

// Outsiders implements commands.Transport from the room view.
func (b *Bot) Outsiders(_ context.Context, room id.RoomID) (map[id.UserID]event.Membership, error) {
	out, ok := b.rooms.get(room)
	if !ok {
		return nil, errNotInRoom
	}
	return out, nil
}

const errNotInRoom = errString("medic is not in this room, or could not read who is")
