package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/testbed"
)

func TestMain(m *testing.M) { testbed.Main(m) }

// jobIDPattern finds the job ID in a plan's title.
var jobIDPattern = regexp.MustCompile("Plan ([a-z0-9]+):")

func testbedConfig(t *testing.T) string {
	tb := testbed.Get(t)
	return tb.BasicMedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword, "")
}

// TestExecVersion runs `medic exec '!version'` against the real hs1.
func TestExecVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"exec", "-c", testbedConfig(t), "!version"}, nil, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "Synapse Medic ") || !strings.Contains(stdout.String(), "Synapse 1.160") {
		t.Fatalf("output %q lacks medic's version and Synapse 1.160", stdout.String())
	}
	if out := stdout.String() + stderr.String(); strings.Contains(out, "dangerously") {
		t.Errorf("testing switch off, yet medic warns about it:\n%s", out)
	}

	// The testing switch on: a warning at start (in the log: stderr) and in !version.
	stdout.Reset()
	stderr.Reset()
	cfg, err := os.ReadFile(testbedConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	on := testbed.WriteConfig(t, t.TempDir(), string(cfg)+"federation: {dangerously_allow_loopback_and_self_signed_testing_only: true}\n")
	if code := run([]string{"exec", "-c", on, "!version"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr.String())
	}
	const warning = "federation.dangerously_allow_loopback_and_self_signed_testing_only is on: medic connects to loopback addresses"
	if !strings.Contains(stdout.String(), "⚠️ "+warning) || !strings.Contains(stdout.String(), "Synapse 1.160") {
		t.Errorf("!version does not say the testing switch is on:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "WRN") || !strings.Contains(stderr.String(), warning) {
		t.Errorf("no warning logged at start:\n%s", stderr.String())
	}
}

func TestExecFailureExitCode(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"exec", "-c", testbedConfig(t), "!verison"}, nil, &stdout, &stderr); code == 0 {
		t.Fatalf("mistyped command exited 0: %s", stdout.String())
	}
	if !strings.Contains(stdout.String(), "Did you mean `!version`") {
		t.Errorf("no suggestion in %q", stdout.String())
	}
}

func TestCheckConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check-config", "-c", testbedConfig(t)}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("valid config rejected (exit %d): %s", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	bad := testbed.WriteConfig(t, t.TempDir(), "homeserver: {url: nope}\nadmins: []\n")
	if code := run([]string{"check-config", "-c", bad}, nil, &stdout, &stderr); code == 0 {
		t.Fatal("invalid config accepted")
	}
	for _, key := range []string{"homeserver.url", "homeserver.server_name", "bot.user_id", "admins"} {
		if !strings.Contains(stderr.String(), key+":") {
			t.Errorf("check-config output does not name %s: %s", key, stderr.String())
		}
	}
}
