// Package jobs is the spine every change medic makes goes through: a dry-run plan with a
// fingerprint, approval (reactions or !approve in chat, y/N on the terminal), a run off the
// command's goroutine with progress, a report, and an audit trail. Jobs and their steps are
// persisted, so a job that failed or was interrupted by a restart is reported and resumable,
// never silently half-done.
//
// An operation (Operation[A, D]) declares its argument type A, the data its plan hands to
// its steps D, how to plan, how to run one step, and how steps depend on each other (Order).
// Everything the spine says goes through a Notifier, implemented by each transport (the bot,
// the terminal): jobs knows nothing of Matrix rooms, reactions or command prefixes.
package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Plan is what an operation would do, computed without changing anything.
//
// Title, Why, Changes, Risks and Nothing (and a step's Note and Say) are Markdown: text from
// other servers (room names, event types, IDs, their error messages) goes in through mdtext.
// Step names and step errors are plain text, escaped where the spine shows them.
type Plan struct {
	Title   string   `json:"title"`
	Why     string   `json:"why,omitempty"`
	Changes []string `json:"changes"`
	Risks   []string `json:"risks,omitempty"`
	// Steps are the units of work; a resumed job runs only those not finished.
	Steps []string `json:"steps"`
	// Basis is what the plan rests on beyond its steps (e.g. the rows it would change, with
	// their values). Together with Title, Steps and Data it makes the fingerprint; Changes do
	// not, because they may describe volatile detail (a timer) that does not alter what runs.
	Basis []string `json:"basis,omitempty"`
	// Data is what the steps need beyond their names: the operation's D, encoded by Encode.
	Data json.RawMessage `json:"data,omitempty"`
	// Nothing is set when there is nothing to do: no job is created, this is said instead.
	Nothing string `json:"nothing,omitempty"`
}

// Encode turns an operation's plan data into Plan.Data. Go's JSON encoding is deterministic
// (struct fields in order, map keys sorted), so equal data gives equal fingerprints.
func Encode(data any) json.RawMessage {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Errorf("jobs: plan data is not JSON-encodable: %w", err))
	}
	return raw
}

// Fingerprint identifies what the plan would do, so drift between prompt and approval is
// detected.
func (p *Plan) Fingerprint() string {
	raw, _ := json.Marshal([]any{p.Title, p.Steps, p.Basis, p.Data})
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// Markdown renders the plan for a prompt: title, why, changes and risks. How to approve it
// is the transport's to add.
func (p *Plan) Markdown(jobID string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**Plan %s: %s**\n\n", jobID, p.Title)
	if p.Why != "" {
		fmt.Fprintf(&b, "Why: %s\n\n", p.Why)
	}
	fmt.Fprintf(&b, "What will change (%d):\n\n", len(p.Changes))
	for i, c := range p.Changes {
		if i == 10 {
			fmt.Fprintf(&b, "* … and %d more\n", len(p.Changes)-10)
			break
		}
		fmt.Fprintf(&b, "* %s\n", c)
	}
	for _, r := range p.Risks {
		fmt.Fprintf(&b, "\n⚠️ %s\n", r)
	}
	return strings.TrimRight(b.String(), "\n")
}

// Diff says what differs between an old plan's changes and a fresh one's.
func Diff(old, fresh []string) string {
	var b strings.Builder
	inOld := map[string]bool{}
	for _, o := range old {
		inOld[o] = true
	}
	inNew := map[string]bool{}
	for _, n := range fresh {
		inNew[n] = true
		if !inOld[n] {
			fmt.Fprintf(&b, "\n* now: %s", n)
		}
	}
	for _, o := range old {
		if !inNew[o] {
			fmt.Fprintf(&b, "\n* was: %s", o)
		}
	}
	if b.Len() == 0 {
		return "The steps differ."
	}
	return "What differs:" + b.String()
}

// ParsePlan reads a persisted plan; a plan that does not parse gives an empty one.
func ParsePlan(raw string) *Plan {
	var p Plan
	_ = json.Unmarshal([]byte(raw), &p)
	return &p
}
