package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"maunium.net/go/mautrix/federation"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapselog"
)

var errNoDB = errors.New("needs Synapse's database: set synapse.database")

// skippedDBDown is the summary of a check that reads Synapse's database while it is
// unreachable (the database check says why).
const skippedDBDown = "skipped: database unreachable (see Synapse's database)"

// Checks returns every check in report order.
func Checks() []*Check {
	return []*Check{
		{ID: "synapse", Title: "Synapse", Description: "Synapse answers; its version", Run: checkSynapse},
		{ID: "database", Title: "Synapse's database", Description: "Synapse's PostgreSQL database answers medic (the checks that read it are skipped while it does not)", Run: checkDatabase},
		{ID: "federation", Title: "Federation self-test", Description: "how the world reaches the server: name resolution, TLS, key server, a signed request with an escaped room ID", Run: checkFederation},
		{ID: "destinations", Title: "Failing destinations", Description: "remote servers Synapse is backing off from, and for how long", Run: checkDestinations},
		{ID: "forgotten", Title: "Forgotten rooms", Description: "rooms whose federation traffic Synapse dropped since the last report (from its logs)", NeedsDB: true, Run: checkForgotten},
		{ID: "rejections", Title: "Rejected events", Description: "new rejected events per room since the last report; rooms where they form a rejection chain", NeedsDB: true, Run: checkRejections},
		{ID: "state", Title: "Room state", Description: "rooms whose current state here diverges from the other servers in them (state resets, stale memberships); audited daily, within a time budget", NeedsDB: true, Run: checkState},
		{ID: "partial-joins", Title: "Partial joins", Description: "rooms stuck in a partial (faster) join", NeedsDB: true, Run: checkPartialJoins},
		{ID: "extremities", Title: "Forward extremities", Description: "rooms with too many forward extremities", NeedsDB: true, Run: checkExtremities},
		{ID: "size", Title: "Database size", Description: "database size, largest tables, biggest rooms by state (estimated)", NeedsDB: true, Run: checkSize},
		{ID: "restore", Title: "After-restore hazards", Description: "collation/ctype, owners of tables and sequences, stream sequences behind their tables or stream_positions", NeedsDB: true, Run: checkRestore},
		{ID: "background-updates", Title: "Background updates", Description: "Synapse background updates still pending", NeedsDB: true, Run: checkBackgroundUpdates},
		{ID: "disk", Title: "Free disk", Description: "free space where the media store and the database live", Run: checkDisk},
		{ID: "medic", Title: "Medic", Description: "medic's own sync, end-to-end encryption and last report", Run: checkMedic},
	}
}

// IDs lists the check IDs.
func IDs() []string {
	var out []string
	for _, c := range Checks() {
		out = append(out, c.ID)
	}
	return out
}

func (rn *Runner) pfx() string { return rn.Config.Bot.CommandPrefix }

func (rn *Runner) th() config.HealthThresholds { return rn.Config.Health.Thresholds }

func checkSynapse(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	start := time.Now()
	v, err := rn.Admin.ServerVersion(ctx)
	took := time.Since(start)
	res.Columns = []string{"what", "value"}
	if err != nil {
		res.Status, res.Summary = Critical, "Synapse does not answer: "+err.Error()
		res.Hint = "check that Synapse runs and that homeserver.url points at it"
		res.add("reachable", true, "reachable", "no")
		return nil
	}
	res.Summary = fmt.Sprintf("Synapse %s answered in %s", v, took.Round(time.Millisecond))
	res.add("version", false, "version", v)
	res.add("latency", false, "answered in", took.Round(time.Millisecond).String())
	res.Metrics["latency_ms"] = float64(took.Milliseconds())
	checkSchema(ctx, rn, rep, res)
	return nil
}

func checkDatabase(_ context.Context, rn *Runner, rep *Report, res *Result) error {
	if rn.DB == nil {
		res.Status, res.Summary = Skipped, "no synapse.database configured"
		return nil
	}
	res.Columns = []string{"what", "value"}
	if rep.DBErr != nil {
		res.Status, res.Summary = Critical, "unreachable: "+rep.DBErr.Error()
		if ue, ok := synapse.Unreachable(rep.DBErr); ok {
			res.Summary = "unreachable: " + ue.Reason
			if ue.Addr != "" {
				res.Summary += " at " + ue.Addr
			}
		}
		res.Hint = "check that PostgreSQL runs and that synapse.database points at it; the checks that read Synapse's database are skipped until it answers"
		res.add("reachable", true, "reachable", "no")
		res.level("reachable", Critical)
		return nil
	}
	took := rep.DBLatency.Round(time.Millisecond)
	res.Summary = fmt.Sprintf("answered in %s", took)
	res.add("latency", false, "answered in", took.String())
	res.Metrics["latency_ms"] = float64(rep.DBLatency.Milliseconds())
	return nil
}

