package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/synapse/journal"
	"github.com/synapse-medic/medic/testbed"
)

// medicProcess is medic running as its own process, as in production, so it can be killed.
type medicProcess struct {
	bin, cfg, dataDir string
	cmd               *exec.Cmd
}

// execKilledAt runs `medic exec --yes line` as its own process, held at the crash point
// named (journal.HoldPointEnv), and SIGKILLs it there. It returns what medic printed.
func execKilledAt(t *testing.T, bin, cfg, line, point string) string {
	t.Helper()
	return execKilledWhen(t, bin, cfg, line, "holding at", journal.HoldPointEnv+"="+point)
}

func (p *medicProcess) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(p.bin, "run", "-c", p.cfg)
	logPath := filepath.Join(filepath.Dir(p.cfg), "medic.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err = p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := p.cmd
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			raw, _ := os.ReadFile(logPath)
			lines := strings.Split(string(raw), "\n")
			t.Logf("medic log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
}

func (p *medicProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// TestKillMidJobAndResume kills medic (SIGKILL) in the middle of a many-step job; on restart
// the admin room is told, and !resume finishes the job without repeating finished steps.
func TestKillMidJobAndResume(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	const n = 400
	var ghosts []string
	run := testbed.UniqueName("g")
	for i := 0; i < n; i++ {
		// Fresh names each run: Synapse caches the retry state of destinations it has reset.
		ghosts = append(ghosts, fmt.Sprintf("%s-%d.kill.test", run, i))
	}
	now := time.Now().UnixMilli()
	tb.HS1.Exec(t, `INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts)
		SELECT d, $2, 600000, $2 FROM unnest($1::text[]) AS d`, ghosts, now)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM destinations WHERE destination LIKE '%.kill.test'`) })

	acct := tb.Register(t, tb.HS1, testbed.UniqueName("medickill"), true)
	_, _ = acct.Logout(ctx)
	dir := t.TempDir()
	p := &medicProcess{bin: testbed.MedicBinary(t), cfg: tb.MedicConfig(t, dir, acct.UserID, tb.UserPassword), dataDir: filepath.Join(dir, "data")}
	p.start(t)
	admin := testbed.Syncing(t, tb.Admin(t, tb.HS1))
	roomID := adminRoomWith(t, admin, acct.UserID)
	fromBot := func(text string) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			msg := testbed.Message(evt)
			return evt.Sender == acct.UserID && msg != nil && strings.Contains(msg.Body, text)
		}
	}
	admin.SendText(roomID, "!federation reset all")
	plan := admin.WaitFor(60*time.Second, "the plan", fromBot("Plan "))
	body := testbed.Message(plan).Body
	jobID := strings.Trim(strings.TrimSuffix(strings.Fields(body[strings.Index(body, "Plan ")+5:])[0], ":"), "*")
	if _, err := admin.SendReaction(ctx, roomID, plan.ID, "✅"); err != nil {
		t.Fatal(err)
	}

	// Watch medic's own store and kill it once some, but not all, steps are recorded.
	db, err := sql.Open("sqlite3-fk-wal", "file:"+filepath.Join(p.dataDir, "medic.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	countSteps := func() int {
		var c int
		_ = db.QueryRow(`SELECT count(*) FROM job_step WHERE job_id = $1 AND state = 'done'`, jobID).Scan(&c)
		return c
	}
	deadline := time.Now().Add(60 * time.Second)
	for countSteps() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("job %s made no progress", jobID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.kill(t)
	doneAtKill := countSteps()
	if doneAtKill >= n {
		t.Fatalf("the job finished (%d steps) before it could be killed; make it longer", doneAtKill)
	}
	t.Logf("killed medic after %d of %d steps", doneAtKill, n)

	p.start(t)
	notice := admin.WaitFor(60*time.Second, "the interrupted-job notice", fromBot("Job `"+jobID+"` (Reset"))
	if b := testbed.Message(notice).Body; !strings.Contains(b, "was interrupted") || !strings.Contains(b, "!resume "+jobID) {
		t.Fatalf("notice: %q", b)
	}
	admin.SendText(roomID, "!resume "+jobID)
	admin.WaitFor(120*time.Second, "the final report", fromBot("Job `"+jobID+"` done"))

	// Every destination was reset, and no finished step ran twice: count the reset requests
	// per destination in Synapse's own access log. (The one step in flight at the kill may
	// have been sent and not recorded; it is the only one allowed to run twice.)
	// Synapse's log handler flushes every few seconds: wait until every reset is logged.
	var raw []byte
	for deadline := time.Now().Add(20 * time.Second); ; {
		if raw, err = os.ReadFile(tb.HS1.LogPath()); err != nil {
			t.Fatal(err)
		}
		all := true
		for _, g := range ghosts {
			all = all && strings.Contains(string(raw), "/federation/destinations/"+g+"/reset_connection HTTP")
		}
		if all || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	twice := 0
	for _, g := range ghosts {
		c := strings.Count(string(raw), "/federation/destinations/"+g+"/reset_connection HTTP")
		if c == 0 {
			t.Errorf("%s was never reset", g)
		} else if c > 1 {
			twice++
		}
	}
	if twice > 1 {
		t.Errorf("%d destinations were reset more than once; at most the step in flight may be", twice)
	}
}

// adminRoomWith creates an encrypted room of admin's with medic (bot) in it, once medic has
// started and accepts invites (a room created before that may never be joined: try again).
func adminRoomWith(t *testing.T, admin *testbed.Client, bot id.UserID) id.RoomID {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		r := admin.CreateRoom(true, bot)
		if admin.TryWaitFor(15*time.Second, testbed.Joined(r, bot)) != nil {
			return r
		}
	}
	t.Fatal("medic never joined the admin room")
	return ""
}
