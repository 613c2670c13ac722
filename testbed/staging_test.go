package testbed

import (
	"bytes"
	"strings"
	"testing"
)

// TestRunStaging: a failure ends the staging with an error after the cleanups ran (last
// first) and says why; Errorf fails without stopping; other panics go on.
func TestRunStaging(t *testing.T) {
	var log bytes.Buffer
	var order []string
	reached := false
	err := RunStaging(&log, func(s *Staging) {
		s.Cleanup(func() { order = append(order, "first") })
		s.Cleanup(func() { order = append(order, "second") })
		s.Fatalf("hs1 did not start: %s", "timeout")
		reached = true
	})
	if err == nil || reached || strings.Join(order, ",") != "second,first" || !strings.Contains(log.String(), "hs1 did not start: timeout") {
		t.Errorf("Fatalf: err %v, went on %v, cleanups %v, log %q", err, reached, order, log.String())
	}
	err = RunStaging(&log, func(s *Staging) {
		s.Errorf("one room missing")
		reached = true
	})
	if err == nil || !reached {
		t.Errorf("Errorf: err %v, went on %v", err, reached)
	}
	if err = RunStaging(&log, func(s *Staging) { s.Logf("fine") }); err != nil {
		t.Errorf("no failure: %v", err)
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("a panic that is no failure: %v", r)
		}
	}()
	_ = RunStaging(&log, func(s *Staging) { panic("boom") })
}