// checkSchema adds Synapse's database schema to the synapse check, and warns when medic's
// repairs were not tested on it. A database that does not answer is left to the checks that
// read it: this check is about Synapse's version.
func checkSchema(ctx context.Context, rn *Runner, rep *Report, res *Result) {
	if rn.DB == nil {
		return
	}
	if rep.DBDown() {
		res.add("schema", false, "database schema", "unknown: database unreachable")
		return
	}
	s, err := rn.DB.Schema(ctx)
	if ue, ok := synapse.Unreachable(err); ok {
		err = ue // one line, not the driver's error per host tried
	}
	if err != nil {
		res.add("schema", false, "database schema", "unknown: "+err.Error())
		return
	}
	if rn.TestedSchema.IsZero() {
		res.add("schema", false, "database schema", s.String())
		return
	}
	st := jobs.SchemaState{Version: s.Version, Deltas: s.DeltasAt(s.Version)}
	tested := rn.TestedSchema.Covers(st)
	res.add("schema", !tested, "database schema", s.String()+", "+rn.TestedSchema.Verdict(st))
	res.Metrics["schema_version"] = float64(s.Version)
	if !tested {
		res.worst(Warn)
		res.Summary += fmt.Sprintf("; its database (schema %d) is not one medic's repairs were tested on (%s)", s.Version, rn.TestedSchema)
		res.Hint = fmt.Sprintf("repairs that write Synapse's tables (un-reject, import, undo) refuse without `%s`; "+
			"check medic's releases for one tested on this Synapse", jobs.ForceSchemaFlag)
	}
}

// metricsClient reads synapse.metrics_url (an address the admin chose, like homeserver.url).
var metricsClient = &http.Client{Timeout: 10 * time.Second}

func checkDestinations(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	dests, err := rn.Admin.Destinations(ctx)
	if err != nil {
		return err
	}
	th := rn.th()
	warnAfter, critAfter := config.Duration(th.DestinationWarnAfter), config.Duration(th.DestinationCriticalAfter)
	res.Columns = []string{"server", "failing for", "next retry in", "source"}
	failing, fromLog := 0, 0
	status := func(dur time.Duration) Status {
		switch {
		case dur >= critAfter:
			return Critical
		case dur >= warnAfter:
			return Warn
		}
		return OK
	}
	// addFailing lists one failing server, whichever source found it.
	addFailing := func(server string, since time.Time, retry, source string) {
		failing++
		dur := rep.At.Sub(since)
		st := status(dur)
		res.worst(st)
		res.add(server, st > OK, server, ago(dur), retry, source)
		if st > OK {
			res.level(server, st)
		}
	}
	known := map[string]bool{}
	for _, d := range dests {
		if !d.Failing() {
			continue
		}
		known[d.Destination] = true
		since := time.UnixMilli(d.RetryLastTS)
		if d.FailureTS != nil {
			since = time.UnixMilli(*d.FailureTS)
		}
		retry := time.UnixMilli(d.RetryLastTS + d.RetryInterval).Sub(rep.At)
		addFailing(d.Destination, since, ago(max(retry, 0)), "Synapse's destinations table")
	}
	// Synapse records a dead peer only when its retries of a transaction give up (~9.5 min).
	// Its metrics (when synapse.metrics_url is set) show PDUs no longer delivered to the
	// servers of its federation_metrics_domains; its log shows the failing requests from the
	// first one.
	fromMetrics := 0
	var metricsErr error
	if url := rn.Config.Synapse.MetricsURL; url != "" && rn.DB != nil {
		peers, err := diagnose.FailingPeersFromMetrics(ctx, metricsClient, url, rn.DB, rep.At)
		metricsErr = err
		for _, p := range peers {
			if known[p.Server] {
				continue
			}
			known[p.Server] = true
			fromMetrics++
			addFailing(p.Server, p.Oldest, "—", fmt.Sprintf("Synapse's metrics: last PDU delivered %s, %d room(s) with PDUs undelivered since %s",
				p.LastDelivered.UTC().Format("15:04:05"), p.Rooms, p.Oldest.UTC().Format("15:04:05")))
		}
	}
	var logErr error
	if len(rn.Config.Synapse.Logs) > 0 {
		peers, err := diagnose.FailingPeersFromLogs(ctx, rn.Config.Synapse.Logs, rep.At)
		logErr = err
		for _, p := range peers {
			if known[p.Server] {
				continue
			}
			fromLog++
			addFailing(p.Server, p.First, "—", fmt.Sprintf("Synapse's log: %d failed requests since %s, last %s", p.Failures, p.First.UTC().Format("15:04:05"), p.LastError))
		}
	}
	res.Metrics["failing"] = float64(failing)
	res.Metrics["failing_from_log"] = float64(fromLog)
	res.Metrics["failing_from_metrics"] = float64(fromMetrics)
	switch {
	case failing == 0:
		res.Summary = fmt.Sprintf("all %d known servers reachable", len(dests))
		if logErr != nil {
			res.Summary += fmt.Sprintf(" (Synapse's log unread: %v)", logErr)
		}
		if metricsErr != nil {
			res.Summary += fmt.Sprintf(" (Synapse's metrics unread: %v)", metricsErr)
		}
	default:
		res.Summary = fmt.Sprintf("%d of %d servers failing (warn after %s, critical after %s)", failing, max(len(dests), failing), warnAfter, critAfter)
		if fromMetrics > 0 {
			res.Summary += fmt.Sprintf("; %d of them seen in Synapse's metrics only (PDUs undelivered, Synapse has not given up yet)", fromMetrics)
		}
		if metricsErr != nil {
			res.Summary += fmt.Sprintf(" (Synapse's metrics unread: %v)", metricsErr)
		}
		if fromLog > 0 {
			res.Summary += fmt.Sprintf("; %d of them seen in Synapse's log only (Synapse has not given up on them yet)", fromLog)
		}
		res.Hint = fmt.Sprintf("once a server is back: `%sfederation reset <server>` (or `all`) clears Synapse's backoff", rn.pfx())
	}
	return nil
}

