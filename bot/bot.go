// Package bot is medic's Matrix side: login, end-to-end encryption, the admin-room gate, and
// dispatch of admins' commands to package commands.
package bot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exsync"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/app"
	"github.com/synapse-medic/medic/commands"
	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
)

// Bot is one running medic.
type Bot struct {
	cfg    *config.Config
	log    zerolog.Logger
	store  *store.Store
	Client *mautrix.Client
	crypto *cryptohelper.CryptoHelper
	proc   *commands.Processor
	app    *app.App
	// progress maps a running job's ID to its progress message (roomNotifier).
	progress progressMessages

	// startTime is when this process started: events older than it are from before we were
	// listening (the first sync replays history) and are never acted on.
	startTime  time.Time
	admins     map[id.UserID]struct{}
	adminRooms *exsync.Set[id.RoomID]
	// hinted holds the prompts on which a refused reaction was answered with how to approve
	// by message instead (once per prompt).
	hinted *exsync.Set[id.EventID]
	// rooms knows who is in the rooms medic is in: whether a room is clean.
	rooms *roomView
	// running tracks command goroutines so Stop can wait for them.
	running sync.WaitGroup
	// syncState is the last sync's outcome, for the health report.
	syncState syncHealth
	// outage paces and logs the attempts to reach Synapse while it does not answer, at start
	// and while syncing, and tells when it is back.
	outage outage
}

// NewClient makes the bot's Matrix client (not logged in yet unless an access token is
// configured): app.New takes it for the admin API, New for the bot.
func NewClient(cfg *config.Config, log zerolog.Logger) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(cfg.Homeserver.URL, cfg.Bot.UserID, cfg.Bot.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	cli.DeviceID = cfg.Bot.DeviceID
	cli.Log = log.With().Str("component", "matrix").Logger()
	return cli, nil
}

// New prepares a bot for the application a, on the client a was assembled with; Start logs
// in.
func New(a *app.App, cli *mautrix.Client) *Bot {
	cfg := a.Config
	b := &Bot{
		cfg:        cfg,
		log:        a.Log,
		store:      a.Store,
		app:        a,
		Client:     cli,
		startTime:  time.Now(),
		admins:     make(map[id.UserID]struct{}, len(cfg.Admins)),
		adminRooms: exsync.NewSet[id.RoomID](),
		hinted:     exsync.NewSet[id.EventID](),
		rooms:      newRoomView(),
	}
	for _, a := range cfg.Admins {
		b.admins[a] = struct{}{}
	}
	b.proc = commands.NewProcessor(cli, a, b)
	a.Health.Self = b.selfStatus
	return b
}

// Start logs in, sets up encryption and cross-signing, and registers event handlers. While
// Synapse does not answer it keeps trying, with backoff (outage), until ctx ends; an error
// that is not Synapse being unreachable (a wrong password, a broken store) ends it.
func (b *Bot) Start(ctx context.Context) error {
	for _, r := range b.cfg.Rooms.Admin {
		b.adminRooms.Add(r)
	}
	adopted, err := b.store.AdminRooms(ctx)
	if err != nil {
		return err
	}
	for _, r := range adopted {
		b.adminRooms.Add(r)
	}
	// Nothing here holds a transaction on medic's store across a request to Synapse, so
	// `medic exec` (another process on the same store) works while this waits.
	for {
		// Ask whether Synapse answers at all before logging in: an attempt that fails there
		// has nothing to undo (connect sets up the crypto store, logs in, …).
		if _, err = b.Client.Versions(quiet(ctx)); err == nil {
			err = b.connect(quiet(ctx))
		}
		if err == nil {
			break
		} else if ctx.Err() != nil {
			return ctx.Err()
		} else if !unreachable(err) {
			return err
		}
		if err = wait(ctx, b.outage.failed(b.log, "start", err)); err != nil {
			return err
		}
	}
	syncer := &viewSyncer{DefaultSyncer: b.Client.Syncer.(*mautrix.DefaultSyncer), after: b.afterSync,
		failed: b.syncFailed, log: b.log}
	b.Client.Syncer = syncer
	syncer.OnSync(func(ctx context.Context, _ *mautrix.RespSync, _ string) bool {
		b.syncState.ok()
		b.announceBack(ctx)
		return true
	})
	syncer.OnEventType(event.StateMember, b.handleMember)
	syncer.OnEventType(event.EventMessage, b.handleCommandEvent)
	syncer.OnEventType(event.EventReaction, b.handleCommandEvent)
	b.log.Info().
		Stringer("user_id", b.Client.UserID).
		Stringer("device_id", b.Client.DeviceID).
		Int("admin_rooms", b.adminRooms.Size()).
		Bool("encryption", b.cfg.Encryption.On()).
		Msg("Logged in")
	return nil
}

