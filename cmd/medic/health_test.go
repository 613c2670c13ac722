package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/health"
	"github.com/synapse-medic/medic/testbed"
)

// TestHealthExec: `medic exec health` prints the full report (every check, one line each)
// and `medic exec 'health <check>'` one check with its rows; an unknown check fails.
func TestHealthExec(t *testing.T) {
	tb := testbed.Get(t)
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	exec := func(cmd string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run([]string{"exec", "-c", cfg, cmd}, nil, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	code, out := exec("health")
	if !strings.Contains(out, "Health of "+tb.HS1.Name) || !strings.Contains(out, "first report") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, c := range health.Checks() {
		if !strings.Contains(out, c.Title) {
			t.Errorf("the report has no line for %s:\n%s", c.ID, out)
		}
	}
	// Critical checks make the exit code non-zero (for cron); the shared testbed may hold
	// others' faults, so only the agreement of the two is asserted.
	if critical := strings.Contains(out, "CRITICAL"); critical != (code != 0) {
		t.Errorf("exit %d with critical=%v:\n%s", code, critical, out)
	}
	// The second report compares with the first, stored in medic's store.
	if _, out = exec("!health"); !strings.Contains(out, "compared with the last report") {
		t.Errorf("second report does not compare with the first:\n%s", out)
	}
	code, out = exec("!health federation")
	if code != 0 || !strings.Contains(out, "signed request | escaped path accepted") || !strings.Contains(out, "resolve | "+tb.HS1.Name) {
		t.Errorf("!health federation: exit %d\n%s", code, out)
	}
	if code, out = exec("!health nosuch"); code == 0 || !strings.Contains(out, "There is no health check `nosuch`") {
		t.Errorf("unknown check: exit %d\n%s", code, out)
	}
}
