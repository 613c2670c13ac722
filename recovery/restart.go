package recovery

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/synapse/adminapi"
)

// RestartWait is how long medic waits for an admin to restart Synapse when no restart
// command is configured.
var RestartWait = 30 * time.Minute

// Restarter restarts Synapse after a repair that changed rows Synapse caches: with the
// configured command (synapse.restart_command), or by asking the admin and waiting.
type Restarter struct {
	Admin   *adminapi.Client
	Command string
}

// Text says, for a plan, how the restart will happen.
func (r *Restarter) Text() string {
	if r.Command != "" {
		return fmt.Sprintf("Right after the change medic restarts Synapse with `%s` and waits until it answers again.", r.Command)
	}
	return fmt.Sprintf("No restart command is configured: after the change medic asks you to restart Synapse and waits (up to %s) until it has gone down and answers again.", RestartWait)
}

// Restart restarts Synapse with the configured command, or asks the admin to, and waits
// until Synapse answers again.
func (r *Restarter) Restart(ctx context.Context, rep jobs.Reporter) error {
	if r.Command != "" {
		out, err := exec.CommandContext(ctx, "sh", "-c", r.Command).CombinedOutput()
		if err != nil {
			return fmt.Errorf("restart command failed: %w: %s", err, lastLine(string(out)))
		}
		return r.waitUp(ctx, rep, 5*time.Minute, false)
	}
	rep.Say("⚠️ **Restart Synapse now** (e.g. `systemctl restart matrix-synapse`): the change takes effect only after a restart. I'm waiting up to %s and will confirm when it is back.", RestartWait)
	return r.waitUp(ctx, rep, RestartWait, true)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// waitUp waits until Synapse answers; with mustGoDown, only after it has been seen down.
func (r *Restarter) waitUp(ctx context.Context, rep jobs.Reporter, limit time.Duration, mustGoDown bool) error {
	deadline := time.Now().Add(limit)
	sawDown := !mustGoDown
	for time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		version, err := r.Admin.ServerVersion(pctx)
		cancel()
		if err != nil {
			sawDown = true
		} else if sawDown {
			rep.Note("Synapse %s is back up after the restart.", version)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if !sawDown {
		return fmt.Errorf("Synapse was not restarted within %s; restart it, then `!resume` this job", limit)
	}
	return fmt.Errorf("Synapse did not answer within %s of the restart", limit)
}
