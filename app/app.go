// Package app assembles medic once: its store, Synapse's database, admin API and federation
// client, the job manager with every operation, and the health runner. The transports (the
// bot, the terminal) receive an *App; commands reach everything through it.
package app

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/metrics"
	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/synapse/adminapi"
)

// App is one medic, whatever transport it is driven by.
type App struct {
	Config *config.Config
	Store  *store.Store
	Admin  *adminapi.Client
	// DB is Synapse's database; nil when synapse.database is not configured.
	DB     *synapse.DB
	Health *health.Runner
	Jobs   *jobs.Manager
	Ops    Ops
	// Metrics is the monitoring listener (metrics.listen); nil when not configured. The bot
	// starts it; `medic exec` does not.
	Metrics *metrics.Server
	Version string
	Log     zerolog.Logger

	fedOnce sync.Once
	fed     *federation.Client
	fedErr  error
}

// Ops are the repairs, each a typed job operation: commands propose them with
// app.Ops.X.With(args).
type Ops struct {
	FederationReset *jobs.Operation[recovery.FederationResetArgs, struct{}]
	ExtremitiesTrim *jobs.Operation[recovery.ExtremitiesTrimArgs, struct{}]
	Recover         *jobs.Operation[recovery.RecoverArgs, recovery.RejoinData]
	Import          *jobs.Operation[recovery.ImportArgs, recovery.ImportData]
	Unreject        *jobs.Operation[recovery.UnrejectArgs, recovery.UnrejectData]
	Undo            *jobs.Operation[recovery.UndoArgs, struct{}]
	StateHeal       *jobs.Operation[recovery.StateHealArgs, recovery.RejoinData]
	Aftercare       *jobs.Operation[recovery.AftercareArgs, recovery.AftercareData]
	AftercareOnline *jobs.Operation[recovery.AftercareOnlineArgs, recovery.AftercareOnlineData]
}

// New assembles medic. cli is the Matrix client the admin API goes through (the bot's, or
// the terminal's). Synapse's database is connected lazily (pgxpool), so a database that is
// down fails the commands that need it, not the start.
func New(ctx context.Context, cfg *config.Config, st *store.Store, cli *mautrix.Client, version string, log zerolog.Logger) (*App, error) {
	a := &App{Config: cfg, Store: st, Admin: adminapi.New(cli), Version: version, Log: log}
	if w := a.TestingSwitchWarning(); w != "" {
		log.Warn().Msg(w)
	}
	if cfg.Synapse.DatabaseDSN != "" {
		db, err := synapse.OpenDB(ctx, cfg.Synapse.DatabaseDSN)
		if err != nil {
			return nil, fmt.Errorf("open Synapse's database: %w", err)
		}
		a.DB = db
		db.OnSchema(a.logSchema)
	}
	a.Health = &health.Runner{Config: cfg, Admin: a.Admin, DB: a.DB, Store: st, Federation: a.Federation, TestedSchema: recovery.TestedSchema}
	a.Health.JoinMethod = a.Rejoiner().JoinMethodStatus
	a.Jobs = jobs.NewManager(st, cfg.Jobs, log.With().Str("component", "jobs").Logger())
	a.Jobs.Prefix = cfg.Bot.CommandPrefix
	if a.DB != nil {
		a.Jobs.Schema = func(ctx context.Context) (jobs.SchemaState, error) {
			s, err := a.DB.Schema(ctx)
			if err != nil {
				return jobs.SchemaState{}, err
			}
			return recovery.SchemaState(s), nil
		}
	}
	a.Ops = Ops{
		FederationReset: recovery.FederationReset(a.Admin),
		ExtremitiesTrim: recovery.ExtremitiesTrim(a.Admin),
		Recover:         a.Rejoiner().Operation(),
		Import:          (&recovery.HistoryImport{DB: a.DB, Admin: a.Admin, Config: cfg.Import, Restart: cfg.Synapse.RestartCommand}).Operation(),
		Unreject:        a.Unrejecter().Operation(),
		Undo:            recovery.Undo(a.DB, a.Jobs, &recovery.Restarter{Admin: a.Admin, Command: cfg.Synapse.RestartCommand}),
	}
	a.Ops.StateHeal = (&recovery.StateHeal{Auditor: a.StateAuditor(0), Rejoin: a.Ops.Recover}).Operation()
	a.Ops.Aftercare = a.Aftercare().Operation()
	a.Ops.AftercareOnline = (&recovery.AftercareOnline{Recover: a.Ops.Recover, Federation: a.Ops.FederationReset, Store: st,
		Health: a.healthText}).Operation()
	a.Jobs.Register(a.Ops.FederationReset, a.Ops.ExtremitiesTrim, a.Ops.Recover, a.Ops.Import, a.Ops.Unreject, a.Ops.Undo,
		a.Ops.StateHeal, a.Ops.Aftercare, a.Ops.AftercareOnline)
	if cfg.Metrics.Listen != "" {
		synapseUp := func(ctx context.Context) error { _, err := a.Admin.ServerVersion(ctx); return err }
		a.Metrics = metrics.New(cfg, a.Health, st, synapseUp, a.Jobs.Kinds(), version, log.With().Str("component", "metrics").Logger())
		a.Jobs.Observer = a.Metrics
	}
	return a, nil
}

// TestingSwitchWarning says what the testing-only federation switch lets medic do, when it
// is on ("" when off): logged at every start and shown by !version.
func (a *App) TestingSwitchWarning() string {
	if !a.Config.Federation.DangerouslyAllowLoopbackAndSelfSignedTestingOnly {
		return ""
	}
	return "federation.dangerously_allow_loopback_and_self_signed_testing_only is on: medic connects to " +
		"loopback addresses of other servers and accepts self-signed certificates. For a local testbed only; " +
		"turn it off in production"
}

