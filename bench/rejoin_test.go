package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/synapse-medic/medic/testbed"
)

var (
	rejoinCounts = regexp.MustCompile(`Rejoined (\d+) user\(s\); (\d+) already joined by Synapse's resync of the room's state; (\d+) failed\.`)
	rejoinWait   = regexp.MustCompile(`Waited ([0-9.a-zµ]+) for Synapse to fetch`)
	rejoin429    = regexp.MustCompile(`Synapse answered (\d+) join\(s\) with 429`)
)

// BenchmarkRejoinModes prints, side by side, medic's `!recover room` on 200 members of an
// invite-only room forgotten after a restore of hs1's database, joining them with
// login-as-user (medic's account exempt from rate limits, as the README advises) and with
// medic's appservice: time, joins/s, 429 answers, and the wait for Synapse to fetch the
// room's state after the first (partial-state) join. Target: ≤ 15 s for 200 in both modes.
func BenchmarkRejoinModes(b *testing.B) {
	tb := testbed.Get(b)
	dir := b.TempDir()
	bin := testbed.MedicBinary(b)
	base := tb.MedicConfig(b, dir, tb.HS1.UserID("medic"), tb.MedicPassword)
	reg := filepath.Join(dir, "appservice.yaml")
	if out, err := exec.Command(bin, "appservice-registration", "-c", base, "-o", reg).CombinedOutput(); err != nil {
		b.Fatalf("appservice-registration: %v\n%s", err, out)
	}
	tb.InstallAppservice(b, tb.HS1, reg) // loaded by the restart of the restore below
	f := tb.StageForgotten(b, recoverUsers, false)
	raw, err := os.ReadFile(base)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i, mode := range []string{"login_as_user", "appservice"} {
		if i > 0 {
			b.StopTimer()
			f.Restore(b, tb)
			b.StartTimer()
		}
		modeDir := filepath.Join(dir, mode)
		if err = os.MkdirAll(modeDir, 0o700); err != nil {
			b.Fatal(err)
		}
		cfg := testbed.WriteConfig(b, modeDir, string(raw)+fmt.Sprintf("recover: {join_as: %s, appservice_registration: %q}\n", mode, reg))
		start := time.Now()
		out, err := exec.Command(bin, "exec", "-c", cfg, "--yes", "!recover room "+f.Invite.String()+" via "+tb.HS2.Name).CombinedOutput()
		secs := time.Since(start).Seconds()
		if err != nil {
			b.Fatalf("medic (%s): %v\n%s", mode, err, out)
		}
		m := rejoinCounts.FindSubmatch(out)
		if m == nil {
			b.Fatalf("medic (%s) printed no counts:\n%s", mode, out)
		}
		rejoined, _ := strconv.Atoi(string(m[1]))
		resynced, _ := strconv.Atoi(string(m[2]))
		failed, _ := strconv.Atoi(string(m[3]))
		var wait time.Duration
		if w := rejoinWait.FindSubmatch(out); w != nil {
			wait, _ = time.ParseDuration(string(w[1]))
		}
		limited := 0
		if l := rejoin429.FindSubmatch(out); l != nil {
			limited, _ = strconv.Atoi(string(l[1]))
		}
		joined := f.Joined(b, tb, f.Invite)
		name := map[string]string{"login_as_user": "login", "appservice": "as"}[mode]
		b.ReportMetric(secs, name+"-s")
		b.ReportMetric(float64(len(f.Users))/secs, name+"-joins/s")
		b.ReportMetric(float64(limited), name+"-429s")
		b.ReportMetric(wait.Seconds(), name+"-partial-wait-s")
		b.ReportMetric(float64(joined), name+"-joined")
		fmt.Printf("rejoin %-13s %d users: %.1f s (%.1f joins/s), %d rejoined + %d joined by the resync, %d failed, %d× 429, partial-state wait %s, %d joined after\n",
			mode, len(f.Users), secs, float64(len(f.Users))/secs, rejoined, resynced, failed, limited, wait, joined)
	}
}
