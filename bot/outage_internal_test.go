package bot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
)

// TestOutageBackoff: attempts back off from 1 s, doubling, capped at a minute; each is logged
// in one line; the outage ends once, and a new one starts from 1 s again.
func TestOutageBackoff(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	var o outage
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if got := o.failed(log, "start", errors.New("connection refused")); got != w*time.Second {
			t.Errorf("attempt %d: wait %s, want %s", i+1, got, w*time.Second)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != len(want) {
		t.Errorf("%d log lines for %d attempts", n, len(want))
	}
	end, ok := o.over()
	if !ok || end.attempts != len(want) || !end.atStart {
		t.Errorf("over: %+v %v", end, ok)
	}
	if _, ok = o.over(); ok {
		t.Error("an outage ended twice")
	}
	if got := o.failed(log, "sync", errors.New("connection refused")); got != time.Second {
		t.Errorf("a new outage waits %s first, want 1s", got)
	}
	end.lasted = 3*time.Minute + 5*time.Second
	if msg := end.message("!"); !strings.HasPrefix(msg, "Synapse is reachable again after 3 min 5 s; it did not answer when medic started") {
		t.Errorf("message: %s", msg)
	}
}

// TestUnreachable: what is retried (Synapse not answering) and what is not (Synapse
// refusing medic).
func TestUnreachable(t *testing.T) {
	status := func(code int) error {
		return fmt.Errorf("log in: %w", mautrix.HTTPError{Response: &http.Response{StatusCode: code}})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	_, refused := http.Get("http://" + l.Addr().String() + "/") // nothing listens there now
	if refused == nil {
		t.Fatal("a closed port answered")
	}
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"connection refused": {fmt.Errorf("init encryption: %w", mautrix.HTTPError{Message: "request error", WrappedError: refused}), true},
		"502 from a proxy":   {status(http.StatusBadGateway), true},
		"503":                {status(http.StatusServiceUnavailable), true},
		"403 wrong password": {status(http.StatusForbidden), false},
		"unknown token":      {fmt.Errorf("sync: %w", mautrix.MUnknownToken), false},
		"stopped":            {context.Canceled, false},
	} {
		if got := unreachable(c.err); got != c.want {
			t.Errorf("%s: unreachable = %v, want %v", name, got, c.want)
		}
	}
}
