// Package health runs medic's health checks and renders the report that `!health` and the
// scheduled report post: each check says ok, warn or critical, why in one line, and how to
// fix it (the medic command where there is one), with the rows behind it for `!health <check>`.
//
// Results are kept in medic's store (package store), so a report can tell what is new since
// the last report and since yesterday, and chart a trend.
package health

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/federation"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
)

// Status is a check's verdict. Skipped means the check could not apply (e.g. nothing
// configured for it); it never counts as better or worse.
type Status int

const (
	Skipped Status = iota - 1
	OK
	Warn
	Critical
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	case Critical:
		return "critical"
	}
	return "skipped"
}

// Icon is the status as a coloured dot.
func (s Status) Icon() string {
	switch s {
	case OK:
		return "🟢"
	case Warn:
		return "🟡"
	case Critical:
		return "🔴"
	}
	return "⚪"
}

// Result is what one check found.
type Result struct {
	Check   string
	Title   string
	Status  Status
	Summary string // one line: why this status
	Hint    string // how to fix it (a medic command where there is one)
	Columns []string
	Rows    [][]string
	// Keys names the finding behind each row (room ID, server, table), parallel to Rows;
	// Items are the keys of rows that are problems, compared across reports.
	Keys  []string
	Items []string
	// Levels is each problem item's own status (the check's status is the worst of them and
	// of anything else it found).
	Levels  map[string]Status
	Metrics map[string]float64
	// PerItem is the check's figure for each finding, by key, where it has one (rejections:
	// new rejected events per room; extremities: forward extremities per room; disk: free
	// percent per file system). For /metrics; not stored.
	PerItem map[string]float64
	// New are Items that the previous report did not have (filled in by Run).
	New []string
	// Changed says how the status moved since the previous report ("" when the same or no
	// previous report): "worse" or "better".
	Changed string
	Took    time.Duration
}

func (r *Result) add(key string, problem bool, cells ...string) {
	r.Rows = append(r.Rows, cells)
	r.Keys = append(r.Keys, key)
	if problem {
		r.Items = append(r.Items, key)
		r.level(key, Warn)
	}
}

// level records an item's status (the worst given) and makes it count for the check.
func (r *Result) level(key string, s Status) {
	if r.Levels == nil {
		r.Levels = map[string]Status{}
	}
	r.Levels[key] = max(r.Levels[key], s)
	r.worst(s)
}

func (r *Result) worst(s Status) {
	if s > r.Status {
		r.Status = s
	}
}

// Check is one health check.
type Check struct {
	ID          string
	Title       string
	Description string
	// NeedsDB: the check reads Synapse's database (when one is configured). While it is
	// unreachable the check is skipped: the database check alone reports the outage.
	NeedsDB bool
	Run     func(ctx context.Context, rn *Runner, rep *Report, res *Result) error
}

// SelfStatus is medic's own state, given by the bot.
type SelfStatus struct {
	Running  bool // false on the terminal: no sync loop to speak of
	LastSync time.Time
	SyncErr  error
	E2EE     bool
	E2EEErr  error
}

// Runner runs checks against one Synapse.
type Runner struct {
	Config *config.Config
	Admin  *adminapi.Client
	DB     *synapse.DB
	Store  *store.Store
	// Self reports medic's own state; nil on the terminal.
	Self func(ctx context.Context) SelfStatus
	// Federation returns the server-signing federation client used to resolve rooms of
	// dropped events in the logs (may return nil).
	Federation func() (*federation.Client, error)
	Now        func() time.Time
	// TestedSchema is the Synapse schema range medic's repairs were tested on: the synapse
	// check warns when Synapse's database is outside it (zero: not judged).
	TestedSchema jobs.SchemaRange

	stateCache stateCache // the state check's last audit (health/state.go)
	// JoinMethod says how !recover would join local users now (appservice or login-as-user,
	// and why), and false when neither works; nil: not checked.
	JoinMethod func(ctx context.Context) (string, bool)
}

func (rn *Runner) now() time.Time {
	if rn.Now != nil {
		return rn.Now()
	}
	return time.Now()
}

// Report is one run of the checks.
type Report struct {
	At      time.Time
	Server  string
	Results []*Result
	// Previous is the last stored report (nil if none); Since is the start of the window the
	// "since the last report" checks look at: the previous report, but at least 24 hours back.
	Previous  *store.HealthRecord
	Yesterday *store.HealthRecord
	Since     time.Time
	// Charts are PNG images worth attaching, by file name.
	Charts []Chart
	// DBErr is why Synapse's database did not answer before the checks ran (nil when it did,
	// or when none is configured).
	DBErr error
	// DBLatency is how long the database took to answer that probe.
	DBLatency time.Duration
}

// DBDown tells whether Synapse's database is configured but did not answer.
func (rep *Report) DBDown() bool { return rep.DBErr != nil }

// Counts returns how many checks have each status.
func (rep *Report) Counts() map[Status]int {
	out := map[Status]int{}
	for _, r := range rep.Results {
		out[r.Status]++
	}
	return out
}

