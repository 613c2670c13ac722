package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

// Start-up and outages (issue 13): medic keeps running while Synapse or Synapse's database
// is down, says so once, and says when Synapse is back.

// retryLine is how medic logs one attempt to reach Synapse that failed.
var retryLine = regexp.MustCompile(`(?i)Synapse is unreachable.*retry`)

// attemptsWithin is the most attempts medic's backoff (1 s, doubling, capped at 60 s) makes
// in d: a log that has more lines than this per attempt floods.
func attemptsWithin(d time.Duration) int {
	n, spent, wait := 1, time.Duration(0), time.Second
	for spent+wait <= d {
		spent += wait
		n++
		wait = min(2*wait, time.Minute)
	}
	return n
}

// logLines are the non-empty lines of a log.
func logLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// execBinary runs `medic exec` as its own process (as an admin on the host would, next to
// the running bot), bounded by a minute.
func execBinary(t *testing.T, bin, cfg string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"exec", "-c", cfg}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("medic exec %v did not answer within a minute (blocked by the running bot?):\n%s", args, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// medicRun is `medic run` as its own process, its log in a buffer.
type medicRun struct {
	t      *testing.T
	log    testbed.Buffer
	exited chan error
}

func startMedicRun(t *testing.T, bin, cfg string) *medicRun {
	t.Helper()
	m := &medicRun{t: t, exited: make(chan error, 1)}
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Stdout, cmd.Stderr = &m.log, &m.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-m.exited
		if t.Failed() {
			lines := logLines(m.log.String())
			t.Logf("medic run's log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	return m
}

// alive fails the test if medic has exited.
func (m *medicRun) alive(when string) {
	m.t.Helper()
	select {
	case err := <-m.exited:
		m.exited <- err
		m.t.Fatalf("medic run exited (%v) %s", err, when)
	default:
	}
}

// waitLog waits (bounded) for cond on the log, failing if medic exits first.
func (m *medicRun) waitLog(what string, timeout time.Duration, cond func(string) bool) {
	m.t.Helper()
	for deadline := time.Now().Add(timeout); !cond(m.log.String()); {
		m.alive("before " + what)
		if time.Now().After(deadline) {
			m.t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func retries(log string) int { return len(retryLine.FindAllString(log, -1)) }

// checkNoFlood checks the log medic wrote while Synapse was down, from its first failed
// attempt on, over elapsed: one line an attempt (and a spare), and attempts backing off.
func checkNoFlood(t *testing.T, log string, elapsed time.Duration) {
	t.Helper()
	first := retryLine.FindStringIndex(log)
	if first == nil {
		t.Fatal("no failed attempt in the log")
	}
	waiting := logLines(log[strings.LastIndex(log[:first[0]], "\n")+1:])
	if n, limit := len(waiting), attemptsWithin(elapsed)+1; n > limit {
		t.Errorf("medic logged %d lines in %s of Synapse being down; with backoff (1 s doubling to 60 s), one line an attempt, at most %d:\n%s",
			n, elapsed.Round(time.Second), limit, strings.Join(waiting, "\n"))
	}
	if n, most := retries(log), attemptsWithin(elapsed); n > most {
		t.Errorf("medic logged %d attempts in %s; backing off from 1 s it makes at most %d", n, elapsed.Round(time.Second), most)
	}
}

// outageSetup is a fresh bot account (server admin, as medic's is) already in an encrypted
// admin room, hs1's admin syncing in it, and medic's config for them.
func outageSetup(t *testing.T, tb *testbed.Testbed) (cfg string, acct id.UserID, admin *testbed.Client, roomID id.RoomID) {
	t.Helper()
	ctx := context.Background()
	bot := tb.Register(t, tb.HS1, testbed.UniqueName("medicdown"), true)
	admin = testbed.Syncing(t, tb.Admin(t, tb.HS1))
	roomID = admin.CreateRoom(true, bot.UserID)
	if _, err := bot.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	_, _ = bot.Logout(ctx)
	cfg = tb.MedicConfig(t, t.TempDir(), bot.UserID, tb.UserPassword)
	appendConfig(t, cfg, fmt.Sprintf("rooms: {admin: [%q]}\n", roomID))
	return cfg, bot.UserID, admin, roomID
}

// fromBot matches a message of the bot in the room that contains text.
func fromBot(bot id.UserID, roomID id.RoomID, text string) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		msg := testbed.Message(evt)
		return evt.Sender == bot && evt.RoomID == roomID && msg != nil && strings.Contains(msg.Body, text)
	}
}

// pingUntilAnswered sends !ping until medic answers (bounded). The admin's client may encrypt
// a message before it has seen medic's new device (created when medic could first log in).
func pingUntilAnswered(t *testing.T, admin *testbed.Client, roomID id.RoomID, bot id.UserID, when string) {
	t.Helper()
	for i := 0; i < 6; i++ {
		ping := admin.SendText(roomID, "!ping")
		if admin.TryWaitFor(20*time.Second, testbed.ReplyTo(bot, ping)) != nil {
			return
		}
	}
	t.Fatalf("medic never answered !ping %s", when)
}

// TestRunWhileSynapseDown: `medic run` started while Synapse is down keeps running, retries
// with backoff and logs each attempt once (no flood), `medic exec` answers meanwhile, and once
// Synapse is back medic says so in its admin room and answers commands there.
func TestRunWhileSynapseDown(t *testing.T) {
	tb := testbed.Get(t)
	cfg, bot, admin, roomID := outageSetup(t, tb)
	bin := testbed.MedicBinary(t)

	tb.Stop(t, tb.HS1)
	started := time.Now()
	m := startMedicRun(t, bin, cfg)
	m.waitLog("3 logged attempts to reach Synapse", 90*time.Second, func(l string) bool { return retries(l) >= 3 })

	// The terminal answers while the bot waits for Synapse: the bot holds no lock on the store.
	out, code := execBinary(t, bin, cfg, "!jobs")
	if code != 0 || !strings.Contains(out, "No jobs yet.") {
		t.Errorf("medic exec '!jobs' while the bot waits for Synapse: exit %d\n%s", code, out)
	}
	checkNoFlood(t, m.log.String(), time.Since(started))

	tb.Start(t, tb.HS1)
	back := admin.WaitFor(3*time.Minute, "medic's note in the admin room that Synapse is back", fromBot(bot, roomID, "Synapse is reachable again after"))
	t.Logf("medic posted: %s", testbed.Message(back).Body)
	pingUntilAnswered(t, admin, roomID, bot, "after the outage")
	m.alive("after the outage")
}

// TestSynapseDownWhileRunning: Synapse stops while medic runs; medic retries the sync with
// backoff, one line an attempt, and once Synapse is back after a real outage (longer than a
// restart) it says so in the admin room.
func TestSynapseDownWhileRunning(t *testing.T) {
	tb := testbed.Get(t)
	cfg, bot, admin, roomID := outageSetup(t, tb)
	m := startMedicRun(t, testbed.MedicBinary(t), cfg)
	m.waitLog("medic running", 2*time.Minute, func(l string) bool { return strings.Contains(l, "Synapse Medic running") })
	pingUntilAnswered(t, admin, roomID, bot, "before the outage")

	before := len(m.log.String())
	// Taken before the stop: the time medic has been failing is at most this long ago, so
	// the flood bound below errs on the lenient side.
	stopped := time.Now()
	tb.Stop(t, tb.HS1)
	since := func(l string) string { return l[min(before, len(l)):] }
	m.waitLog("2 logged attempts to sync", 90*time.Second, func(l string) bool { return retries(since(l)) >= 2 })
	// Down for longer than a restart (medic announces only outages of 30 s or more that
	// begin while it runs; a repair's restart is reported by the repair).
	time.Sleep(time.Until(stopped.Add(35 * time.Second)))
	m.alive("while Synapse was down")
	checkNoFlood(t, since(m.log.String()), time.Since(stopped))

	tb.Start(t, tb.HS1)
	back := admin.WaitFor(3*time.Minute, "medic's note in the admin room that Synapse is back", fromBot(bot, roomID, "Synapse is reachable again after"))
	t.Logf("medic posted: %s", testbed.Message(back).Body)
	pingUntilAnswered(t, admin, roomID, bot, "after the outage")
}

// closedPort returns a loopback port nothing listens on (it was just released).
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// dbUnreachableConfig is the testbed's medic config with synapse.database pointing at a port
// nothing listens on: Synapse's database down, without stopping the shared PostgreSQL.
func dbUnreachableConfig(t *testing.T, tb *testbed.Testbed) (cfg, addr string) {
	t.Helper()
	cfg = tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	u, err := url.Parse(tb.HS1.DSN)
	if err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	down := *u
	down.Host = addr
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(raw), fmt.Sprintf("%q", tb.HS1.DSN), fmt.Sprintf("%q", down.String()), 1)
	if changed == string(raw) {
		t.Fatal("the test config names no synapse.database to change")
	}
	if err = os.WriteFile(cfg, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, addr
}

// dbChecks are the health checks that read Synapse's database.
var dbChecks = map[string]string{
	"rejections": "Rejected events", "partial-joins": "Partial joins", "extremities": "Forward extremities",
	"size": "Database size", "restore": "After-restore hazards", "background-updates": "Background updates",
	"state": "Room state",
}

// TestSynapseDatabaseDown: with Synapse's database unreachable, the health report has one
// critical check of its own for it and skips the checks that read it (no warning from each),
// and a command that needs it says so in one line.
func TestSynapseDatabaseDown(t *testing.T) {
	tb := testbed.Get(t)
	cfg, addr := dbUnreachableConfig(t, tb)
	unreachable := fmt.Sprintf("Synapse's database is unreachable (connection refused at %s)", addr)

	var stdout, stderr testbed.Buffer
	code := run([]string{"exec", "-c", cfg, "!health"}, nil, &stdout, &stderr)
	report := stdout.String()
	t.Logf("!health with Synapse's database down (exit %d):\n%s", code, report)
	if code == 0 {
		t.Errorf("!health exited 0 with Synapse's database down")
	}
	var critical []string
	for _, line := range strings.Split(report, "\n") {
		if strings.Contains(line, "CRITICAL") {
			critical = append(critical, line)
		}
		if strings.Contains(line, "WARN ") {
			t.Errorf("a check warns instead of being skipped or folded into the database check: %s", line)
		}
	}
	if len(critical) != 1 || !strings.Contains(critical[0], "Synapse's database") || !strings.Contains(critical[0], "unreachable") {
		t.Errorf("want exactly one critical line, Synapse's database unreachable; got %d:\n%s", len(critical), strings.Join(critical, "\n"))
	} else if !strings.Contains(critical[0], "connection refused at "+addr) {
		t.Errorf("the database check does not say why and where: %s", critical[0])
	}
	for id, title := range dbChecks {
		if !regexp.MustCompile(regexp.QuoteMeta(title) + `\s+SKIPPED\s+.*database unreachable`).MatchString(report) {
			t.Errorf("check %s is not skipped as 'database unreachable'", id)
		}
	}
	// Besides the testing switch's warning, one line at most says the database is down.
	var extra []string
	for _, l := range logLines(stderr.String()) {
		if !strings.Contains(l, "dangerously_allow_loopback") {
			extra = append(extra, l)
		}
	}
	if len(extra) > 1 {
		t.Errorf("the terminal printed %d lines besides the report (one warning at most):\n%s", len(extra), strings.Join(extra, "\n"))
	}

	// One check that reads the database, asked alone: skipped with the same reason.
	stdout.Reset()
	stderr.Reset()
	run([]string{"exec", "-c", cfg, "!health extremities"}, nil, &stdout, &stderr)
	if out := stdout.String(); !strings.Contains(out, "database unreachable") {
		t.Errorf("!health extremities with the database down does not say it is unreachable:\n%s", out)
	}

	// A command that needs the database: one line, saying what is wrong and where.
	for _, cmd := range []string{"!rejected", "!extremities"} {
		stdout.Reset()
		stderr.Reset()
		code = run([]string{"exec", "-c", cfg, cmd}, nil, &stdout, &stderr)
		t.Logf("%s with Synapse's database down (exit %d):\nstdout:\n%s\nstderr:\n%s", cmd, code, stdout.String(), stderr.String())
		if code == 0 {
			t.Errorf("%s exited 0 with Synapse's database down", cmd)
		}
		if lines := logLines(stdout.String()); len(lines) != 1 || !strings.HasPrefix(lines[0], unreachable) {
			t.Errorf("%s: want one line starting %q, got %d:\n%s", cmd, unreachable, len(lines), stdout.String())
		}
		if all := stdout.String() + stderr.String(); strings.Contains(all, "failed to connect to") || strings.Contains(all, "dial error") {
			t.Errorf("%s: the driver's error stack reaches the admin:\n%s", cmd, all)
		}
	}
}
