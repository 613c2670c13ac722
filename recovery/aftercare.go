package recovery

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
	"github.com/synapse-medic/medic/synapse/journal"
	"github.com/synapse-medic/medic/synapselog"
)

// AftercareArgs are the offline aftercare's arguments (none beyond --force-schema).
type AftercareArgs struct {
	jobs.SchemaForce
}

// AftercareData is what the plan found and hands the steps.
type AftercareData struct {
	Sequences    []synapse.SequenceLag `json:"sequences,omitempty"`
	Owned        []synapse.Owned       `json:"owned,omitempty"`
	Keys         int                   `json:"keys,omitempty"`
	KeyDevices   int                   `json:"key_devices,omitempty"`
	RemoteUsers  []string              `json:"remote_users,omitempty"`
	Destinations []string              `json:"destinations,omitempty"`
}

// The offline aftercare's steps, each one transaction (the last starts Synapse).
const (
	StepSequences    = "advance stream sequences"
	StepOwners       = "take ownership"
	StepOneTimeKeys  = "delete one-time keys"
	StepDeviceLists  = "mark remote device lists for resync"
	StepDestinations = "clear federation backoff"
	StepStart        = "start Synapse"
)

// CollationRecipe is the only fix for a database whose collation or ctype is not C:
// PostgreSQL cannot change them in place, and Synapse's indexes were built under them.
const CollationRecipe = "PostgreSQL cannot change a database's collation in place: with Synapse stopped, " +
	"`pg_dump -Fc -f synapse.dump <db>`, then `createdb --encoding=UTF8 --locale=C --template=template0 --owner=<synapse role> <new db>`, " +
	"`pg_restore --no-owner --role=<synapse role> -d <new db> synapse.dump`, point Synapse (and medic's `synapse.database`) at the new database, " +
	"and run `medic exec aftercare` again"

// Aftercare is `medic exec aftercare`: the offline part (Synapse stopped, its database only)
// repairs what a restore of the database leaves behind, then starts Synapse; the online part
// (OnlinePlan, once Synapse runs) reuses !recover, !federation reset and the health report.
type Aftercare struct {
	DB      *synapse.DB
	Admin   *adminapi.Client
	Restart *Restarter
	Logs    []synapselog.Source
	// ServerName is Synapse's server name (its own traffic is not "remote").
	ServerName string
	// Store keeps where the restored database ended, for the online part (KeyBackupEnd).
	Store *store.Store
}

// Operation is the offline part's job operation.
func (a *Aftercare) Operation() *jobs.Operation[AftercareArgs, AftercareData] {
	return &jobs.Operation[AftercareArgs, AftercareData]{Kind: "aftercare", Plan: a.plan, Step: a.step,
		// It deletes and updates rows of Synapse's tables and moves its sequences.
		Schema: &TestedSchema}
}

// Running says why medic believes Synapse is running ("" when it does not): its client API
// answers, or other sessions of Synapse's role use its database (Synapse or a worker whose
// HTTP listener is not up, or someone's psql as that role).
func (a *Aftercare) Running(ctx context.Context) (string, error) {
	if a.Admin != nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		// Down is the expected answer here: no error log for the refused connection.
		pctx = zerolog.Nop().WithContext(pctx)
		version, err := a.Admin.ServerVersion(pctx)
		cancel()
		if err == nil {
			return fmt.Sprintf("Synapse %s answers on its client API", version), nil
		}
	}
	sessions, err := a.DB.OtherSessions(ctx)
	if err != nil {
		return "", err
	}
	if len(sessions) > 0 {
		return fmt.Sprintf("%d other session(s) of Synapse's database role use its database (%s)", len(sessions), strings.Join(sessions, ", ")), nil
	}
	return "", nil
}

// refuseRunning is the offline part's refusal: Synapse caches what it would change, and
// its start-up checks are what the sequences are fixed for.
func refuseRunning(why string) error {
	return fmt.Errorf("the offline aftercare needs Synapse stopped, and it is running: %s. Nothing was changed. "+
		"Stop Synapse and its workers, then run `medic exec aftercare` on the host; while Synapse runs, `!aftercare` does the online part", why)
}

