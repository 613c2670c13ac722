package recovery

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapse/importer"
	"github.com/synapse-medic/medic/synapse/journal"
)

// ImportArgs name the room whose history to import and the configured source to read.
type ImportArgs struct {
	jobs.SchemaForce
	Room   string `json:"room"`
	Source string `json:"source"`
}

// ImportData is what the import's plan hands its steps: the chunks, newest first.
type ImportData struct {
	Chunks []importer.EventKey `json:"chunks"`
}

// HistoryImport is the operation behind !import history (incident 3).
type HistoryImport struct {
	DB      *synapse.DB
	Admin   *adminapi.Client
	Config  config.Import
	Restart string // synapse.restart_command

	lock     sync.Mutex
	sessions map[string]*importer.Importer
}

func (hi *HistoryImport) open(ctx context.Context, args ImportArgs) (*importer.Importer, error) {
	if hi.DB == nil {
		return nil, fmt.Errorf("importing needs Synapse's database: set synapse.database in medic's config")
	}
	name := args.Source
	src, ok := hi.Config.Sources[name]
	if !ok {
		names := slices.Sorted(maps.Keys(hi.Config.Sources))
		if len(names) == 0 {
			return nil, fmt.Errorf("no import sources are configured (import.sources in medic's config)")
		}
		return nil, fmt.Errorf("there is no import source %q; configured: %s", name, strings.Join(names, ", "))
	}
	source, err := importer.OpenSource(ctx, src.Type, src.Database)
	if err != nil {
		return nil, fmt.Errorf("import source %s: %w", name, err)
	}
	im, err := importer.New(ctx, hi.DB, source, args.Room)
	if err != nil {
		source.Close()
		return nil, err
	}
	return im, nil
}

const stepRestart = "restart Synapse"

