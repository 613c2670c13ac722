package commands

import (
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/event/cmdschema"

	"github.com/synapse-medic/medic/diagnose"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/mdtext"
	"github.com/synapse-medic/medic/recovery"
)

func requester(ce *Event) jobs.Requester { return ce.Meta.Transport.Requester(ce) }

// propose plans an operation (ce.Meta.Ops.X.With(args)) and asks for approval.
func propose(ce *Event, r jobs.Request) {
	if _, err := ce.Meta.Jobs.Propose(ce.Ctx, requester(ce), r); err != nil {
		if !dbUnreachable(ce, "Could not plan this", err) {
			Fail(ce, "Could not plan this: %s", mdtext.Text(err.Error()))
		}
	}
}

func jobIDParam(desc string) []*cmdschema.Parameter {
	return []*cmdschema.Parameter{{Key: "job", Schema: cmdschema.PrimitiveTypeString.Schema(), Description: text(desc)}}
}

// jobCommand makes !approve/!cancel/!resume: each takes a job ID and answers with what the
// manager says.
func jobCommand(name, desc string, fn func(m *jobs.Manager, ce *Event, id string) (string, error)) *Handler {
	return &Handler{
		Name: name, Description: text(desc), Parameters: jobIDParam("The job ID from the plan"), TailParam: "job",
		Func: func(ce *Event) {
			if len(ce.Args) != 1 {
				Fail(ce, "Usage: `%s%s <job>`", prefix(ce), name)
				return
			}
			answer, err := fn(ce.Meta.Jobs, ce, ce.Args[0])
			answerJob(ce, answer, err)
		},
	}
}

// answerJob replies with what the job manager answered to !approve, !cancel or !resume.
func answerJob(ce *Event, answer string, err error) {
	if err != nil {
		msg := err.Error()
		if !strings.HasSuffix(msg, ".") {
			msg += "."
		}
		Fail(ce, "%s", strings.ToUpper(msg[:1])+msg[1:])
	} else if answer != "" {
		reply(ce, answer)
	}
}

func approveCommand() *Handler {
	return jobCommand("approve", "Approve a planned job (same as reacting ✅ to its plan)",
		func(m *jobs.Manager, ce *Event, id string) (string, error) {
			return m.Approve(ce.Ctx, requester(ce), id)
		})
}

func cancelCommand() *Handler {
	return jobCommand("cancel", "Cancel a planned job, or stop a running one after its current step",
		func(m *jobs.Manager, ce *Event, id string) (string, error) {
			return m.Cancel(ce.Ctx, requester(ce), id)
		})
}

func resumeCommand() *Handler {
	return &Handler{
		Name: "resume", Description: text("Run a failed or interrupted job again: it is re-planned, and only failed and unfinished " +
			"steps run (--force-schema: on a Synapse schema its repair was not tested on)"),
		Parameters: jobIDParam("The job ID from the plan, and optionally --force-schema"), TailParam: "job",
		Func: func(ce *Event) {
			// Synapse may have been upgraded since the job was approved: --force-schema is
			// taken off before the job ID is counted.
			force := takeForceSchema(ce)
			if len(ce.Args) != 1 {
				Fail(ce, "Usage: `%sresume <job> [%s]`", prefix(ce), jobs.ForceSchemaFlag)
				return
			}
			answer, err := ce.Meta.Jobs.ResumeWith(ce.Ctx, requester(ce), ce.Args[0], force)
			answerJob(ce, answer, err)
		},
	}
}

func jobsCommand() *Handler {
	return &Handler{
		Name: "jobs", Description: text("List recent jobs"), Parameters: []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			list, err := ce.Meta.Store.RecentJobs(ce.Ctx, 20)
			if err != nil {
				Fail(ce, "Could not list jobs: %v", err)
				return
			}
			if len(list) == 0 {
				reply(ce, "No jobs yet.")
				return
			}
			var b strings.Builder
			b.WriteString("| job | what | state | requested by | when |\n|---|---|---|---|---|\n")
			for _, j := range list {
				title := jobs.ParsePlan(j.Plan).Title
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", j.ID, title, j.State, j.RequestedBy, j.RequestedAt.UTC().Format(time.DateTime))
			}
			reply(ce, b.String())
		},
	}
}

