package recovery

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/store"
)

// KeyBackupEnd is where medic keeps when the restored database ended (ms, its newest event's
// received_ts as the offline aftercare found it): the online part scans the logs from there.
const KeyBackupEnd = "aftercare_backup_end_ms"

// AftercareOnlineArgs: how far back the logs are scanned for forgotten rooms.
type AftercareOnlineArgs struct {
	Since time.Duration `json:"since"`
}

// AftercareOnlineData holds the plans of the operations the online part reuses.
type AftercareOnlineData struct {
	// Recover is the !recover all plan's data (what its steps need).
	Recover json.RawMessage `json:"recover,omitempty"`
}

// The online part's step names: a reused operation's step behind its prefix, then the report.
const (
	onlineRejoin = "rejoin: "
	onlineReset  = "reset: "
	StepHealth   = "health report"
)

// AftercareOnline is the online part of the aftercare (Synapse running): one plan made of
// !recover all over the time since the restore and !federation reset all, each step run by
// that operation, then a health report.
type AftercareOnline struct {
	Recover    *jobs.Operation[RecoverArgs, RejoinData]
	Federation *jobs.Operation[FederationResetArgs, struct{}]
	// Health runs the health checks and returns the report as text.
	Health func(ctx context.Context) (string, error)
	Store  *store.Store
}

// BackupEnd returns when the restored database ended, as the offline part recorded it (zero
// when it did not run here).
func BackupEnd(ctx context.Context, st *store.Store) time.Time {
	raw, err := st.Get(ctx, KeyBackupEnd)
	if err != nil || raw == "" {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// SinceRestore is how far back the online part reads the logs: from the end of the restored
// database (rounded up to the hour), else def.
func SinceRestore(ctx context.Context, st *store.Store, def time.Duration) time.Duration {
	end := BackupEnd(ctx, st)
	if end.IsZero() {
		return def
	}
	return time.Since(end).Truncate(time.Hour) + time.Hour
}

// Operation is the online part's job operation.
func (o *AftercareOnline) Operation() *jobs.Operation[AftercareOnlineArgs, AftercareOnlineData] {
	return &jobs.Operation[AftercareOnlineArgs, AftercareOnlineData]{Kind: "aftercare.online", Plan: o.plan, Step: o.step,
		// Rooms and servers are independent: one that fails does not hold up the others. The
		// health report comes last, on what they did.
		Order: jobs.ParallelThenLast(8)}
}

func (o *AftercareOnline) plan(ctx context.Context, args AftercareOnlineArgs) (*jobs.Plan, error) {
	// A part that cannot be planned (no logs configured, the admin API refusing) is said in
	// the plan; the others, and the report, still run.
	rec, err := o.Recover.Plan(ctx, RecoverArgs{All: true, Since: args.Since})
	if err != nil {
		rec = &jobs.Plan{Nothing: "could not be planned: " + mdtext.Text(err.Error())}
	}
	fed, err := o.Federation.Plan(ctx, FederationResetArgs{Server: "all"})
	if err != nil {
		fed = &jobs.Plan{Nothing: "could not be planned: " + mdtext.Text(err.Error())}
	}
	plan := &jobs.Plan{Title: "Aftercare of Synapse's restored database (online part)",
		Why: fmt.Sprintf("After a restore Synapse has forgotten the rooms joined since the backup and may back off from servers; "+
			"this rejoins the rooms the logs of the last %s show (`%s`), resets federation backoff and ends with a health report.", args.Since, "recover all")}
	add := func(p *jobs.Plan, prefix, what string) {
		if p.Nothing != "" {
			plan.Changes = append(plan.Changes, what+": "+p.Nothing)
			return
		}
		for _, c := range p.Changes {
			plan.Changes = append(plan.Changes, what+": "+c)
		}
		plan.Risks = append(plan.Risks, p.Risks...)
		for _, s := range p.Steps {
			plan.Steps = append(plan.Steps, prefix+s)
		}
		plan.Basis = append(plan.Basis, p.Basis...)
	}
	add(rec, onlineRejoin, "Rejoin")
	add(fed, onlineReset, "Federation")
	d := AftercareOnlineData{Recover: rec.Data}
	plan.Steps = append(plan.Steps, StepHealth)
	plan.Changes = append(plan.Changes, "Health report: every check, with what is still wrong")
	plan.Data = jobs.Encode(d)
	return plan, nil
}

func (o *AftercareOnline) step(ctx context.Context, s *jobs.Step[AftercareOnlineArgs, AftercareOnlineData]) error {
	switch {
	case s.Name == StepHealth:
		rep, err := o.Health(ctx)
		if err != nil {
			return fmt.Errorf("health report: %w", err)
		}
		s.Say("%s", rep)
		return nil
	case strings.HasPrefix(s.Name, onlineRejoin):
		sub := &jobs.Step[RecoverArgs, RejoinData]{Job: s.Job, Idx: s.Idx, Name: strings.TrimPrefix(s.Name, onlineRejoin),
			Args: RecoverArgs{All: true, Since: s.Args.Since}, Retry: s.Retry, Reporter: s.Reporter}
		if err := decodeData(s.Data.Recover, &sub.Data); err != nil {
			return err
		}
		return o.Recover.Step(ctx, sub)
	case strings.HasPrefix(s.Name, onlineReset):
		sub := &jobs.Step[FederationResetArgs, struct{}]{Job: s.Job, Idx: s.Idx, Name: strings.TrimPrefix(s.Name, onlineReset),
			Args: FederationResetArgs{Server: "all"}, Retry: s.Retry, Reporter: s.Reporter}
		return o.Federation.Step(ctx, sub)
	}
	return fmt.Errorf("unknown step %s", mdtext.Code(s.Name))
}

func decodeData(raw json.RawMessage, into any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("plan data: %w", err)
	}
	return nil
}
