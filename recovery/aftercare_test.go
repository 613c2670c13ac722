package recovery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/synapse-medic/medic/jobs"
	"github.com/synapse-medic/medic/synapselog"
)

// The "since the backup" line counts other servers' traffic only, and names the last.
func TestDescribeReceived(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 5, 1, 0, time.UTC)
	got := describeReceived(map[string]*synapselog.Received{
		"hs2.test": {Server: "hs2.test", Txns: 3, PDUs: 7, Last: at},
		"hs3.test": {Server: "hs3.test", Txns: 1, PDUs: 0, Last: at.Add(-time.Minute)},
		"own.test": {Server: "own.test", Txns: 9, PDUs: 9, Last: at.Add(time.Hour)},
	}, "own.test")
	for _, want := range []string{"4 transaction(s) with 7 event(s)", "from 2 server(s) (`hs2.test`, `hs3.test`)", "the last at 2026-12-02 10:05:01 UTC"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := describeReceived(nil, "own.test"); !strings.Contains(got, "no federation traffic") {
		t.Errorf("nothing received: %q", got)
	}
}

// The online part plans what it can: a reused operation that cannot be planned is said in the
// plan, and the others and the health report still run.
func TestAftercareOnlinePlansWhatItCan(t *testing.T) {
	o := &AftercareOnline{
		Recover: &jobs.Operation[RecoverArgs, RejoinData]{Kind: "recover", Plan: func(context.Context, RecoverArgs) (*jobs.Plan, error) {
			return nil, errors.New("no log sources")
		}},
		Federation: &jobs.Operation[FederationResetArgs, struct{}]{Kind: "federation.reset", Plan: func(context.Context, FederationResetArgs) (*jobs.Plan, error) {
			return &jobs.Plan{Title: "reset", Changes: []string{"`b.example`: failing → retry now"}, Steps: []string{"b.example"}}, nil
		}},
	}
	plan, err := o.Operation().Plan(context.Background(), AftercareOnlineArgs{Since: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"reset: b.example", StepHealth}; !slices.Equal(plan.Steps, want) {
		t.Errorf("steps %q, want %q", plan.Steps, want)
	}
	if !strings.Contains(strings.Join(plan.Changes, "\n"), "Rejoin: could not be planned: no log sources") {
		t.Errorf("changes: %q", plan.Changes)
	}
}