// connect is what Start does with Synapse: log in, encryption and cross-signing, the
// display name, leftover tokens, the rooms' members, interrupted jobs. Start repeats it
// while Synapse does not answer, so each step can run again after a partial attempt.
func (b *Bot) connect(ctx context.Context) (err error) {
	if b.cfg.Encryption.On() {
		if err = b.initCrypto(ctx); err != nil {
			return err
		}
	} else if b.Client.AccessToken == "" {
		if _, err = b.Client.Login(ctx, b.loginRequest()); err != nil {
			return fmt.Errorf("log in as %s: %w", b.cfg.Bot.UserID, err)
		}
	}
	if err = b.store.Set(ctx, store.KeyAccessToken, b.Client.AccessToken); err != nil {
		return err
	}
	if err = b.store.Set(ctx, store.KeyDeviceID, b.Client.DeviceID.String()); err != nil {
		return err
	}
	if resp, err := b.Client.GetOwnDisplayName(ctx); err == nil && resp.DisplayName != b.cfg.Bot.DisplayName {
		if err = b.Client.SetDisplayName(ctx, b.cfg.Bot.DisplayName); err != nil {
			b.log.Warn().Err(err).Msg("Failed to set display name")
		}
	}
	if err = b.app.Start(ctx); err != nil {
		if ue, ok := synapse.Unreachable(err); ok {
			// One line (why and where), not the driver's error per host tried.
			b.log.Warn().Err(ue).Msg("Commands that need Synapse's database fail until it answers; " +
				"login tokens an interrupted recovery left are logged out at the next start")
		} else {
			b.log.Warn().Err(err).Msg("Could not log out tokens left by an interrupted recovery")
		}
	}
	if err = b.loadRooms(ctx); err != nil {
		return err
	}
	notifier := func(job *store.Job) jobs.Notifier { return b.roomNotifier(id.RoomID(job.RoomID)) }
	if err = b.app.Jobs.ReportInterrupted(ctx, notifier); err != nil {
		return fmt.Errorf("check interrupted jobs: %w", err)
	}
	return nil
}

// syncFailed is the sync loop's answer to a failed sync: an unknown token ends it (as
// mautrix-go's default does); anything else is retried with the outage's backoff.
func (b *Bot) syncFailed(err error) (time.Duration, error) {
	if errors.Is(err, mautrix.MUnknownToken) {
		return 0, err
	}
	b.syncState.failed(err)
	return b.outage.failed(b.log, "sync", err), nil
}

func (b *Bot) loginRequest() *mautrix.ReqLogin {
	return &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: b.cfg.Bot.UserID.String()},
		Password:                 b.cfg.Bot.Password,
		DeviceID:                 b.cfg.Bot.DeviceID,
		InitialDeviceDisplayName: b.cfg.Bot.DisplayName,
		StoreCredentials:         true,
	}
}