// Start does what every medic process does before it takes commands: read (and log)
// Synapse's schema version, and log out the login-as-user tokens an interrupted recovery
// left behind.
func (a *App) Start(ctx context.Context) error {
	if a.DB != nil {
		// A database that is down now is read when it first answers (DB.Schema logs then):
		// every repair that writes Synapse's tables reads the version before it is planned.
		if _, err := a.DB.Schema(ctx); err != nil {
			if ue, ok := synapse.Unreachable(err); ok {
				// Nothing else here can run without it either (leftover tokens are looked up
				// in Synapse's database): the caller says so, once.
				return ue
			}
			a.Log.Warn().Err(err).Msg("Could not read Synapse's schema version at start; it is read again when a command needs it")
		}
	}
	return recovery.RevokeMinted(ctx, a.Store, a.DB, a.Config.Bot.UserID, a.Config.Homeserver.URL)
}

// logSchema logs Synapse's schema when medic first reads it and whenever it changed (an
// upgrade while medic runs); a warning when the repairs were not tested on it.
func (a *App) logSchema(s *synapse.Schema) {
	ev := a.Log.Info()
	msg := "Synapse's database schema"
	if !recovery.TestedSchema.Covers(recovery.SchemaState(s)) {
		ev = a.Log.Warn()
		msg = "Synapse's database schema is outside the range medic's repairs were tested on: they refuse without " + jobs.ForceSchemaFlag
	}
	ev.Int("schema_version", s.Version).Int("schema_compat_version", s.Compat).Bool("upgraded", s.Upgraded).
		Int("deltas_at_version", len(s.DeltasAt(s.Version))).Strs("untested_deltas", recovery.TestedSchema.NewDeltas(recovery.SchemaState(s))).
		Stringer("tested", recovery.TestedSchema).Msg(msg)
}

// Rejoiner is !recover's planner and runner, configured.
func (a *App) Rejoiner() *recovery.Rejoiner {
	cfg := a.Config
	return &recovery.Rejoiner{
		Admin: a.Admin, DB: a.DB, Store: a.Store, Federation: a.Federation,
		ServerName: cfg.Homeserver.ServerName, HomeserverURL: cfg.Homeserver.URL, BotUser: cfg.Bot.UserID,
		Logs:   diagnose.Sources(cfg.Synapse.Logs),
		JoinAs: cfg.Recover.JoinAs, Registration: cfg.Recover.AppserviceRegistration,
		PartialStateWait: config.Duration(cfg.Recover.PartialStateWait),
	}
}

// StateAuditor compares rooms' state with other servers' (!state audit, !state heal, the
// state health check), reading the reset pattern as far back as lookback (0: 7 days).
func (a *App) StateAuditor(lookback time.Duration) *diagnose.StateAuditor {
	return &diagnose.StateAuditor{DB: a.DB, Federation: a.Federation, ServerName: a.Config.Homeserver.ServerName,
		Servers: a.Config.State.Servers, Lookback: lookback}
}

// Aftercare is the offline aftercare's planner and runner, configured.
func (a *App) Aftercare() *recovery.Aftercare {
	cfg := a.Config
	return &recovery.Aftercare{DB: a.DB, Admin: a.Admin, Restart: &recovery.Restarter{Admin: a.Admin, Command: cfg.Synapse.RestartCommand},
		Logs: diagnose.Sources(cfg.Synapse.Logs), ServerName: cfg.Homeserver.ServerName, Store: a.Store}
}

// healthText runs every health check, stores the report and returns it as text (the online
// aftercare's last step).
func (a *App) healthText(ctx context.Context) (string, error) {
	rep, err := a.Health.Run(ctx)
	if err != nil {
		return "", err
	}
	if err = a.Health.Save(ctx, rep, "aftercare", true); err != nil {
		a.Log.Err(err).Msg("Failed to store the health report")
	}
	return rep.Plain(a.Config.Bot.CommandPrefix), nil
}

// Unrejecter is !unreject's verifier and runner, configured.
func (a *App) Unrejecter() *recovery.Unrejecter {
	cfg := a.Config
	u := &recovery.Unrejecter{DB: a.DB, Admin: a.Admin, Federation: a.Federation, ServerName: cfg.Homeserver.ServerName,
		Checker: cfg.Unreject.AuthChecker, RestartCommand: cfg.Synapse.RestartCommand, VerdictTTL: cfg.Jobs.Expiry()}
	if cfg.Synapse.SigningKeyPath != "" {
		u.OwnKey = func() (*federation.SigningKey, error) { return synapse.LoadSigningKey(cfg.Synapse.SigningKeyPath) }
	}
	return u
}

// Federation returns a federation client signing as the server (nil, without error, when
// synapse.signing_key_path is not configured).
func (a *App) Federation() (*federation.Client, error) {
	a.fedOnce.Do(func() {
		cfg := a.Config
		if cfg.Synapse.SigningKeyPath == "" {
			return
		}
		a.fed, a.fedErr = synapse.NewFederationClient(cfg.Homeserver.ServerName, cfg.Synapse.SigningKeyPath,
			cfg.Federation.DangerouslyAllowLoopbackAndSelfSignedTestingOnly)
	})
	return a.fed, a.fedErr
}

// Close waits for running jobs and releases the connection to Synapse's database.
func (a *App) Close() {
	a.Jobs.Wait()
	if a.DB != nil {
		a.DB.Close()
	}
}