func jobCommandDetail() *Handler {
	return &Handler{
		Name: "job", Description: text("Show one job with its plan, steps and audit trail"), Parameters: jobIDParam("The job ID"), TailParam: "job",
		Func: func(ce *Event) {
			if len(ce.Args) != 1 {
				Fail(ce, "Usage: `%sjob <job>`", prefix(ce))
				return
			}
			j, err := ce.Meta.Store.GetJob(ce.Ctx, strings.ToLower(ce.Args[0]))
			if err != nil || j == nil {
				Fail(ce, "There is no job `%s` (`%sjobs` lists them).", ce.Args[0], prefix(ce))
				return
			}
			var b strings.Builder
			p := jobs.ParsePlan(j.Plan)
			fmt.Fprintf(&b, "**Job %s: %s** — %s\n\n", j.ID, p.Title, j.State)
			fmt.Fprintf(&b, "Plan %s, %d approval(s) needed. %s\n\nChanges:\n\n", j.Fingerprint, j.ApprovalsNeeded, mdtext.Text(j.Result))
			for _, c := range p.Changes {
				fmt.Fprintf(&b, "* %s\n", c)
			}
			for _, r := range p.Risks {
				fmt.Fprintf(&b, "\n⚠️ %s\n", r)
			}
			if steps, _ := ce.Meta.Store.Steps(ce.Ctx, j.ID); len(steps) > 0 {
				b.WriteString("\nSteps:\n\n")
				for _, s := range steps {
					name := "?"
					if s.Idx < len(p.Steps) {
						name = p.Steps[s.Idx]
					}
					// Step names and errors are plain text holding remote names and answers.
					fmt.Fprintf(&b, "* %s: %s %s\n", mdtext.Text(name), s.State, mdtext.Text(s.Error))
				}
			}
			b.WriteString("\nAudit trail:\n\n")
			trail, _ := ce.Meta.Store.AuditTrail(ce.Ctx, j.ID)
			for _, e := range trail {
				fmt.Fprintf(&b, "* %s %s: %s\n", e.At.UTC().Format(time.DateTime), e.Actor, mdtext.Text(e.What))
			}
			reply(ce, b.String())
		},
	}
}

func federationCommand() *Handler {
	return &Handler{
		Name: "federation", Description: text("List the servers Synapse is failing to reach"), Parameters: []*cmdschema.Parameter{},
		Func: func(ce *Event) {
			failing, err := diagnose.FailingDestinations(ce.Ctx, ce.Meta.Admin)
			if err != nil {
				Fail(ce, "Could not list destinations: %v", err)
				return
			}
			if len(failing) == 0 {
				reply(ce, "Synapse is not backing off from any server. ✅")
				return
			}
			var b strings.Builder
			fmt.Fprintf(&b, "Synapse is failing to reach %d server(s):\n\n| server | state |\n|---|---|\n", len(failing))
			for _, d := range failing {
				fmt.Fprintf(&b, "| %s | %s |\n", mdtext.Code(d.Destination), diagnose.DescribeRetry(d))
			}
			fmt.Fprintf(&b, "\n`%sfederation reset <server>` makes Synapse retry one now; `%sfederation reset all` every one.", prefix(ce), prefix(ce))
			reply(ce, b.String())
		},
		Subcommands: []*Handler{{
			Name: "reset", Description: text("Clear Synapse's backoff for a server, or for every failing one with `all` (asks for approval)"),
			Parameters: []*cmdschema.Parameter{{Key: "server", Schema: cmdschema.PrimitiveTypeString.Schema(), Description: text("The server name (e.g. example.org), or all")}},
			TailParam:  "server",
			Func: parsed("federation reset <server>", func(ce *Event, args recovery.FederationResetArgs) {
				propose(ce, ce.Meta.Ops.FederationReset.With(args))
			}),
		}},
	}
}

func undoCommand() *Handler {
	return &Handler{
		Name: "undo", Description: text("Restore the rows a job changed in Synapse's database (asks for approval)"),
		Parameters: jobIDParam("The job whose changes to undo, and optionally --force-schema"), TailParam: "job",
		Func: func(ce *Event) {
			forceSchema := takeForceSchema(ce)
			var args recovery.UndoArgs
			switch {
			case len(ce.Args) == 1:
				args.Job = ce.Args[0]
			case len(ce.Args) == 0 && ce.StructuredArgs != nil:
				// A structured (MSC4391) command: the job is a parameter, not in the text.
				if err := ce.ParseArgs(&args); err != nil {
					args.Job = ""
				}
			}
			if args.Job == "" || strings.ContainsAny(args.Job, " \t") {
				Fail(ce, "Usage: `%sundo <job> [%s]`", prefix(ce), jobs.ForceSchemaFlag)
				return
			}
			if !needDB(ce) {
				return
			}
			args.Job = strings.ToLower(args.Job)
			args.ForceSchema = args.ForceSchema || forceSchema
			propose(ce, ce.Meta.Ops.Undo.With(args))
		},
	}
}