func checkForgotten(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	if len(rn.Config.Synapse.Logs) == 0 {
		res.Status, res.Summary = Skipped, "no synapse.logs configured"
		return nil
	}
	var fc *federation.Client
	if rn.Federation != nil {
		fc, _ = rn.Federation()
	}
	rooms, _, err := diagnose.ScanForgotten(ctx, diagnose.Sources(rn.Config.Synapse.Logs), rep.Since, rn.DB, fc)
	if err != nil {
		return err
	}
	res.Columns = []string{"room", "state", "origins", "last seen"}
	n := 0
	for _, f := range rooms {
		problem := f.State() != "rejoined"
		if problem {
			n++
		}
		res.add(f.RoomID, problem, f.RoomID, f.State(), strings.Join(synapselog.ServerList(f.Servers), ", "), f.Last.UTC().Format(time.DateTime))
	}
	res.Metrics["forgotten"] = float64(n)
	if n == 0 {
		res.Summary = fmt.Sprintf("no dropped traffic for forgotten rooms in the logs since %s", rep.Since.UTC().Format(time.DateTime))
		if len(rooms) > 0 {
			res.Summary = fmt.Sprintf("%d room(s) seen forgotten since %s, all rejoined", len(rooms), rep.Since.UTC().Format(time.DateTime))
		}
		return nil
	}
	res.Status = Critical
	res.Summary = fmt.Sprintf("Synapse drops traffic for %d room(s) it forgot (e.g. after a database restore)", n)
	res.Hint = fmt.Sprintf("`%srecover room <room>` or `%srecover all` rejoins the local members", rn.pfx(), rn.pfx())
	return nil
}

