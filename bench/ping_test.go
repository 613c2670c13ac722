// Package bench holds medic's performance figures as Go benchmarks against the real testbed.
// They print numbers; they never pass or fail on time. Run: make bench.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/testbed"
)

func TestMain(m *testing.M) { testbed.Main(m) }

// startMedic builds medic and runs it as its own process (as in production) with a fresh
// server-admin account; it returns the bot's user ID and process.
func startMedic(b *testing.B, tb *testbed.Testbed) (id.UserID, *exec.Cmd) {
	acct := tb.Register(b, tb.HS1, testbed.UniqueName("medicbench"), true)
	_, _ = acct.Logout(context.Background())
	cfg := tb.BasicMedicConfig(b, b.TempDir(), acct.UserID, tb.UserPassword, "logging: {level: warn}\n")
	cmd := exec.Command(testbed.MedicBinary(b), "run", "-c", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return acct.UserID, cmd
}

func rssMB(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return -1
}

// BenchmarkPingRoundTrip measures !ping from an admin's encrypted client to the bot's
// encrypted reply, through real /sync on hs1 (targets: p50 < 250 ms; idle RSS < 40 MB).
func BenchmarkPingRoundTrip(b *testing.B) {
	tb := testbed.Get(b)
	botUser, proc := startMedic(b, tb)
	admin := testbed.Syncing(b, tb.Admin(b, tb.HS1))
	var roomID id.RoomID
	deadline := time.Now().Add(60 * time.Second)
	for roomID == "" && time.Now().Before(deadline) { // the bot needs a moment to log in
		r := admin.CreateRoom(true, botUser)
		if admin.TryWaitFor(15*time.Second, testbed.Joined(r, botUser)) != nil {
			roomID = r
		}
	}
	if roomID == "" {
		b.Fatal("bot never joined")
	}
	warm := admin.SendText(roomID, "!ping")
	admin.WaitFor(30*time.Second, "warm-up pong", testbed.ReplyTo(botUser, warm))

	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		evtID := admin.SendText(roomID, "!ping")
		admin.WaitFor(30*time.Second, "pong", testbed.ReplyTo(botUser, evtID))
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durations)
	pct := func(p float64) float64 {
		return float64(durations[int(float64(len(durations)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
	// Idle: no traffic for a while, then read the bot process's resident set.
	time.Sleep(5 * time.Second)
	b.ReportMetric(rssMB(proc.Process.Pid), "idle-rss-MB")
}
