// Package terminal runs medic's commands without Matrix (`medic exec`), for when the
// homeserver is down or an admin is on the host anyway.
//
// It gives the command processor a mautrix client whose HTTP transport never leaves the
// process: messages the handlers send are printed as plain text, edits replace the previous
// line, and everything else answers with an empty success. So the handlers are exactly the
// ones the bot runs, not a second implementation.
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
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/commands"
)

// printer is an http.RoundTripper that prints message events and acknowledges all requests.
type printer struct {
	out  io.Writer
	lock sync.Mutex
	n    int
}

func (p *printer) RoundTrip(req *http.Request) (*http.Response, error) {
	p.lock.Lock()
	defer p.lock.Unlock()
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
	}
	// PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}
	if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/send/m.room.message/") {
		p.print(body)
	}
	p.n++
	resp := fmt.Sprintf(`{"event_id": "$terminal-%d"}`, p.n)
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": []string{"application/json"}},
		Body:       io.NopCloser(strings.NewReader(resp)),
		Request:    req,
	}, nil
}

func (p *printer) print(raw []byte) {
	var content event.MessageEventContent
	if err := json.Unmarshal(raw, &content); err != nil {
		fmt.Fprintf(p.out, "(unprintable message: %v)\n", err)
		return
	}
	if content.NewContent != nil { // an edit (progress update): show the new text
		content = *content.NewContent
	}
	fmt.Fprintln(p.out, strings.TrimRight(content.Body, "\n"))
}

// Runner executes commands typed on the terminal.
type Runner struct {
	proc *commands.Processor
}

// NewRunner builds the processor for terminal use. env.Admin should use Client() so its
// admin API calls go to the real Synapse while replies are printed.
func NewRunner(env *commands.Env, out io.Writer) *Runner {
	cli, _ := mautrix.NewClient("http://terminal.invalid", commands.TerminalUser, "")
	cli.Client = &http.Client{Transport: &printer{out: out}}
	return &Runner{proc: commands.NewProcessor(cli, env)}
}

// ErrFailed is returned when the command ran and reported failure; its message was printed.
var ErrFailed = fmt.Errorf("command failed")

// Run executes one command line like "!version" and reports whether it succeeded.
func (r *Runner) Run(ctx context.Context, line string) error {
	line = strings.TrimSpace(line)
	pfx := r.proc.Meta.Config.Bot.CommandPrefix
	if !strings.HasPrefix(line, pfx) {
		line = pfx + line // `medic exec version` works as well as `medic exec '!version'`
	}
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: line}
	evt := &event.Event{
		Sender:    commands.TerminalUser,
		Type:      event.EventMessage,
		RoomID:    id.RoomID("!terminal:medic.local"),
		ID:        id.EventID("$terminal-command"),
		Timestamp: time.Now().UnixMilli(),
		Content:   event.Content{Parsed: content, VeryRaw: mustJSON(content)},
	}
	ctx, o := commands.WithOutcome(ctx)
	r.proc.Process(ctx, evt)
	if !o.Handled || o.Failed {
		return ErrFailed
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(v)
	return buf.Bytes()
}

// Confirmer returns the terminal's approval prompt: it prints the plan and reads y/N from
// in, or approves at once when yes is set (for scripts).
func Confirmer(in io.Reader, out io.Writer, yes bool) func(string) bool {
	reader := bufio.NewReader(in)
	return func(prompt string) bool {
		fmt.Fprintln(out, prompt)
		if yes {
			fmt.Fprintln(out, "Approved by --yes.")
			return true
		}
		fmt.Fprint(out, "Approve? [y/N] ")
		if in == nil {
			return false
		}
		line, _ := reader.ReadString('\n')
		answer := strings.ToLower(strings.TrimSpace(line))
		return answer == "y" || answer == "yes"
	}
}