func (a *Aftercare) plan(ctx context.Context, _ AftercareArgs) (*jobs.Plan, error) {
	if a.DB == nil {
		return nil, fmt.Errorf("the aftercare needs Synapse's database: set synapse.database in medic's config")
	}
	if why, err := a.Running(ctx); err != nil {
		return nil, err
	} else if why != "" {
		return nil, refuseRunning(why)
	}
	loc, err := a.DB.DatabaseLocale(ctx)
	if err != nil {
		return nil, err
	}
	// Owners first, from the catalog (always readable): objects Synapse's role may not take
	// over it may not read either, and neither can Synapse.
	owned, err := a.DB.ForeignOwnedObjects(ctx)
	if err != nil {
		return nil, err
	}
	var d AftercareData
	var stuck []synapse.Owned
	for _, o := range owned {
		if o.CanFix {
			d.Owned = append(d.Owned, o)
		} else {
			stuck = append(stuck, o)
		}
	}
	if len(stuck) > 0 {
		return nil, fmt.Errorf("%d object(s) of Synapse's database are owned by %s, which medic's role %s may not take over (it is no superuser nor member of it), "+
			"so neither medic nor Synapse can use them (%s). Nothing was changed. As a superuser (e.g. sudo -u postgres psql -d DATABASE), run: %s "+
			"then run medic exec aftercare again", len(stuck), ownersOf(stuck), mdtext.Code(loc.CurrentUser), objectList(stuck), synapse.TakeOverScript(loc.CurrentUser))
	}
	// Where the restored database ends (its newest event): the logs after it say what the
	// restore lost.
	var end time.Time
	ordering, endMS, err := a.DB.LastEvent(ctx)
	if err == nil && ordering != 0 {
		end = time.UnixMilli(endMS).UTC()
	}
	clients, clientsNote := a.clientPositions(ctx, end)
	if d.Sequences, err = a.DB.SequenceLags(ctx, false, clients); err != nil {
		return nil, err
	}
	if d.Keys, d.KeyDevices, err = a.DB.OneTimeKeys(ctx); err != nil {
		return nil, err
	}
	if d.RemoteUsers, err = a.DB.TrackedRemoteUsers(ctx); err != nil {
		return nil, err
	}
	if d.Destinations, err = a.DB.BackedOffDestinations(ctx); err != nil {
		return nil, err
	}
	plan := &jobs.Plan{Title: "Aftercare of Synapse's restored database (offline part)", Why: a.sinceBackup(ctx, ordering, end)}
	if len(d.Sequences) > 0 {
		var parts []string
		stops := 0
		clientsAhead := 0
		for _, l := range d.Sequences {
			why := fmt.Sprintf("%s %d", l.TableName, l.Table)
			switch {
			case l.StopsSynapse():
				stops++
				why = fmt.Sprintf("stream_positions[%s] %d", l.Stream, l.Position)
			case l.ClientsSeen > 0:
				clientsAhead++
				why = fmt.Sprintf("clients' sync tokens hold %d, and %d beyond", l.ClientsSeen, synapse.ClientMargin)
			}
			parts = append(parts, fmt.Sprintf("`%s` %d → %d (%s)", l.Name, l.Last, l.Want(), why))
		}
		line := fmt.Sprintf("%d stream sequence(s) behind what Synapse expects, set forward: %s", len(d.Sequences), strings.Join(parts, ", "))
		if stops > 0 {
			line += fmt.Sprintf(". %d of them stop Synapse at start-up (IncorrectDatabaseSetup)", stops)
		}
		if clientsAhead > 0 {
			line += fmt.Sprintf(". %d of them are behind positions clients already hold (their sync tokens from before the restore, in Synapse's access log): "+
				"Synapse would give what arrives before those clients sync again (an invite, a message, an encryption key) positions they think they have seen, "+
				"and never show it to them", clientsAhead)
		}
		plan.Changes = append(plan.Changes, line)
		plan.Steps = append(plan.Steps, StepSequences)
	}
	if len(d.Owned) > 0 {
		plan.Changes = append(plan.Changes, fmt.Sprintf("%d object(s) owned by other roles (%s) given to %s: %s",
			len(d.Owned), ownersOf(d.Owned), mdtext.Code(loc.CurrentUser), objectList(d.Owned)))
		plan.Steps = append(plan.Steps, StepOwners)
	}
	if d.Keys > 0 {
		plan.Changes = append(plan.Changes, fmt.Sprintf("%d one-time key(s) of %d device(s) deleted, as Synapse's backup documentation asks after a restore: "+
			"keys handed out since the backup would be handed out again and messages encrypted with them would not decrypt. "+
			"Clients upload new ones when they next sync (fallback keys stay: the documentation does not ask to delete them)", d.Keys, d.KeyDevices))
		plan.Steps = append(plan.Steps, StepOneTimeKeys)
	}
	if len(d.RemoteUsers) > 0 {
		plan.Changes = append(plan.Changes, fmt.Sprintf("%d remote user(s)' cached device lists marked for resync (`device_lists_remote_resync`): "+
			"changes their servers sent since the backup are missing here. Synapse refetches them within a minute of starting", len(d.RemoteUsers)))
		plan.Steps = append(plan.Steps, StepDeviceLists)
	}
	if len(d.Destinations) > 0 {
		plan.Changes = append(plan.Changes, fmt.Sprintf("federation backoff cleared for %d server(s) (%s): the restored retry timers are the backup's",
			len(d.Destinations), mdtext.Codes(d.Destinations)))
		plan.Steps = append(plan.Steps, StepDestinations)
	}
	if clientsNote != "" {
		plan.Risks = append(plan.Risks, clientsNote)
	}
	collationOK := loc.Collate == "C" && loc.Ctype == "C"
	if !collationOK {
		plan.Risks = append(plan.Risks, fmt.Sprintf("The database's collation is %s and ctype %s, not C: Synapse refuses to start on it "+
			"(unless `allow_unsafe_locale`, which risks corrupt indexes). No in-place fix exists, so medic changes nothing there. %s.",
			mdtext.Code(loc.Collate), mdtext.Code(loc.Ctype), CollationRecipe))
	}
	if len(plan.Steps) == 0 {
		msg := "Nothing for the offline aftercare to do: the stream sequences are where Synapse expects them, every object is Synapse's role's, " +
			"there are no one-time keys, no remote device list to resync and no federation backoff."
		if !collationOK {
			msg = "Nothing medic can change here, but: " + strings.Join(plan.Risks, " ")
		}
		if plan.Why != "" {
			msg = plan.Why + "\n\n" + msg
		}
		return &jobs.Plan{Nothing: msg + " Start Synapse, then `!aftercare` in the admin room does the online part."}, nil
	}
	if collationOK {
		plan.Steps = append(plan.Steps, StepStart)
		plan.Changes = append(plan.Changes, "Synapse started. "+a.Restart.Text())
	}
	plan.Risks = append(plan.Risks, "`!undo` of this job restores the rows it deleted or changed (one-time keys, device list marks, retry timings); "+
		"it does not move sequences back nor give objects back (behind again, a sequence would stop Synapse or hand out ids in use): the report lists their previous values and owners.")
	plan.Data = jobs.Encode(d)
	plan.Basis = []string{string(plan.Data)}
	return plan, nil
}

