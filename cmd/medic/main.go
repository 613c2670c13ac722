// Command medic is Synapse Medic: a Matrix bot that diagnoses and repairs a Synapse
// homeserver from its admin room, and the same commands from a terminal.
//
//	medic run -c config.yaml            run the bot
//	medic exec -c config.yaml '!help'   run one command here, without Matrix
//	medic check-config -c config.yaml   validate a config, naming each bad key
//	medic appservice-registration -c config.yaml [-o file]
//	                                    write an appservice registration for !recover's rejoins
//	medic version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/synapse-medic/medic/app"
	"github.com/synapse-medic/medic/bot"
	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/store"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/terminal"
)

// Version is set at build time (-ldflags "-X main.Version=…"); otherwise taken from the
// module's VCS stamp.
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

const usageText = `Synapse Medic — heals a Synapse homeserver from its admin room.

Usage:
  medic run -c config.yaml            run the bot
  medic exec -c config.yaml [--yes] '!command args'
                                      run one command in this terminal (no Matrix needed)
  medic check-config -c config.yaml   validate a config file
  medic appservice-registration -c config.yaml [-o file]
                                      write an appservice registration for !recover's rejoins
                                      (for app_service_config_files in homeserver.yaml)
  medic version                       print medic's version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "config.yaml", "path of the config file")
	yes := fs.Bool("yes", false, "exec: answer yes to every approval prompt (for scripts)")
	outPath := fs.String("o", "", "appservice-registration: file to write (default: standard output)")
	switch args[0] {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "Synapse Medic", version())
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usageText)
		return 0
	case "run", "exec", "check-config", "appservice-registration":
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usageText)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	switch args[0] {
	case "check-config":
		fmt.Fprintf(stdout, "%s is valid\n", *cfgPath)
		return 0
	case "appservice-registration":
		return writeRegistration(cfg, *outPath, stdout, stderr)
	case "exec":
		line := strings.Join(fs.Args(), " ")
		if line == "" {
			fmt.Fprintln(stderr, "exec needs a command, e.g. medic exec -c config.yaml '!help'")
			return 2
		}
		return execCommand(cfg, line, *yes, stdin, stdout, stderr)
	default:
		return runBot(cfg, stderr)
	}
}

// writeRegistration writes a fresh appservice registration (random tokens) to out, or to
// stdout. An existing file is never overwritten: its tokens are the ones Synapse loaded.
func writeRegistration(cfg *config.Config, out string, stdout, stderr io.Writer) int {
	reg, err := recovery.NewRegistration(cfg.Homeserver.ServerName)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if out == "" {
		_, _ = stdout.Write(reg)
		return 0
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			fmt.Fprintf(stderr, "%s exists; medic does not overwrite it (Synapse has its tokens). Remove it first to make a new one.\n", out)
		} else {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	if _, err = f.Write(reg); err == nil {
		err = f.Close()
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "Wrote %s. Next:\n"+
		"1. homeserver.yaml: app_service_config_files: [%s] (Synapse must be able to read it)\n"+
		"2. restart Synapse\n"+
		"3. medic's config: recover: {join_as: auto, appservice_registration: %s}\n", out, out, out)
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) zerolog.Logger {
	level, _ := zerolog.ParseLevel(cfg.Logging.Level)
	var out io.Writer = zerolog.ConsoleWriter{Out: w, TimeFormat: "2006-01-02 15:04:05"}
	if cfg.Logging.JSON {
		out = w
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

func runBot(cfg *config.Config, stderr io.Writer) int {
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = log.WithContext(ctx)
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("Cannot open the bot's database")
		return 1
	}
	defer st.Close()
	cli, err := bot.NewClient(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("Cannot create the Matrix client")
		return 1
	}
	a, err := app.New(ctx, cfg, st, cli, version(), log)
	if err != nil {
		log.Error().Err(err).Msg("Cannot assemble medic")
		return 1
	}
	b := bot.New(a, cli)
	// Start waits (retrying) while Synapse does not answer; a signal meanwhile is a clean stop.
	if err = b.Start(ctx); err != nil {
		a.Close()
		if errors.Is(err, context.Canceled) {
			log.Info().Msg("Stopped before Synapse answered")
			return 0
		}
		log.Error().Err(err).Msg("Bot stopped with an error")
		return 1
	}
	log.Info().Str("version", version()).Msg("Synapse Medic running")
	if err = b.Run(ctx); err != nil {
		log.Error().Err(err).Msg("Bot stopped with an error")
		return 1
	}
	return 0
}

func execCommand(cfg *config.Config, line string, yes bool, stdin io.Reader, stdout, stderr io.Writer) int {
	// The terminal logs only warnings by default: stdout is for the command's answer.
	if cfg.Logging.Level == "info" {
		cfg.Logging.Level = "warn"
	}
	log := newLogger(cfg, stderr)
	ctx := log.WithContext(context.Background())
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer st.Close()
	cli, err := terminalClient(ctx, cfg, st)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	cli.Log = log
	a, err := app.New(ctx, cfg, st, cli, version(), log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer a.Close()
	if err = a.Start(ctx); err != nil {
		if ue, ok := synapse.Unreachable(err); ok {
			// One line: the command itself says so again if it needs the database.
			fmt.Fprintf(stderr, "warning: %s: commands that need it fail\n", ue)
		} else {
			fmt.Fprintln(stderr, "warning:", err)
		}
	}
	if err = terminal.NewRunner(a, stdin, stdout, yes).Run(ctx, line); err != nil {
		if !errors.Is(err, terminal.ErrFailed) {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	return 0
}

// openStore creates the data directory (private: it holds keys) and opens the bot's store.
func openStore(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*store.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	return store.Open(ctx, cfg.Database, log.With().Str("component", "db").Logger())
}

// terminalClient returns a client for the admin API: with the configured token, else a token
// the terminal saved before, else the running bot's, else it logs in with the password as the
// fixed device MEDIC_TERMINAL (so repeated runs do not pile up devices) and saves the token.
// When Synapse is unreachable it returns a client anyway: commands that only need the
// database still work.
func terminalClient(ctx context.Context, cfg *config.Config, st *store.Store) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(cfg.Homeserver.URL, cfg.Bot.UserID, cfg.Bot.AccessToken)
	if err != nil || cfg.Bot.AccessToken != "" {
		return cli, err
	}
	cli.Log = *zerolog.Ctx(ctx)
	for _, key := range []string{store.KeyTerminalToken, store.KeyAccessToken} {
		token, err := st.Get(ctx, key)
		if err != nil {
			return nil, err
		} else if token == "" {
			continue
		}
		cli.AccessToken = token
		if _, err = cli.Whoami(ctx); err == nil || !errors.Is(err, mautrix.MUnknownToken) {
			return cli, nil
		}
	}
	cli.AccessToken = ""
	if cfg.Bot.Password == "" {
		return cli, nil
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: cfg.Bot.UserID.String()},
		Password:                 cfg.Bot.Password,
		DeviceID:                 "MEDIC_TERMINAL",
		InitialDeviceDisplayName: "Synapse Medic (terminal)",
		StoreCredentials:         true,
	})
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Could not log in; commands that need the admin API will fail")
		return cli, nil
	}
	return cli, st.Set(ctx, store.KeyTerminalToken, cli.AccessToken)
}
