package recovery

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/synapse"
)

// KindImport imports a room's history from another Synapse's database.
const KindImport = "import.history"

// HistoryImport is the operation behind !import history (incident 3).
type HistoryImport struct {
	DB      *synapse.DB
	Admin   *synapse.Admin
	Config  config.Import
	Restart string // synapse.restart_command

	lock     sync.Mutex
	sessions map[string]*synapse.Importer
}

func (hi *HistoryImport) open(ctx context.Context, args jobs.Args) (*synapse.Importer, error) {
	if hi.DB == nil {
		return nil, fmt.Errorf("importing needs Synapse's database: set synapse.database in medic's config")
	}
	name := args["source"]
	src, ok := hi.Config.Sources[name]
	if !ok {
		names := slices.Sorted(maps.Keys(hi.Config.Sources))
		if len(names) == 0 {
			return nil, fmt.Errorf("no import sources are configured (import.sources in medic's config)")
		}
		return nil, fmt.Errorf("there is no import source %q; configured: %s", name, strings.Join(names, ", "))
	}
	source, err := synapse.OpenSource(ctx, src.Type, src.Database)
	if err != nil {
		return nil, fmt.Errorf("import source %s: %w", name, err)
	}
	im, err := synapse.NewImporter(ctx, hi.DB, source, args["room"])
	if err != nil {
		source.Close()
		return nil, err
	}
	return im, nil
}

// synapseUp tells whether Synapse answers on its admin API.
func (hi *HistoryImport) synapseUp(ctx context.Context) bool {
	if hi.Admin == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := hi.Admin.ServerVersion(ctx)
	return err == nil
}

const stepRestart = "restart Synapse"

// Operation returns the job operation.
func (hi *HistoryImport) Operation() *jobs.Operation {
	return &jobs.Operation{
		Kind: KindImport,
		Plan: func(ctx context.Context, args jobs.Args) (*jobs.Plan, error) {
			im, err := hi.open(ctx, args)
			if err != nil {
				return nil, err
			}
			defer im.Src.Close()
			p, err := im.Plan(ctx, hi.Config.ChunkSize)
			if err != nil {
				return nil, err
			}
			room, source := args["room"], args["source"]
			conflicts := ""
			if len(p.Conflicts) > 0 {
				conflicts = fmt.Sprintf(" %d event(s) differ between the two databases and are left as they are: %s.",
					len(p.Conflicts), strings.Join(p.Conflicts[:min(len(p.Conflicts), 5)], ", "))
			}
			if p.New+p.ExOutliers == 0 {
				return &jobs.Plan{Nothing: fmt.Sprintf("`%s` already has every event of `%s` that `%s` has; nothing to import.%s",
					hi.serverName(), room, source, conflicts)}, nil
			}
			changes := []string{
				fmt.Sprintf("%d event(s) of `%s` that this server lacks, from `%s` (%s of event JSON), sent %s – %s",
					p.New, room, source, sizeOf(p.Bytes), when(p.FirstTS), when(p.LastTS)),
				"types: " + eventTypeCounts(p.Types),
				"filed as backfilled history: stream orderings from `events_backfill_stream_seq` (negative: nothing comes down `/sync` as new), " +
					"topological ordering = depth, `room_depth.min_depth` lowered",
				"with event_json, event_edges, event_auth (+ the chain-cover queue), state_events, event_to_state_groups, event_search, " +
					"redactions, event_relations, room_memberships, rejections; the state at each event copied as state groups " +
					"with this database's own ids (reusing groups that hold the same state)",
				fmt.Sprintf("%d chunk(s) of up to %d events, each one transaction; every inserted row is journaled, so `!undo` deletes exactly those",
					len(p.Chunks), hi.Config.ChunkSize),
			}
			if p.Outliers > 0 {
				changes = append(changes, fmt.Sprintf("%d of them are outliers in the source too (auth events, not in the timeline)", p.Outliers))
			}
			if p.ExOutliers > 0 {
				changes = append(changes, fmt.Sprintf("%d event(s) this server has only as outliers (state it got when joining) join the timeline, "+
					"as Synapse does when it backfills them", p.ExOutliers))
			}
			if conflicts != "" {
				changes = append(changes, strings.TrimSpace(conflicts))
			}
			risks := []string{
				"Synapse must be stopped while medic writes, and start after: it caches what it knows about the room's " +
					"history (events, \"have I seen this event\", backfill points, state), no API drops those caches, and a " +
					"running Synapse could backfill the same events at the same time. " + hi.restartNote(),
			}
			steps := make([]string, 0, len(p.Chunks)+1)
			for i := range p.Chunks {
				steps = append(steps, fmt.Sprintf("import chunk %d/%d", i+1, len(p.Chunks)))
			}
			if hi.Restart != "" {
				steps = append(steps, stepRestart)
			}
			chunks, _ := json.Marshal(p.Chunks)
			basis := []string{fmt.Sprintf("new=%d ex-outliers=%d bytes=%d", p.New, p.ExOutliers, p.Bytes)}
			basis = append(basis, p.Conflicts...)
			return &jobs.Plan{
				Title: fmt.Sprintf("Import history of %s from %s", room, source),
				Why: fmt.Sprintf("`%s` has history of this room that this server never received; Synapse would only fetch it "+
					"by backfilling over federation, which is impossible once that server is gone.", source),
				Changes: changes,
				Risks:   risks,
				Steps:   steps,
				Basis:   basis,
				Data:    map[string]string{"chunks": string(chunks)},
			}, nil
		},
		Step: func(ctx context.Context, args jobs.Args, plan *jobs.Plan, idx int) error {
			if plan.Steps[idx] == stepRestart {
				return hi.restart(ctx)
			}
			if hi.Restart != "" && hi.synapseUp(ctx) {
				return fmt.Errorf("synapse is running: medic stops it first, and it is still up")
			}
			if hi.Restart == "" && hi.synapseUp(ctx) {
				return fmt.Errorf("synapse is running; stop it, then `!resume %s` (nothing of this chunk was written)", jobs.JobIDFrom(ctx))
			}
			var chunks []synapse.EventKey
			if err := json.Unmarshal([]byte(plan.Data["chunks"]), &chunks); err != nil || idx >= len(chunks) {
				return fmt.Errorf("plan has no chunk %d", idx)
			}
			jobID := jobs.JobIDFrom(ctx)
			im, err := hi.session(ctx, jobID, args)
			if err != nil {
				return err
			}
			lo, hiKey := synapse.ChunkRange(chunks, idx)
			res, err := im.Chunk(ctx, jobID, "job "+jobID, lo, hiKey, nil)
			if err != nil {
				return err
			}
			zerolog.Ctx(ctx).Info().Int("chunk", idx).Int("events", res.Events).Int("ex_outliers", res.ExOutliers).
				Int("state_groups", res.StateGroups).Int("deduplicated_groups", res.DedupedGroups).Msg("Imported chunk")
			if idx == len(chunks)-1 {
				hi.closeSession(jobID)
			}
			return nil
		},
	}
}