func ownersOf(objs []synapse.Owned) string {
	var owners []string
	for _, o := range objs {
		if !slices.Contains(owners, o.Owner) {
			owners = append(owners, o.Owner)
		}
	}
	return mdtext.Codes(owners)
}

func objectList(objs []synapse.Owned) string {
	var names []string
	for i, o := range objs {
		if i == 8 {
			names = append(names, fmt.Sprintf("… and %d more", len(objs)-8))
			break
		}
		names = append(names, mdtext.Code(o.Name))
	}
	return strings.Join(names, ", ")
}

func (a *Aftercare) step(ctx context.Context, s *jobs.Step[AftercareArgs, AftercareData]) error {
	if s.Name == StepStart {
		if err := a.Restart.Restart(ctx, s); err != nil {
			// Synapse that refuses to start says why in its log: say it here.
			if why := synapselog.StartupFailure(a.Logs); why != "" {
				return fmt.Errorf("%w. Synapse's log says: %s", err, why)
			}
			return err
		}
		s.Say("Synapse runs again. In the admin room, `!aftercare` now does the online part: rejoin the rooms Synapse forgot, reset federation backoff, health report.")
		return nil
	}
	// Every step re-checks: Synapse may have been started since the approval.
	if why, err := a.Running(ctx); err != nil {
		return err
	} else if why != "" {
		return refuseRunning(why)
	}
	// Synapse has not written to the database since the restore: its newest event marks
	// the backup, from which the online part reads the logs.
	if _, ms, err := a.DB.LastEvent(ctx); err == nil && ms > 0 && a.Store != nil {
		if err = a.Store.Set(ctx, KeyBackupEnd, strconv.FormatInt(ms, 10)); err != nil {
			return fmt.Errorf("record where the restored database ends: %w", err)
		}
	}
	d := s.Data
	switch s.Name {
	case StepSequences:
		if err := a.DB.AdvanceSequences(ctx, d.Sequences); err != nil {
			return err
		}
		for _, l := range d.Sequences {
			s.Note("`%s`: %d → %d.", l.Name, l.Last, l.Want())
		}
	case StepOwners:
		if err := a.DB.TakeOwnership(ctx, d.Owned); err != nil {
			return err
		}
		// One line per previous owner, naming every object: what `ALTER … OWNER TO` would
		// give back by hand (undo does not).
		byOwner := map[string][]string{}
		var owners []string
		for _, o := range d.Owned {
			if byOwner[o.Owner] == nil {
				owners = append(owners, o.Owner)
			}
			byOwner[o.Owner] = append(byOwner[o.Owner], strings.ToLower(o.Kind)+" "+o.Name)
		}
		for _, owner := range owners {
			s.Note("Owner was %s for %d object(s): %s.", mdtext.Code(owner), len(byOwner[owner]), mdtext.Text(strings.Join(byOwner[owner], ", ")))
		}
	case StepOneTimeKeys:
		n, err := journal.DeleteOneTimeKeys(ctx, a.DB, s.Job)
		if err != nil {
			return err
		}
		s.Note("Deleted %d one-time key(s) of %d device(s).", n, d.KeyDevices)
	case StepDeviceLists:
		n, err := journal.MarkDeviceListsStale(ctx, a.DB, s.Job, d.RemoteUsers)
		if err != nil {
			return err
		}
		s.Note("Marked %d remote user(s)' device lists for resync.", n)
	case StepDestinations:
		n, err := journal.ClearBackoff(ctx, a.DB, s.Job, d.Destinations)
		if err != nil {
			return err
		}
		s.Note("Cleared the backoff of %d server(s).", n)
	default:
		return fmt.Errorf("unknown step %q", s.Name)
	}
	return nil
}

