package commands

import (
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/event/cmdschema"

	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
)

// AftercareArgs are !aftercare's options.
type AftercareArgs struct {
	Offline, Online bool
	Since           time.Duration // 0: since the restore (or 24h when unknown)
}

// ParseAftercareArgs reads `[--offline|--online] [--since <duration>]`.
func ParseAftercareArgs(args []string) (AftercareArgs, error) {
	var a AftercareArgs
	for i := 0; i < len(args); i++ {
		switch arg := args[i]; {
		case arg == "--offline":
			a.Offline = true
		case arg == "--online":
			a.Online = true
		case arg == "--since" && i+1 < len(args), strings.HasPrefix(arg, "--since="):
			v, ok := strings.CutPrefix(arg, "--since=")
			if !ok {
				i++
				v = args[i]
			}
			d, err := parseDuration(v)
			if err != nil {
				return a, err
			}
			a.Since = d
		default:
			return a, fmt.Errorf("unexpected argument %q (accepted: --offline, --online, --since <duration>)", arg)
		}
	}
	if a.Offline && a.Online {
		return a, fmt.Errorf("--offline and --online exclude each other")
	}
	if a.Offline && a.Since != 0 {
		return a, fmt.Errorf("--since is for the online part (the logs scanned for forgotten rooms)")
	}
	return a, nil
}

func aftercareCommand() *Handler {
	return &Handler{
		Name: "aftercare",
		Description: text("After a restore of Synapse's database: with Synapse stopped, repair what keeps it from starting or breaks encryption, " +
			"then start it (offline part); while it runs, rejoin forgotten rooms, reset federation, health report (online part). Asks for approval"),
		Parameters: []*cmdschema.Parameter{{Key: "options", Schema: cmdschema.PrimitiveTypeString.Schema(), Optional: true,
			Description: text("--offline or --online to insist on one part; --since <duration> for the online part's log scan (default: since the restore)")}},
		TailParam: "options",
		Func:      aftercare,
	}
}

func aftercare(ce *Event) {
	force := takeForceSchema(ce)
	args, err := ParseAftercareArgs(ce.Args)
	if err != nil {
		Fail(ce, "%v. Usage: `%saftercare [--offline|--online] [--since 24h]`", err, prefix(ce))
		return
	}
	if !needDB(ce) {
		return
	}
	ac := ce.Meta.Aftercare()
	running, err := ac.Running(ce.Ctx)
	if err != nil {
		FailErr(ce, "Could not tell whether Synapse runs", err)
		return
	}
	switch {
	case running == "" && args.Online:
		Fail(ce, "Synapse is not running, so the online part cannot run. `%saftercare` without --online does the offline part and starts it.", prefix(ce))
		return
	case running == "":
		a := recovery.AftercareArgs{}
		a.ForceSchema = force
		propose(ce, ce.Meta.Ops.Aftercare.With(a))
		return
	case args.Offline:
		Fail(ce, "The offline part needs Synapse stopped, and it is running (%s); nothing was changed. "+
			"Stop Synapse and its workers, then run `medic exec aftercare` on the host.", mdtext.Text(running))
		return
	}
	since, how := args.Since, "as asked"
	if since == 0 {
		since = recovery.SinceRestore(ce.Ctx, ce.Meta.Store, 24*time.Hour)
		how = "since the restored database's end, as the offline part recorded it"
		if recovery.BackupEnd(ce.Ctx, ce.Meta.Store).IsZero() {
			how = "the default: the offline part did not run here, so medic does not know when the restore was (`--since` sets it)"
		}
	}
	reply(ce, "Synapse is running (%s), so this is the online part; the offline part (stream sequences, owners, one-time keys, "+
		"device lists, backoff in the database) needs Synapse stopped: `medic exec aftercare` on the host. "+
		"Reading the logs of the last %s (%s).", mdtext.Text(running), since, how)
	propose(ce, ce.Meta.Ops.AftercareOnline.With(recovery.AftercareOnlineArgs{Since: since}))
}
