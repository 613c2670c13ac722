package bot

import (
	"context"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/commands"
	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/health"
)

// syncHealth records the bot's last successful sync for the "medic" health check (a sync
// that keeps failing shows as a stale last success).
type syncHealth struct {
	lock sync.Mutex
	last time.Time
	err  error
}

// failed records why the last sync failed (the last success stays).
func (s *syncHealth) failed(err error) {
	s.lock.Lock()
	s.err = err
	s.lock.Unlock()
}

func (s *syncHealth) ok() {
	s.lock.Lock()
	s.last, s.err = time.Now(), nil
	s.lock.Unlock()
}

// selfStatus is the bot's own state for the health report.
func (b *Bot) selfStatus(ctx context.Context) health.SelfStatus {
	b.syncState.lock.Lock()
	st := health.SelfStatus{Running: true, LastSync: b.syncState.last, SyncErr: b.syncState.err}
	b.syncState.lock.Unlock()
	if b.crypto != nil {
		_, verified, err := b.crypto.Machine().GetOwnVerificationStatus(ctx)
		st.E2EE, st.E2EEErr = verified, err
		// Encrypting needs a working Olm account; a broken pickle or store fails here.
		if err == nil && b.crypto.Machine().OwnIdentity() == nil {
			st.E2EEErr = errNoIdentity
		}
	}
	return st
}

type errString string

func (e errString) Error() string { return string(e) }

const errNoIdentity = errString("no own device identity")

// NextReport returns the first scheduled time strictly after now.
func NextReport(cfg config.Health, now time.Time) (time.Time, bool) {
	loc := cfg.Location()
	local := now.In(loc)
	var best time.Time
	for _, s := range cfg.Schedule {
		off, err := config.ParseTimeOfDay(s)
		if err != nil {
			continue
		}
		for day := 0; day <= 1; day++ {
			y, m, d := local.AddDate(0, 0, day).Date()
			t := time.Date(y, m, d, 0, 0, 0, 0, loc).Add(off)
			if t.After(now) && (best.IsZero() || t.Before(best)) {
				best = t
			}
		}
	}
	return best, !best.IsZero()
}

// runSchedule posts the health report at the configured times until ctx ends.
func (b *Bot) runSchedule(ctx context.Context) {
	for {
		next, ok := NextReport(b.cfg.Health, time.Now())
		if !ok {
			return
		}
		b.log.Debug().Time("next", next).Msg("Next scheduled health report")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		if err := b.scheduledReport(ctx); err != nil {
			b.log.Err(err).Msg("Scheduled health report failed")
		}
	}
}

// scheduledReport runs every check, decides (health.post) whether the report is worth
// posting compared with the last posted one, posts it to the report rooms, and stores it.
func (b *Bot) scheduledReport(ctx context.Context) error {
	rn := b.app.Health
	rep, err := rn.Run(ctx)
	if err != nil {
		return err
	}
	lastPosted, err := b.store.LastHealthReport(ctx, rep.At, true)
	if err != nil {
		return err
	}
	post := health.ShouldPost(b.cfg.Health.Post, rep, lastPosted)
	if post {
		if rep.Charts, err = rn.Charts(ctx, rep); err != nil {
			b.log.Warn().Err(err).Msg("Could not draw the health charts")
		}
		for _, roomID := range b.reportRooms() {
			why := commands.Withheld(b.Outsiders(ctx, roomID))
			if err := commands.PostReport(ctx, b.Client, roomID, rep, b.cfg.Bot.CommandPrefix, nil, why); err != nil {
				b.log.Err(err).Stringer("room_id", roomID).Msg("Failed to post the health report")
			}
		}
	} else {
		b.log.Info().Str("post", b.cfg.Health.Post).Msg("Health report unchanged; not posted")
	}
	return rn.Save(ctx, rep, "schedule", post)
}

func (b *Bot) reportRooms() []id.RoomID {
	if len(b.cfg.Health.Rooms) > 0 {
		return b.cfg.Health.Rooms
	}
	rooms := b.adminRooms.AsList()
	slices.Sort(rooms)
	return rooms
}