func (hi *HistoryImport) serverName() string { return "this server" }

func (hi *HistoryImport) restartNote() string {
	if hi.Restart != "" {
		return "Medic checks before each chunk that Synapse is down (stop it before approving) and runs the configured " +
			"restart command at the end."
	}
	return "Stop Synapse before approving (each chunk refuses to run while Synapse answers), and start it when the job is done."
}

func (hi *HistoryImport) restart(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", hi.Restart).CombinedOutput()
	if err != nil {
		return fmt.Errorf("restart command failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (hi *HistoryImport) session(ctx context.Context, jobID string, args jobs.Args) (*synapse.Importer, error) {
	hi.lock.Lock()
	defer hi.lock.Unlock()
	if im := hi.sessions[jobID]; im != nil {
		return im, nil
	}
	im, err := hi.open(ctx, args)
	if err != nil {
		return nil, err
	}
	if hi.sessions == nil {
		hi.sessions = map[string]*synapse.Importer{}
	}
	hi.sessions[jobID] = im
	return im, nil
}

func (hi *HistoryImport) closeSession(jobID string) {
	hi.lock.Lock()
	defer hi.lock.Unlock()
	if im := hi.sessions[jobID]; im != nil {
		im.Src.Close()
		delete(hi.sessions, jobID)
	}
}

func sizeOf(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func when(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC") }

func eventTypeCounts(types map[string]int) string {
	names := slices.Collect(maps.Keys(types))
	slices.SortFunc(names, func(a, b string) int {
		if types[a] != types[b] {
			return types[b] - types[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(names))
	for i, n := range names {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("… %d more types", len(names)-8))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", n, types[n]))
	}
	return strings.Join(parts, ", ")
}