func checkRejections(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	if rn.DB == nil {
		return errNoDB
	}
	th := rn.th()
	// Counts per room (per-row index lookups, cheap on big databases), then the chain
	// diagnosis of !rejected / !unreject (diagnose.RoomChains) for the busiest rooms.
	rooms, err := rn.DB.RejectionsSince(ctx, rep.Since)
	if err != nil {
		return err
	}
	// Walk the busiest rooms' chains in parallel (each walk reads one room's events); probe
	// the others for a chain with one query, so no chain goes unflagged.
	walks := make([]*diagnose.RoomRejections, min(len(rooms), th.RejectionChainWalks))
	errs := make([]error, len(walks)+1)
	walked := make([]string, len(walks))
	var wg sync.WaitGroup
	for i := range walks {
		walked[i] = rooms[i].RoomID
		wg.Add(1)
		go func() {
			defer wg.Done()
			walks[i], errs[i] = diagnose.RoomChains(ctx, rn.DB, rooms[i].RoomID)
		}()
	}
	var probed []string
	if len(rooms) > len(walks) {
		probed, errs[len(walks)] = rn.DB.ChainRoomsSince(ctx, rep.Since, walked)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	res.Columns = []string{"room", "new rejected", "first", "last", "chain"}
	total, chainRooms := 0, 0
	for i, c := range rooms {
		room := c.RoomID
		total += c.Count
		st := OK
		switch {
		case c.Count >= th.RejectionsCritical:
			st = Critical
		case c.Count >= th.RejectionsWarn:
			st = Warn
		}
		chain := ""
		if i >= len(walks) {
			if slices.Contains(probed, room) {
				chain = fmt.Sprintf("a rejected event cites a rejected event (`%srejected %s` walks the chain)", rn.pfx(), room)
				st = Critical
				chainRooms++
			}
		} else if rr := walks[i]; len(rr.Chains) > 0 && rr.Chains[0].Descendants > 0 {
			top := rr.Chains[0]
			chain = fmt.Sprintf("%s %s rejected, %d later event(s) rejected because they cite it", top.Root.Type, top.Root.EventID, top.Descendants)
			st = Critical
			chainRooms++
		}
		res.add(room, st > OK, room, fmt.Sprint(c.Count), c.First.UTC().Format(time.DateTime), c.Last.UTC().Format(time.DateTime), chain)
		res.PerItem[room] = float64(c.Count)
		if st > OK {
			res.level(room, st)
		}
	}
	res.Metrics["rejected"] = float64(total)
	if total == 0 {
		res.Summary = fmt.Sprintf("no rejected events since %s", rep.Since.UTC().Format(time.DateTime))
		return nil
	}
	res.Summary = fmt.Sprintf("%d rejected event(s) in %d room(s) since %s", total, len(rooms), rep.Since.UTC().Format(time.DateTime))
	if chainRooms > 0 {
		res.Summary += fmt.Sprintf("; %d room(s) with a rejection chain (the room goes silent for local users)", chainRooms)
	}
	res.Hint = fmt.Sprintf("`%srejected <room>` shows the chains; `%sunreject <room>` re-checks them against the auth rules and restores those that pass", rn.pfx(), rn.pfx())
	return nil
}

func checkPartialJoins(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	if rn.DB == nil {
		return errNoDB
	}
	list, err := rn.DB.PartialJoins(ctx)
	if err != nil {
		return err
	}
	after := config.Duration(rn.th().PartialJoinAfter)
	res.Columns = []string{"room", "joined via", "partial for"}
	stuck := 0
	for _, p := range list {
		age := "unknown (no join event recorded)"
		problem := p.Since.IsZero()
		if !p.Since.IsZero() {
			d := rep.At.Sub(p.Since)
			age = ago(d)
			problem = d >= after
		}
		if problem {
			stuck++
		}
		res.add(p.RoomID, problem, p.RoomID, p.JoinedVia, age)
	}
	res.Metrics["partial"] = float64(len(list))
	switch {
	case len(list) == 0:
		res.Summary = "no room in a partial join"
	case stuck == 0:
		res.Summary = fmt.Sprintf("%d room(s) joining (partial state), none for longer than %s", len(list), after)
	default:
		res.Status = Warn
		res.Summary = fmt.Sprintf("%d room(s) stuck in a partial join for longer than %s", stuck, after)
		res.Hint = "Synapse resyncs the full state in the background; check that the servers it joined via answer (failing destinations), or have the room's users leave and rejoin"
	}
	return nil
}

func checkExtremities(ctx context.Context, rn *Runner, _ *Report, res *Result) error {
	if rn.DB == nil {
		return errNoDB
	}
	th := rn.th()
	// From 1 up, most first: the first row is the maximum (for /metrics); the rooms over the
	// thresholds come before the others. The query groups the whole (small) table either way.
	rooms, err := rn.DB.RoomsWithExtremities(ctx, 1, 50)
	if err != nil {
		return err
	}
	res.Columns = []string{"room", "forward extremities"}
	res.Metrics["max"] = 0
	if len(rooms) > 0 {
		res.Metrics["max"] = float64(rooms[0].Count)
	}
	n := 0
	for _, r := range rooms {
		st := OK
		switch {
		case r.Count >= th.ExtremitiesCritical:
			st = Critical
		case r.Count >= th.ExtremitiesWarn:
			st = Warn
		}
		if st == OK {
			continue
		}
		n++
		res.worst(st)
		res.add(r.RoomID, true, r.RoomID, fmt.Sprint(r.Count))
		res.level(r.RoomID, st)
		res.PerItem[r.RoomID] = float64(r.Count)
	}
	res.Metrics["rooms"] = float64(n)
	if n == 0 {
		res.Summary = fmt.Sprintf("no room has %d or more forward extremities", th.ExtremitiesWarn)
		return nil
	}
	res.Summary = fmt.Sprintf("%d room(s) with %d or more forward extremities (slow state resolution)", n, th.ExtremitiesWarn)
	res.Hint = fmt.Sprintf("`%sextremities trim <room>` drops all but the newest (asks first)", rn.pfx())
	return nil
}

func checkSize(ctx context.Context, rn *Runner, _ *Report, res *Result) error {
	if rn.DB == nil {
		return errNoDB
	}
	size, err := rn.DB.DatabaseSize(ctx)
	if err != nil {
		return err
	}
	tables, err := rn.DB.LargestTables(ctx, 5)
	if err != nil {
		return err
	}
	rooms, estimated, err := rn.DB.RoomStateRows(ctx, 5)
	if err != nil {
		return err
	}
	th := rn.th()
	res.Columns = []string{"what", "name", "size / rows"}
	res.Metrics["database_bytes"] = float64(size)
	res.add("database", false, "database", "", bytesHuman(size))
	for _, t := range tables {
		res.add("table "+t.Name, false, "table", t.Name, fmt.Sprintf("%s, ~%d rows", bytesHuman(t.Bytes), t.Rows))
	}
	how := "exact"
	if estimated {
		how = "estimated from a sample"
	}
	big := 0
	for _, r := range rooms {
		problem := int64(r.Count) >= th.RoomStateWarn
		if problem {
			big++
		}
		res.add(r.RoomID, problem, "room state", r.RoomID, fmt.Sprintf("%d state_groups_state rows (%s)", r.Count, how))
	}
	res.Summary = fmt.Sprintf("database %s", bytesHuman(size))
	if len(tables) > 0 {
		res.Summary += fmt.Sprintf(", largest table %s (%s)", tables[0].Name, bytesHuman(tables[0].Bytes))
	}
	if len(rooms) > 0 {
		res.Summary += fmt.Sprintf(", biggest room state %s (~%d rows)", rooms[0].RoomID, rooms[0].Count)
	}
	if float64(size) >= th.DatabaseWarnGB*(1<<30) || big > 0 {
		res.Status = Warn
		res.Hint = "state_groups_state dominates most Synapse databases: a state compressor (synapse_auto_compressor) and purging history of big rooms free it; deleting a room does not"
	}
	return nil
}

func checkRestore(ctx context.Context, rn *Runner, _ *Report, res *Result) error {
	if rn.DB == nil {
		return errNoDB
	}
	return CheckRestoreHazards(ctx, rn.DB, rn.pfx(), res)
}

func checkBackgroundUpdates(ctx context.Context, rn *Runner, _ *Report, res *Result) error {
	if rn.DB == nil {
		return errNoDB
	}
	list, err := rn.DB.BackgroundUpdates(ctx)
	if err != nil {
		return err
	}
	res.Columns = []string{"update", "depends on"}
	for _, b := range list {
		res.add(b.Name, true, b.Name, b.DependsOn)
	}
	res.Metrics["pending"] = float64(len(list))
	if len(list) == 0 {
		res.Summary = "no background update pending"
		return nil
	}
	res.Status = Warn
	res.Summary = fmt.Sprintf("%d background update(s) pending (Synapse runs them while up; some features wait for them)", len(list))
	res.Hint = "leave Synapse running; progress: GET /_synapse/admin/v1/background_updates/status"
	return nil
}

func checkDisk(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	disks := slices.Clone(rn.Config.Health.Disks)
	// PostgreSQL's data directory, when the role may read the setting and it is on this host.
	if rn.DB != nil && !rep.DBDown() {
		if dir, err := rn.DB.DataDirectory(ctx); err == nil {
			if _, err = os.Stat(dir); err == nil {
				disks = append(disks, config.HealthDisk{Name: "database", Path: dir})
			}
		}
	}
	if len(disks) == 0 {
		res.Status, res.Summary = Skipped, "no health.disks configured (and PostgreSQL's data directory is not readable here)"
		return nil
	}
	th := rn.th()
	res.Columns = []string{"name", "path", "free", "free %"}
	var worst float64 = 100
	for _, d := range disks {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(d.Path, &fs); err != nil {
			res.worst(Warn)
			res.add(d.Name, true, d.Name, d.Path, "cannot read: "+err.Error(), "")
			continue
		}
		free := int64(fs.Bavail) * int64(fs.Bsize)
		pct := 100 * float64(fs.Bavail) / float64(max(fs.Blocks, 1))
		worst = min(worst, pct)
		st := OK
		switch {
		case pct < th.DiskCriticalPercent:
			st = Critical
		case pct < th.DiskWarnPercent:
			st = Warn
		}
		res.worst(st)
		res.add(d.Name, st > OK, d.Name, d.Path, bytesHuman(free), fmt.Sprintf("%.1f%%", pct))
		if st > OK {
			res.level(d.Name, st)
		}
		res.Metrics["free_pct_"+d.Name] = pct
		res.PerItem[d.Name] = pct
	}
	res.Summary = fmt.Sprintf("lowest free space %.1f%% (warn below %g%%, critical below %g%%)", worst, th.DiskWarnPercent, th.DiskCriticalPercent)
	if res.Status > OK {
		res.Hint = "free space: purge old media (admin API purge_media_cache / delete media), VACUUM FULL after purging history, or grow the volume"
	}
	return nil
}

func checkMedic(ctx context.Context, rn *Runner, rep *Report, res *Result) error {
	res.Columns = []string{"what", "state"}
	if rep.Previous != nil {
		res.add("last report", false, "last report", rep.Previous.At.UTC().Format(time.DateTime)+" UTC ("+ago(rep.At.Sub(rep.Previous.At))+" ago)")
	} else {
		res.add("last report", false, "last report", "none yet")
	}
	joinOK := true
	if rn.JoinMethod != nil {
		var method string
		method, joinOK = rn.JoinMethod(ctx)
		res.add("join method", !joinOK, "!recover joins users with", method)
	}
	if rn.Self == nil {
		res.Summary = "run from the terminal: medic's sync and encryption are checked by the running bot"
		if !joinOK {
			res.Summary = "medic can join no local user for `" + rn.pfx() + "recover`: see `" + rn.pfx() + "health medic`"
			res.Hint = "set up medic's appservice: `medic appservice-registration` (README)"
		}
		return nil
	}
	s := rn.Self(ctx)
	stale := config.Duration(rn.th().SyncStaleAfter)
	switch {
	case s.LastSync.IsZero():
		res.worst(Warn)
		res.add("sync", true, "sync", "no successful sync yet")
	case rep.At.Sub(s.LastSync) > stale:
		res.worst(Critical)
		res.add("sync", true, "sync", fmt.Sprintf("last success %s ago (limit %s)", ago(rep.At.Sub(s.LastSync)), stale))
	default:
		res.add("sync", false, "sync", fmt.Sprintf("last success %s ago", ago(rep.At.Sub(s.LastSync))))
	}
	if s.SyncErr != nil {
		res.add("sync error", false, "last sync error", s.SyncErr.Error())
	}
	switch {
	case !rn.Config.Encryption.On():
		res.add("e2ee", false, "end-to-end encryption", "off in the config")
	case s.E2EEErr != nil:
		res.worst(Critical)
		res.add("e2ee", true, "end-to-end encryption", "broken: "+s.E2EEErr.Error())
	case !s.E2EE:
		res.worst(Warn)
		res.add("e2ee", true, "end-to-end encryption", "device not cross-signed")
	default:
		res.add("e2ee", false, "end-to-end encryption", "working, device cross-signed")
	}
	switch {
	case !joinOK && res.Status == Warn && len(res.Items) == 1:
		res.Summary = "medic can join no local user for `" + rn.pfx() + "recover`: see `" + rn.pfx() + "health medic`"
		res.Hint = "set up medic's appservice: `medic appservice-registration` (README)"
	case res.Status == OK:
		res.Summary = "syncing, encryption working"
	default:
		res.Summary = "medic itself is not healthy: see `" + rn.pfx() + "health medic`"
		res.Hint = "check medic's log; restart it if sync does not recover"
	}
	return nil
}
