package health

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/diagnose"
)

// stateCache keeps the state check's last audit between runs of the checks in one process
// (the /metrics checks run every few minutes; the audit asks other servers, so it runs at
// most every state.health_interval).
type stateCache struct {
	mu  sync.Mutex
	at  time.Time
	res *Result
}

// stateLookback is how far back the check looks for the reset pattern: a room a local user
// was reset out of has no local member left, so only the reset points the audit at it, and
// it must keep doing so on every daily audit until the room is healed.
const stateLookback = 30 * 24 * time.Hour

// checkState audits the rooms with remote members (diagnose.StateAuditor, within
// state.health_budget) at most every state.health_interval; in between it repeats the last
// audit, from this process or from the last stored report.
func checkState(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	if rn.DB == nil {
		return errNoDB
	}
	cfg := rn.Config.State
	interval := config.Duration(cfg.HealthInterval)
	now := rn.now()
	cache := &rn.stateCache
	cache.mu.Lock()
	defer cache.mu.Unlock()
	if cache.res != nil && now.Sub(cache.at) < interval {
		repeat(res, cache.res, cache.at)
		return nil
	}
	if rep.Previous != nil {
		if old, ok := rep.Previous.Results["state"]; ok {
			if at := time.Unix(int64(old.Metrics["audited_at"]), 0); old.Metrics["audited_at"] > 0 && now.Sub(at) < interval {
				prev := &Result{Status: Status(old.Status), Summary: old.Summary, Metrics: old.Metrics}
				for _, it := range old.Items {
					prev.add(it, true, it, "diverged at the last audit", "")
					prev.level(it, prev.Status)
				}
				prev.Status = Status(old.Status)
				repeat(res, prev, at)
				return nil
			}
		}
	}
	if rn.Federation == nil {
		res.Status, res.Summary = Skipped, "needs the server's signing key to ask other servers: set synapse.signing_key_path"
		return nil
	}
	if fc, err := rn.Federation(); err != nil || fc == nil {
		res.Status, res.Summary = Skipped, "needs the server's signing key to ask other servers: set synapse.signing_key_path"
		return nil
	}
	sa := &diagnose.StateAuditor{DB: rn.DB, Federation: rn.Federation, ServerName: rn.Config.Homeserver.ServerName,
		Servers: cfg.Servers, Lookback: stateLookback}
	sr, err := sa.AuditAll(ctx, cfg.MaxRooms, config.Duration(cfg.HealthBudget), cfg.Workers)
	if err != nil {
		return err
	}
	res.Columns = []string{"room", "differences", "local members missing here", "fix"}
	diverging, failed := 0, 0
	for _, a := range sr.Rooms {
		if a.Err != nil {
			failed++
			continue
		}
		if !a.Diverges() {
			continue
		}
		diverging++
		missing := len(a.Healable())
		var kinds []string
		for _, d := range a.Diffs {
			kinds = append(kinds, string(d.Kind))
		}
		if n := len(a.OpenResets()); n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d reset membership(s)", n))
		}
		res.add(a.RoomID, true, a.RoomID, strings.Join(kinds, ", "), fmt.Sprint(missing), rn.pfx()+"state heal "+a.RoomID)
		// Local users who lost a room they are in: they notice. Other differences: a room
		// admin should look.
		if missing > 0 {
			res.level(a.RoomID, Critical)
		}
	}
	res.Metrics["diverging_rooms"] = float64(diverging)
	res.Metrics["audited_rooms"] = float64(len(sr.Rooms))
	res.Metrics["audited_at"] = float64(now.Unix())
	res.Summary = fmt.Sprintf("%d of %d room(s) with remote members diverge from the other servers (audited in %s", diverging, len(sr.Rooms), sr.Took.Round(time.Millisecond))
	if n := len(sr.Skipped); n > 0 {
		res.Summary += fmt.Sprintf("; %d not audited: state.health_budget ran out", n)
		res.worst(Warn)
	}
	if failed > 0 {
		res.Summary += fmt.Sprintf("; %d could not be compared", failed)
	}
	res.Summary += ")"
	if diverging > 0 {
		res.Hint = fmt.Sprintf("`%sstate audit <room>` shows the differences; `%sstate heal <room>` rejoins local users the room still lists and says what a room admin should do about the rest", rn.pfx(), rn.pfx())
	}
	cache.at, cache.res = now, res
	return nil
}

// repeat fills res with the findings of an earlier audit.
func repeat(res, prev *Result, at time.Time) {
	res.Status, res.Columns, res.Rows, res.Keys, res.Items, res.Hint = prev.Status, prev.Columns, prev.Rows, prev.Keys, prev.Items, prev.Hint
	res.Levels = prev.Levels
	for k, v := range prev.Metrics {
		res.Metrics[k] = v
	}
	res.Summary = prev.Summary
	if !strings.Contains(res.Summary, "repeated from the audit of") {
		res.Summary += fmt.Sprintf("; repeated from the audit of %s UTC (state.health_interval)", at.UTC().Format("2006-01-02 15:04"))
	}
}
