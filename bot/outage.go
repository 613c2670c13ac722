package bot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
)

const (
	// Backoff between attempts to reach Synapse: 1 s, doubling, at most a minute. Each
	// attempt is logged once, so a long outage logs a line a minute.
	retryFirst = time.Second
	retryMax   = time.Minute
	// announceAfter: a sync outage shorter than this (a restart, by one of medic's repairs or
	// by the admin) is not announced in the admin rooms (a repair's report says that Synapse
	// came back); an outage at start always is.
	announceAfter = 30 * time.Second
)

// outage is a time in which Synapse does not answer medic: it paces the attempts to reach
// it (backoff), logs each failed attempt once, and tells when Synapse answered again.
type outage struct {
	lock     sync.Mutex
	since    time.Time // the first failed attempt; zero while Synapse answers
	atStart  bool      // Synapse did not answer when medic started
	attempts int
	wait     time.Duration
}

// failed records a failed attempt to reach Synapse (what: "start", "sync"), logs it in one
// line, and returns how long to wait before the next attempt.
func (o *outage) failed(log zerolog.Logger, what string, err error) time.Duration {
	o.lock.Lock()
	defer o.lock.Unlock()
	now := time.Now()
	if o.since.IsZero() {
		o.since, o.atStart, o.attempts, o.wait = now, what == "start", 0, retryFirst
	} else {
		o.wait = min(2*o.wait, retryMax)
	}
	o.attempts++
	// The error names the URL medic asked (never the access token: it goes in a header).
	log.Warn().Err(err).
		Str("during", what).
		Int("attempt", o.attempts).
		Str("down_for", time.Since(o.since).Round(time.Second).String()).
		Str("retry_in", o.wait.String()).
		Msg("Synapse is unreachable; retrying")
	return o.wait
}

// outageEnd is an outage that is over.
type outageEnd struct {
	since    time.Time
	lasted   time.Duration
	attempts int
	atStart  bool
}

// over ends the outage, if there was one, and returns it.
func (o *outage) over() (outageEnd, bool) {
	o.lock.Lock()
	defer o.lock.Unlock()
	if o.since.IsZero() {
		return outageEnd{}, false
	}
	end := outageEnd{since: o.since, lasted: time.Since(o.since), attempts: o.attempts, atStart: o.atStart}
	o.since, o.atStart, o.attempts = time.Time{}, false, 0
	return end, true
}

// message is what medic posts in its admin rooms when Synapse answers again.
func (e outageEnd) message(pfx string) string {
	secs := int(e.lasted.Seconds())
	lasted := fmt.Sprintf("%d s", secs)
	switch {
	case e.lasted >= 10*time.Minute:
		lasted = fmt.Sprintf("%d min", int(e.lasted.Round(time.Minute).Minutes()))
	case e.lasted >= time.Minute:
		lasted = fmt.Sprintf("%d min %d s", secs/60, secs%60)
	}
	at := e.since.UTC().Format("15:04:05") + " UTC"
	how := fmt.Sprintf("it stopped answering at %s (%d failed attempt(s) to sync)", at, e.attempts)
	if e.atStart {
		how = fmt.Sprintf("it did not answer when medic started at %s (%d attempt(s) since)", at, e.attempts)
	}
	return fmt.Sprintf("Synapse is reachable again after %s; %s. `%shealth` shows what the outage left behind (e.g. failing destinations).",
		lasted, how, pfx)
}

// wait sleeps d, or until ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// unreachable tells whether err means that Synapse did not answer (connection refused or
// reset, timeout, a proxy in front of it answering 502/503/504) rather than that it refused
// medic (wrong password, unknown token): the first is worth retrying, the second is not.
func unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		switch httpErr.Response.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusTooManyRequests:
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, context.DeadlineExceeded)
}

// requestFailed are the messages mautrix-go logs for every failed request.
var requestFailed = []string{"Request failed", "Request failed, retrying"}

// quietRequests drops mautrix-go's own line for each failed request, for the requests that
// reach Synapse while medic waits for it (login, sync): medic logs each failed attempt
// itself, once, with the error (outage.failed), so an outage does not flood the log.
type quietRequests struct{}

func (quietRequests) Run(e *zerolog.Event, _ zerolog.Level, msg string) {
	if slices.Contains(requestFailed, msg) {
		e.Discard()
	}
}

// quiet returns ctx with a logger that leaves out mautrix-go's failed-request lines.
func quiet(ctx context.Context) context.Context {
	return zerolog.Ctx(ctx).Hook(quietRequests{}).WithContext(ctx)
}

// announceBack posts in the admin rooms that Synapse answers again, after an outage at
// start or one that lasted (announceAfter).
func (b *Bot) announceBack(ctx context.Context) {
	end, ok := b.outage.over()
	if !ok {
		return
	}
	b.log.Info().Str("down_for", end.lasted.Round(time.Second).String()).Int("attempts", end.attempts).
		Bool("at_start", end.atStart).Msg("Synapse is reachable again")
	if !end.atStart && end.lasted < announceAfter {
		return
	}
	msg := end.message(b.cfg.Bot.CommandPrefix)
	rooms := b.adminRooms.AsList()
	slices.Sort(rooms)
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		for _, room := range rooms {
			b.roomNotifier(room).send(context.WithoutCancel(ctx), msg, nil, "")
		}
	}()
}