// clientPositions reads the highest positions clients' sync tokens hold, from Synapse's
// access log since the restored database's end (earlier tokens are behind it anyway). Without
// logs, or when they cannot be read, it returns nil and a note for the plan: clients offline
// over the restore may then miss what arrives before they sync again.
func (a *Aftercare) clientPositions(ctx context.Context, end time.Time) (map[string]int64, string) {
	const unknown = "Clients' sync tokens are not known (%s): a client whose token is ahead of the restored streams may miss what arrives " +
		"before it syncs again (\"Bounding token from the future\" in Synapse's log shows such clients); signing out and in again, or clearing its cache, heals it"
	if len(a.Logs) == 0 {
		return nil, fmt.Sprintf(unknown, "`synapse.logs` is not configured")
	}
	if end.IsZero() {
		return nil, ""
	}
	pos, err := synapselog.SyncPositions(ctx, a.Logs, end)
	if err != nil {
		return nil, fmt.Sprintf(unknown, "Synapse's log could not be read: "+mdtext.Text(err.Error()))
	}
	return pos, ""
}

// sinceBackup is the "what happened since the backup" line: where the database ends (its
// newest event), and what Synapse's logs say other servers sent after that, which the
// restored database lacks. "" when the database holds no event.
func (a *Aftercare) sinceBackup(ctx context.Context, ordering int64, end time.Time) string {
	if end.IsZero() {
		return ""
	}
	line := fmt.Sprintf("The database ends at %s (its newest event, stream ordering %d): the backup is from then, and nothing after it is in the database.",
		end.Format("2006-01-02 15:04:05 MST"), ordering)
	if len(a.Logs) == 0 {
		return line + " Synapse's logs are not configured (`synapse.logs`), so medic cannot tell what other servers sent since."
	}
	rep, err := synapselog.ScanSources(ctx, a.Logs, end)
	if err != nil {
		return line + fmt.Sprintf(" Synapse's logs could not be read (%s).", mdtext.Text(err.Error()))
	}
	return line + " " + describeReceived(rep.Received, a.ServerName)
}

// describeReceived says what other servers sent, from the log's received transactions.
func describeReceived(received map[string]*synapselog.Received, own string) string {
	var servers []string
	txns, pdus := 0, 0
	var last time.Time
	for s, r := range received {
		if s == own {
			continue
		}
		servers = append(servers, s)
		txns += r.Txns
		pdus += r.PDUs
		if r.Last.After(last) {
			last = r.Last
		}
	}
	if len(servers) == 0 {
		return "Synapse's logs show no federation traffic received after that."
	}
	slices.Sort(servers)
	return fmt.Sprintf("Synapse's logs show %d transaction(s) with %d event(s) received after that from %d server(s) (%s), the last at %s: "+
		"those events are not in the restored database, and rooms joined since are forgotten (the online part rejoins them).",
		txns, pdus, len(servers), mdtext.Codes(servers), last.UTC().Format("2006-01-02 15:04:05 MST"))
}
