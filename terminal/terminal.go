// Package terminal runs medic's commands without Matrix (`medic exec`), for when the
// homeserver is down or an admin is on the host anyway.
//
// It gives the command processor a mautrix client whose HTTP transport never leaves the
// process: messages the handlers send are printed as plain text, and everything else answers
// with an empty success. So the handlers are exactly the ones the bot runs, not a second
// implementation. The runner is also the job spine's Notifier here: plans are printed and
// approved on stdin, progress and reports printed.
package terminal

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/app"
	"github.com/synapse-medic/medic/commands"
	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/store"
)

// User is the sender of commands typed into `medic exec`, as the audit trail names it.
const User = id.UserID("@terminal:medic.local")

const room = id.RoomID("!terminal:medic.local")

// printer is an http.RoundTripper that prints message events and acknowledges all requests.
type printer struct {
	out  io.Writer
	lock sync.Mutex
	n    int
}

func (p *printer) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
	}
	// PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}
	if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/send/m.room.message/") {
		p.printEvent(body)
	}
	p.lock.Lock()
	p.n++
	resp := fmt.Sprintf(`{"event_id": "$terminal-%d"}`, p.n)
	p.lock.Unlock()
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": []string{"application/json"}},
		Body:       io.NopCloser(strings.NewReader(resp)),
		Request:    req,
	}, nil
}

func (p *printer) printEvent(raw []byte) {
	var content event.MessageEventContent
	if err := json.Unmarshal(raw, &content); err != nil {
		p.print(fmt.Sprintf("(unprintable message: %v)", err))
		return
	}
	p.print(content.Body)
}

func (p *printer) print(text string) {
	p.lock.Lock()
	defer p.lock.Unlock()
	fmt.Fprintln(p.out, strings.TrimRight(text, "\n"))
}

// Runner executes commands typed on the terminal.
type Runner struct {
	proc *commands.Processor
	app  *app.App
	out  *printer
	in   *bufio.Reader
	yes  bool

	lock sync.Mutex
	// jobFailed is set when a job of the current command was declined or did not end done.
	jobFailed bool
}

// NewRunner builds the processor for terminal use. a should be assembled on a client whose
// admin API calls go to the real Synapse; replies are printed to out, and approval prompts
// read y/N from in (or are approved at once with yes, for scripts).
func NewRunner(a *app.App, in io.Reader, out io.Writer, yes bool) *Runner {
	p := &printer{out: out}
	cli, _ := mautrix.NewClient("http://terminal.invalid", User, "")
	cli.Client = &http.Client{Transport: p}
	r := &Runner{app: a, out: p, yes: yes}
	if in != nil {
		r.in = bufio.NewReader(in)
	}
	r.proc = commands.NewProcessor(cli, a, r)
	return r
}

// ErrFailed is returned when the command ran and reported failure; its message was printed.
var ErrFailed = fmt.Errorf("command failed")

// Run executes one command line like "!version", waits for the jobs it started, and
// reports whether it succeeded.
func (r *Runner) Run(ctx context.Context, line string) error {
	line = strings.TrimSpace(line)
	pfx := r.app.Config.Bot.CommandPrefix
	if !strings.HasPrefix(line, pfx) {
		line = pfx + line // `medic exec version` works as well as `medic exec '!version'`
	}
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: line}
	evt := &event.Event{
		Sender:  User,
		Type:    event.EventMessage,
		RoomID:  room,
		ID:      id.EventID("$terminal-command"),
		Content: event.Content{Parsed: content, VeryRaw: mustJSON(content)},
	}
	r.lock.Lock()
	r.jobFailed = false
	r.lock.Unlock()
	ctx, o := commands.WithOutcome(ctx)
	r.proc.Process(ctx, evt)
	// The process exits after the command: let the jobs it started finish first.
	r.app.Jobs.Wait()
	r.lock.Lock()
	defer r.lock.Unlock()
	if !o.Handled || o.Failed || r.jobFailed {
		return ErrFailed
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(v)
	return buf.Bytes()
}

// Requester implements commands.Transport: the operator on the host, answered here.
func (r *Runner) Requester(*commands.Event) jobs.Requester {
	return jobs.Requester{User: User, Room: room, Host: true, Notifier: r}
}

// Shared implements commands.Transport: the terminal is the operator's alone.
func (r *Runner) Shared() bool { return false }

// Outsiders implements commands.Transport: nobody else reads the terminal; for the admin
// rooms !rooms lists, Synapse says who is in them.
func (r *Runner) Outsiders(ctx context.Context, roomID id.RoomID) (map[id.UserID]event.Membership, error) {
	if roomID == room {
		return nil, nil
	}
	members, err := r.app.Admin.JoinedOrInvited(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return commands.OutsidersOf(r.app.Config, members), nil
}

func (r *Runner) failed() {
	r.lock.Lock()
	r.jobFailed = true
	r.lock.Unlock()
}

// Say implements jobs.Notifier.
func (r *Runner) Say(_ context.Context, md string) { r.out.print(md) }

// Prompt implements jobs.Notifier: it prints the plan and reads y/N, or approves at once
// with --yes.
func (r *Runner) Prompt(_ context.Context, job *store.Job, plan string) jobs.Answer {
	r.out.print(plan)
	if r.yes {
		r.out.print("Approved by --yes.")
		return jobs.AnswerYes
	}
	r.out.lock.Lock()
	fmt.Fprint(r.out.out, "Approve? [y/N] ")
	r.out.lock.Unlock()
	if r.in == nil {
		r.failed()
		return jobs.AnswerNo
	}
	line, _ := r.in.ReadString('\n')
	if answer := strings.ToLower(strings.TrimSpace(line)); answer == "y" || answer == "yes" {
		return jobs.AnswerYes
	}
	r.failed()
	return jobs.AnswerNo
}

// Progress implements jobs.Notifier: each update is a line.
func (r *Runner) Progress(_ context.Context, _ *store.Job, status string, _ bool) {
	r.out.print(status)
}

// Report implements jobs.Notifier; a job that did not end done makes the command fail.
func (r *Runner) Report(_ context.Context, job *store.Job, report string) {
	if job.State != store.JobDone {
		r.failed()
	}
	r.out.print(report)
}
