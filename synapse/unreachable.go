package synapse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// UnreachableError is a failure to connect to Synapse's database, told in one line: what
// went wrong and where (never the DSN: it may hold the password). The driver's error, with
// its per-host stack, stays reachable through Unwrap for the log.
type UnreachableError struct {
	Reason string // "connection refused", "timed out", the server's refusal …
	Addr   string // host:port medic tried
	Err    error
}

func (e *UnreachableError) Error() string {
	if e.Addr == "" {
		return fmt.Sprintf("Synapse's database is unreachable (%s)", e.Reason)
	}
	return fmt.Sprintf("Synapse's database is unreachable (%s at %s)", e.Reason, e.Addr)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Unreachable tells whether err (anywhere in its chain) is a failure to connect to
// Synapse's database, and describes it. Errors of a query on a working connection are not.
func Unreachable(err error) (*UnreachableError, bool) {
	if err == nil {
		return nil, false
	}
	var ue *UnreachableError
	if errors.As(err, &ue) {
		return ue, true
	}
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return nil, false
	}
	ue = &UnreachableError{Reason: "cannot connect", Err: err}
	if ce.Config != nil {
		ue.Addr = net.JoinHostPort(ce.Config.Host, fmt.Sprint(ce.Config.Port))
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		ue.Addr = op.Addr.String()
	}
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		ue.Reason = "connection refused"
	case errors.As(err, &dnsErr):
		ue.Reason = "host not found"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		ue.Reason = "timed out"
	case errors.As(err, &pgErr):
		// The server answered but refused medic: wrong password, no such database, too
		// many connections. Its message is one line and holds no secret.
		ue.Reason = pgErr.Message
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		ue.Reason = "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		ue.Reason = "no route to host"
	}
	return ue, true
}

// pingTimeout bounds Ping: a firewalled host drops packets, and the health report must not
// wait for the kernel's connect timeout.
const pingTimeout = 10 * time.Second

// Ping checks that Synapse's database answers, and how fast. A failure to connect comes back
// as an *UnreachableError.
func (db *DB) Ping(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	start := time.Now()
	err := db.Pool.Ping(ctx)
	if err == nil {
		return time.Since(start), nil
	}
	if ue, ok := Unreachable(err); ok {
		return 0, ue
	}
	if ctx.Err() != nil {
		// Timed out before the driver could say why (e.g. waiting for a pool connection).
		cc := db.Pool.Config().ConnConfig
		return 0, &UnreachableError{Reason: fmt.Sprintf("no answer within %s", pingTimeout),
			Addr: net.JoinHostPort(cc.Host, fmt.Sprint(cc.Port)), Err: err}
	}
	return 0, fmt.Errorf("ping Synapse's database: %w", err)
}