// Operation returns the job operation. Its chunks are sequential: a chunk maps its state
// groups onto the ones before it, so none runs after a failed one (no gap in the history).
func (hi *HistoryImport) Operation() *jobs.Operation[ImportArgs, ImportData] {
	return &jobs.Operation[ImportArgs, ImportData]{
		Kind:            "import.history",
		RestartsSynapse: true,
		// It writes some twenty of Synapse's tables the way Synapse persists backfilled events.
		Schema: &TestedSchema,
		Plan: func(ctx context.Context, args ImportArgs) (*jobs.Plan, error) {
			im, err := hi.open(ctx, args)
			if err != nil {
				return nil, err
			}
			defer im.Src.Close()
			p, err := im.Plan(ctx, hi.Config.ChunkSize)
			if err != nil {
				return nil, err
			}
			room, source := args.Room, args.Source
			conflicts := ""
			if len(p.Conflicts) > 0 {
				conflicts = fmt.Sprintf(" %d event(s) differ between the two databases and are left as they are: %s.",
					len(p.Conflicts), mdtext.Codes(p.Conflicts[:min(len(p.Conflicts), 5)]))
			}
			if p.New+p.ExOutliers == 0 {
				return &jobs.Plan{Nothing: fmt.Sprintf("%s already has every event of %s that %s has; nothing to import.%s",
					mdtext.Code(hi.serverName()), mdtext.Code(room), mdtext.Code(source), conflicts)}, nil
			}
			changes := []string{
				fmt.Sprintf("%d event(s) of %s that this server lacks, from %s (%s of event JSON), sent %s – %s",
					p.New, mdtext.Code(room), mdtext.Code(source), sizeOf(p.Bytes), when(p.FirstTS), when(p.LastTS)),
				"types: " + eventTypeCounts(p.Types),
				"filed as backfilled history: stream orderings from `events_backfill_stream_seq` (negative: nothing comes down `/sync` as new), " +
					"topological ordering = depth, `room_depth.min_depth` lowered",
				"with event_json, event_edges, event_auth (+ the chain-cover queue), state_events, event_to_state_groups, event_search, " +
					"redactions, event_relations, room_memberships, rejections; the state at each event copied as state groups " +
					"with this database's own ids (reusing groups that hold the same state)",
				fmt.Sprintf("%d chunk(s) of up to %d events, each one transaction (two run at once and commit in order); "+
					"every inserted row is journaled, so `!undo` deletes exactly those",
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
				"Synapse keeps running while medic writes, and **restarts right after** (the last step). Found on the testbed " +
					"(Synapse 1.160): straight after an import `/messages` skipped the events this server held as outliers " +
					"(here " + fmt.Sprint(p.ExOutliers) + ") because Synapse's event cache still flags them as outliers, and no API drops " +
					"that cache; after a restart every event showed. Nothing else needed a restart: new events, state groups, " +
					"`room_depth` and the negative stream orderings are read from the database. " + hi.restartText(),
				"Should Synapse backfill one of these events itself at the same moment, that chunk's transaction fails and " +
					"writes nothing; run the import again and it picks up what is still missing.",
			}
			steps := make([]string, 0, len(p.Chunks)+1)
			for i := range p.Chunks {
				steps = append(steps, fmt.Sprintf("import chunk %d/%d", i+1, len(p.Chunks)))
			}
			steps = append(steps, stepRestart)
			basis := []string{fmt.Sprintf("new=%d ex-outliers=%d bytes=%d", p.New, p.ExOutliers, p.Bytes)}
			basis = append(basis, p.Conflicts...)
			return &jobs.Plan{
				Title: fmt.Sprintf("Import history of %s from %s", mdtext.Code(room), mdtext.Code(source)),
				Why: fmt.Sprintf("%s has history of this room that this server never received; Synapse would only fetch it "+
					"by backfilling over federation, which is impossible once that server is gone.", mdtext.Code(source)),
				Changes: changes,
				Risks:   risks,
				Steps:   steps,
				Basis:   basis,
				Data:    jobs.Encode(ImportData{Chunks: p.Chunks}),
			}, nil
		},
		// A stopped job rolls back the chunk started beside the last finished step, so that
		// "the remaining steps were not run" holds; every end releases the source.
		Finish: func(ctx context.Context, jobID, state string) {
			hi.endSession(jobID, state == store.JobCancelled)
		},
		Step: func(ctx context.Context, s *jobs.Step[ImportArgs, ImportData]) error {
			if s.Name == stepRestart {
				hi.closeSession(s.Job)
				return (&Restarter{Admin: hi.Admin, Command: hi.Restart}).Restart(ctx, s)
			}
			idx, chunks := s.Idx, s.Data.Chunks
			if idx >= len(chunks) {
				return fmt.Errorf("plan has no chunk %d", idx)
			}
			jobID := s.Job
			im, err := hi.session(ctx, jobID, s.Args, chunks)
			if err != nil {
				return err
			}
			res, err := im.Import(ctx, idx)
			if err != nil {
				// The importer is spent after a failure: the next step (or !resume) opens a
				// fresh one, which reads what has been committed.
				hi.closeSession(jobID)
				return err
			}
			zerolog.Ctx(ctx).Info().Int("chunk", idx).Int("events", res.Events).Int("ex_outliers", res.ExOutliers).
				Int("state_groups", res.StateGroups).Int("deduplicated_groups", res.DedupedGroups).Msg("Imported chunk")
			return nil
		},
	}
}

func (hi *HistoryImport) serverName() string { return "this server" }

func (hi *HistoryImport) restartText() string {
	return (&Restarter{Command: hi.Restart}).Text()
}

func (hi *HistoryImport) session(ctx context.Context, jobID string, args ImportArgs, chunks []importer.EventKey) (*importer.Importer, error) {
	hi.lock.Lock()
	defer hi.lock.Unlock()
	if im := hi.sessions[jobID]; im != nil {
		return im, nil
	}
	im, err := hi.open(ctx, args)
	if err != nil {
		return nil, err
	}
	// Kill tests hold at a point inside one chunk, e.g. "chunk 3: before commit".
	im.Run(jobID, "job "+jobID, chunks, journal.HoldPoint())
	if hi.sessions == nil {
		hi.sessions = map[string]*importer.Importer{}
	}
	hi.sessions[jobID] = im
	return im, nil
}

func (hi *HistoryImport) closeSession(jobID string) { hi.endSession(jobID, false) }

// endSession closes a job's importer, rolling back its chunks under way if abort is set.
func (hi *HistoryImport) endSession(jobID string, abort bool) {
	hi.lock.Lock()
	im := hi.sessions[jobID]
	delete(hi.sessions, jobID)
	hi.lock.Unlock()
	switch {
	case im == nil:
	case abort:
		im.Abort()
	default:
		im.Close()
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

// eventTypeCounts is "`m.room.message` 300, `m.room.member` 12, …" (event types are remote
// text: shown as code).
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
		parts = append(parts, fmt.Sprintf("%s %d", mdtext.Code(n), types[n]))
	}
	return strings.Join(parts, ", ")
}
