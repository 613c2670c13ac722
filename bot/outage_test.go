package bot_test

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/testbed"
)

// TestDatabaseDownWhileRunning: with Synapse's database unreachable while the bot runs, a
// command that needs it answers in the admin room in one line (why and where), and `!health`
// has one critical database check, the checks that read it skipped.
func TestDatabaseDownWhileRunning(t *testing.T) {
	tb := testbed.Get(t)
	admin := adminClient(t, tb)
	botUser := newBotAccount(t, tb)
	cfg := botConfig(t, tb, botUser, admin.UserID)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now: Synapse's database "down", PostgreSQL untouched
	cfg.Synapse.DatabaseDSN = fmt.Sprintf("postgres://synapse:synapse@%s/synapse?sslmode=disable", addr)
	startBot(t, cfg)
	roomID := roomWithBot(t, admin, botUser, true)

	cmd := admin.SendText(roomID, "!rejected")
	body := testbed.Message(admin.WaitFor(wait, "the !rejected reply", testbed.ReplyTo(botUser, cmd))).Body
	want := "Synapse's database is unreachable (connection refused at " + addr + ")"
	if strings.Contains(strings.TrimSpace(body), "\n") || !strings.HasPrefix(body, want) {
		t.Errorf("!rejected with the database down: want one line starting %q, got:\n%s", want, body)
	}

	cmd = admin.SendText(roomID, "!health")
	body = testbed.Message(admin.WaitFor(wait, "the !health reply", testbed.ReplyTo(botUser, cmd))).Body
	if !regexp.MustCompile(`Synapse's database\s+CRITICAL\s+unreachable: connection refused at ` + regexp.QuoteMeta(addr)).MatchString(body) {
		t.Errorf("!health has no critical database check saying why and where:\n%s", body)
	}
	if n := strings.Count(body, "skipped: database unreachable"); n != 8 {
		t.Errorf("%d checks skipped for the database, want the 8 that read it (forgotten, rejections, state, partial-joins, extremities, size, restore, background-updates):\n%s", n, body)
	}
	if strings.Contains(body, "could not check") {
		t.Errorf("a check warns with the driver's error instead of being skipped:\n%s", body)
	}
}
