package synapse

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
)

// TestUnreachableConnectionRefused: a database nobody listens for is told as one line with
// why and where, never with the DSN's password, and the driver's error stays in the chain.
func TestUnreachableConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	const password = "s3cret-pw"
	db, err := OpenDB(context.Background(), fmt.Sprintf("postgres://synapse:%s@%s/synapse?sslmode=disable", password, addr))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.Ping(context.Background())
	ue, ok := Unreachable(err)
	if !ok {
		t.Fatalf("Ping of a closed port: %v, not an UnreachableError", err)
	}
	if ue.Reason != "connection refused" || ue.Addr != addr {
		t.Errorf("reason %q at %q, want connection refused at %s", ue.Reason, ue.Addr, addr)
	}
	msg := ue.Error()
	if want := "Synapse's database is unreachable (connection refused at " + addr + ")"; msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
	if strings.Contains(fmt.Sprintf("%v %+v", err, ue.Unwrap()), password) {
		t.Errorf("the error names the password")
	}
	// Wrapped by a caller, it is still recognised.
	if _, ok := Unreachable(fmt.Errorf("count rejected events: %w", ue.Unwrap())); !ok {
		t.Error("a wrapped connect error is not recognised")
	}
	if _, ok := Unreachable(fmt.Errorf("syntax error")); ok {
		t.Error("an error that is no connect error is taken for one")
	}
}