// Worst is the worst status of the report.
func (rep *Report) Worst() Status {
	w := OK
	for _, r := range rep.Results {
		w = max(w, r.Status)
	}
	return w
}

// Find returns a check by ID, or nil.
func Find(id string) *Check {
	for _, c := range Checks() {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// Run runs every check (or only the named ones) concurrently, compares the results with the
// stored history, and returns the report. It does not store it: see Save.
func (rn *Runner) Run(ctx context.Context, only ...string) (*Report, error) {
	now := rn.now()
	rep := &Report{At: now, Server: rn.Config.Homeserver.ServerName, Since: now.Add(-24 * time.Hour)}
	if rn.Store != nil {
		var err error
		if rep.Previous, err = rn.Store.LastHealthReport(ctx, now, false); err != nil {
			return nil, err
		}
		if rep.Yesterday, err = rn.Store.LastHealthReport(ctx, now.Add(-24*time.Hour), false); err != nil {
			return nil, err
		}
		if rep.Previous != nil && rep.Previous.At.Before(rep.Since) {
			rep.Since = rep.Previous.At
		}
	}
	var checks []*Check
	for _, c := range Checks() {
		if len(only) == 0 || slices.Contains(only, c.ID) {
			checks = append(checks, c)
		}
	}
	// One probe of Synapse's database before the checks: when it is down, the database check
	// says so once and the checks that read it are skipped, rather than each of them timing
	// out on its own and warning with the driver's error.
	if rn.DB != nil && slices.ContainsFunc(checks, func(c *Check) bool { return c.NeedsDB || c.ID == "database" }) {
		rep.DBLatency, rep.DBErr = rn.DB.Ping(ctx)
	}
	rep.Results = make([]*Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		res := &Result{Check: c.ID, Title: c.Title, Metrics: map[string]float64{}, PerItem: map[string]float64{}}
		rep.Results[i] = res
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			defer func() {
				res.Took = time.Since(start)
				if p := recover(); p != nil {
					zerolog.Ctx(ctx).Error().Any("panic", p).Bytes("stack", debug.Stack()).Str("check", c.ID).Msg("Health check panicked")
					res.Status, res.Summary = Warn, "the check failed internally; details are in medic's log"
				}
			}()
			if c.NeedsDB && rep.DBDown() {
				res.Status, res.Summary = Skipped, skippedDBDown
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			err := c.Run(cctx, rn, rep, res)
			if ue, ok := synapse.Unreachable(err); ok {
				// The database went away after the probe: still one line, not the driver's
				// stack of errors.
				res.worst(Warn)
				res.Summary = "could not check: " + ue.Error()
			} else if errors.Is(err, errNoDB) {
				res.Status, res.Summary = Skipped, err.Error()
			} else if err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Str("check", c.ID).Msg("Health check could not run")
				res.worst(Warn)
				res.Summary = "could not check: " + err.Error()
			}
		}()
	}
	wg.Wait()
	for _, r := range rep.Results {
		r.compare(rep.Previous)
	}
	return rep, nil
}

func (r *Result) compare(prev *store.HealthRecord) {
	if prev == nil {
		return
	}
	old, ok := prev.Results[r.Check]
	if !ok {
		return
	}
	for _, it := range r.Items {
		if !slices.Contains(old.Items, it) {
			r.New = append(r.New, it)
		}
	}
	switch o := Status(old.Status); {
	case r.Status == Skipped || o == Skipped:
	case r.Status > o:
		r.Changed = "worse"
	case r.Status < o:
		r.Changed = "better"
	}
}

// Record converts the report for the store.
func (rep *Report) Record(trigger string, posted bool) *store.HealthRecord {
	rec := &store.HealthRecord{At: rep.At, Trigger: trigger, Posted: posted, Results: map[string]store.HealthResult{}}
	for _, r := range rep.Results {
		rec.Results[r.Check] = store.HealthResult{Status: int(r.Status), Summary: r.Summary, Items: r.Items, Metrics: r.Metrics}
	}
	return rec
}

// Save stores the report in the history.
func (rn *Runner) Save(ctx context.Context, rep *Report, trigger string, posted bool) error {
	if rn.Store == nil {
		return nil
	}
	_, err := rn.Store.SaveHealthReport(ctx, rep.Record(trigger, posted))
	return err
}

// ShouldPost decides, for health.post = changed or worsened, whether a scheduled report is
// worth posting compared with the last posted one.
func ShouldPost(mode string, rep *Report, lastPosted *store.HealthRecord) bool {
	if mode == "always" || lastPosted == nil {
		return true
	}
	for _, r := range rep.Results {
		old, ok := lastPosted.Results[r.Check]
		if !ok {
			if r.Status > OK {
				return true
			}
			continue
		}
		newItems := false
		for _, it := range r.Items {
			if !slices.Contains(old.Items, it) {
				newItems = true
			}
		}
		switch {
		case r.Status == Skipped || Status(old.Status) == Skipped:
		case r.Status > Status(old.Status) || newItems:
			return true
		case mode == "changed" && (r.Status != Status(old.Status) || len(r.Items) != len(old.Items)):
			return true
		}
	}
	return false
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