func (b *Bot) initCrypto(ctx context.Context) error {
	if b.crypto != nil {
		// A previous attempt got this far before Synapse stopped answering: the crypto
		// helper is set up (and its sync handlers registered); only cross-signing is left.
		return b.crossSign(ctx)
	}
	pickleKey, err := readOrCreateSecret(b.cfg.Encryption.PickleKeyFile)
	if err != nil {
		return fmt.Errorf("pickle key: %w", err)
	}
	ch, err := cryptohelper.NewCryptoHelper(b.Client, pickleKey, b.store.DB)
	if err != nil {
		return fmt.Errorf("create crypto helper: %w", err)
	}
	if b.Client.AccessToken == "" {
		ch.LoginAs = b.loginRequest()
	}
	ch.DecryptErrorCallback = func(evt *event.Event, err error) {
		b.log.Warn().Err(err).Stringer("event_id", evt.ID).Stringer("sender", evt.Sender).Msg("Failed to decrypt event")
	}
	if err = ch.Init(ctx); err != nil {
		return fmt.Errorf("init encryption (if the bot's database or pickle key was lost while its device still exists on the server, log the device out and start again): %w", err)
	}
	b.crypto = ch
	b.Client.Crypto = ch
	return b.crossSign(ctx)
}

// crossSign makes the bot's device cross-signed by its own master key, so Element shows it
// as verified. The first start creates the keys and writes the recovery key to a file that
// only the operator on the host can read; later starts use that file if the device is new.
func (b *Bot) crossSign(ctx context.Context) error {
	mach := b.crypto.Machine()
	hasKeys, verified, err := mach.GetOwnVerificationStatus(ctx)
	if err != nil {
		return fmt.Errorf("check cross-signing status: %w", err)
	}
	path := b.cfg.Encryption.RecoveryKeyFile
	switch {
	case verified:
		b.log.Debug().Msg("Device already cross-signed")
		return nil
	case hasKeys:
		raw, err := os.ReadFile(path)
		if err != nil {
			b.log.Warn().Str("recovery_key_file", path).Msg("Cross-signing keys exist but the recovery key file is unreadable; the bot's device stays unverified")
			return nil
		}
		if err = mach.VerifyWithRecoveryKey(ctx, string(bytes.TrimSpace(raw))); err != nil {
			return fmt.Errorf("verify device with the recovery key in %s: %w", path, err)
		}
		b.log.Info().Msg("Device cross-signed with the stored recovery key")
		return nil
	}
	uia := func(resp *mautrix.RespUserInteractive) any {
		return &mautrix.ReqUIAuthLogin{
			BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: resp.Session},
			User:         b.cfg.Bot.UserID.String(),
			Password:     b.cfg.Bot.Password,
		}
	}
	recoveryKey, _, err := mach.GenerateAndUploadCrossSigningKeys(ctx, uia, "")
	if err != nil {
		return fmt.Errorf("create cross-signing keys: %w", err)
	}
	if err = writeSecret(path, []byte(recoveryKey+"\n")); err != nil {
		return fmt.Errorf("save recovery key: %w", err)
	}
	if err = mach.SignOwnDevice(ctx, mach.OwnIdentity()); err != nil {
		return fmt.Errorf("sign own device: %w", err)
	}
	if err = mach.SignOwnMasterKey(ctx); err != nil {
		return fmt.Errorf("sign own master key: %w", err)
	}
	b.log.Info().Str("recovery_key_file", path).Msg("Created cross-signing keys; the recovery key is in this file (keep it safe)")
	return nil
}

// Run syncs until ctx is cancelled, then waits for running commands.
func (b *Bot) Run(ctx context.Context) error {
	go func() {
		for _, roomID := range b.adminRooms.AsList() {
			b.publishSpecs(ctx, roomID)
		}
	}()
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		b.runSchedule(ctx)
	}()
	err := b.sync(ctx)
	b.running.Wait()
	b.app.Close()
	if b.crypto != nil {
		_ = b.crypto.Close()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// sync runs mautrix-go's sync loop until ctx ends. Failed syncs are retried inside it
// (syncFailed); the loop itself returns when its set-up fails (creating the filter), which
// is retried here while Synapse does not answer.
func (b *Bot) sync(ctx context.Context) error {
	for {
		err := b.Client.SyncWithContext(quiet(ctx))
		if err == nil || ctx.Err() != nil || !unreachable(err) {
			return err
		}
		if err = wait(ctx, b.outage.failed(b.log, "sync", err)); err != nil {
			return err
		}
	}
}

func readOrCreateSecret(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		return bytes.TrimSpace(raw), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	secret := []byte(random.String(48))
	return secret, writeSecret(path, append(secret, '\n'))
}

func writeSecret(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
