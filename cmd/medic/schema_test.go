package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/recovery"
	"github.com/synapse-medic/medic/synapse"
	"github.com/synapse-medic/medic/testbed"
)

// Synapse versions (issue 13): medic's repairs write Synapse's tables, which change between
// Synapse releases, and were tested on the testbed's Synapse 1.160 only. On a database whose
// schema_version is outside the range a repair was tested on, the repair refuses (naming the
// versions) unless --force-schema is given, which the plan then shows as a risk. Read-only
// commands and health keep working and say the schema is untested.

// testedSchema is the testbed's (Synapse 1.160's) schema version.
const testedSchema = "94"

// setSchemaVersion sets schema_version.version on h's database and puts the original back
// when the test ends. Synapse reads it only when it starts; a newer version than its own
// does not stop it as long as schema_compat_version is one it knows.
func setSchemaVersion(t *testing.T, h *testbed.Homeserver, v int) {
	t.Helper()
	orig := h.Count(t, `SELECT version FROM schema_version`)
	if orig == v {
		t.Fatalf("schema_version is already %d: the scenario is void", v)
	}
	h.Exec(t, `UPDATE schema_version SET version = $1`, v)
	t.Cleanup(func() { h.Exec(t, `UPDATE schema_version SET version = $1`, orig) })
}

// execMedicAnswering runs `medic exec` with answer on its standard input (the y/N prompt).
func execMedicAnswering(t *testing.T, cfg, answer string, args ...string) (string, int) {
	t.Helper()
	var out testbed.Buffer
	code := run(append([]string{"exec", "-c", cfg}, args...), strings.NewReader(answer), &out, &out)
	return out.String(), code
}

func TestSchemaOutsideTestedRange(t *testing.T) {
	tb := testbed.Get(t)
	p := testbed.StagePoisonedRoom(t, tb, 1)
	cfg := tb.MedicConfig(t, t.TempDir(), tb.HS1.UserID("medic"), tb.MedicPassword)
	if v := tb.HS1.Count(t, `SELECT version FROM schema_version`); v != 94 {
		t.Fatalf("the testbed's Synapse is at schema %d; this test (and medic's tested range) assume %s", v, testedSchema)
	}

	// On the tested schema, !version says so.
	out, code := execMedic(t, cfg, "!version")
	t.Logf("!version on the tested schema:\n%s", out)
	if code != 0 || !strings.Contains(out, "schema "+testedSchema) || !strings.Contains(out, "within the range") {
		t.Errorf("!version does not show Synapse's schema %s as tested (exit %d)", testedSchema, code)
	}

	// A later Synapse may add delta files under the same schema version: at 94 with a delta
	// 1.160 did not apply, the repairs refuse too, naming the delta.
	const newer = "94/99_medic_test_newer_synapse.sql"
	tb.HS1.Exec(t, `INSERT INTO applied_schema_deltas (version, file) VALUES (94, $1)`, newer)
	t.Cleanup(func() { tb.HS1.Exec(t, `DELETE FROM applied_schema_deltas WHERE file = $1`, newer) })
	out, code = execMedic(t, cfg, "--yes", "!undo zzzzzz")
	t.Logf("!undo at schema 94 with a newer delta:\n%s", out)
	if code == 0 || !strings.Contains(out, "Synapse's database is at schema 94 with 1 delta(s) this repair was not tested with ("+newer+")") {
		t.Errorf("!undo with an untested delta at schema 94 was not refused (exit %d)", code)
	}
	out, code = execMedic(t, cfg, "!version")
	if code != 0 || !strings.Contains(out, "⚠️ Synapse's database: schema 94") || !strings.Contains(out, newer) {
		t.Errorf("!version does not show the untested delta (exit %d):\n%s", code, out)
	}
	tb.HS1.Exec(t, `DELETE FROM applied_schema_deltas WHERE file = $1`, newer)

	setSchemaVersion(t, tb.HS1, 95)
	before := rejectionRows(t, tb.HS1)

	// A repair that writes Synapse's tables refuses, naming both versions and the way out.
	out, code = execMedic(t, cfg, "--yes", "!unreject "+p.Room.String())
	t.Logf("!unreject on schema 95:\n%s", out)
	if code == 0 {
		t.Errorf("!unreject on an untested schema exited 0")
	}
	for _, want := range []string{"Synapse's database is at schema 95", "tested on schema " + testedSchema + " (Synapse 1.160)", "--force-schema"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q", want)
		}
	}
	if jobIDPattern.MatchString(out) {
		t.Errorf("a plan was made on an untested schema without --force-schema")
	}
	if after := rejectionRows(t, tb.HS1); after != before {
		t.Errorf("the refused !unreject changed rows:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// !undo writes Synapse's tables too: refused before it even looks for the job.
	out, code = execMedic(t, cfg, "--yes", "!undo zzzzzz")
	t.Logf("!undo on schema 95:\n%s", out)
	if code == 0 || !strings.Contains(out, "Synapse's database is at schema 95") {
		t.Errorf("!undo on an untested schema was not refused (exit %d)", code)
	}

	// !undo takes --force-schema too: it then looks for the job (which changed nothing).
	out, code = execMedic(t, cfg, "--yes", "!undo zzzzzz --force-schema")
	t.Logf("!undo --force-schema on schema 95:\n%s", out)
	if code != 0 || !strings.Contains(out, "has no changed rows to restore") {
		t.Errorf("!undo --force-schema was not planned (exit %d)", code)
	}

	// Read-only commands work and say the schema is untested.
	out, code = execMedic(t, cfg, "!rejected "+p.Room.String())
	t.Logf("!rejected on schema 95:\n%s", out)
	if code != 0 || !strings.Contains(out, p.PowerLevels.String()) {
		t.Errorf("!rejected on an untested schema did not show the chain (exit %d)", code)
	}
	if !strings.Contains(out, "schema 95") {
		t.Errorf("!rejected does not say it ran on an untested schema")
	}
	out, code = execMedic(t, cfg, "!version")
	t.Logf("!version on schema 95:\n%s", out)
	if code != 0 || !strings.Contains(out, "schema 95") || !strings.Contains(out, "outside the range") {
		t.Errorf("!version does not show schema 95 as untested (exit %d)", code)
	}
	out, _ = execMedic(t, cfg, "!health synapse")
	t.Logf("!health synapse on schema 95:\n%s", out)
	if !strings.Contains(out, "schema 95") || !strings.Contains(out, "WARN") {
		t.Errorf("the health check does not warn about the untested schema")
	}
	// --force-schema: the plan is made, shows the untested schema as a risk, and runs when
	// approved. (Synapse 1.160 starts on a schema_version newer than its own, because the
	// database's schema_compat_version, 84, is one it understands: the restart works.)
	out, code = execMedicAnswering(t, cfg, "y\n", "!unreject "+p.Room.String()+" --force-schema")
	t.Logf("!unreject --force-schema on schema 95, approved:\n%s", out)
	if !jobIDPattern.MatchString(out) {
		t.Fatalf("--force-schema did not get a plan (exit %d)", code)
	}
	plan := out[jobIDPattern.FindStringIndex(out)[0]:]
	if !strings.Contains(plan, "⚠️") || !strings.Contains(plan, "schema 95") || !strings.Contains(plan, "--force-schema") {
		t.Errorf("the forced plan does not list the untested schema (95) as a risk")
	}
	if code != 0 {
		t.Errorf("the forced, approved !unreject exited %d", code)
	}
	if n := tb.HS1.Count(t, `SELECT count(*) FROM rejections WHERE event_id = ANY($1)`, p.ChainIDs); n != 0 {
		t.Errorf("after the forced !unreject %d events of the chain are still rejected", n)
	}
}

// TestTestedSchemaIsTheTestbeds: the range the repairs declare (recovery.TestedSchema) is the
// schema of the Synapse their tests run on, delta for delta. When the testbed's Synapse is
// upgraded this fails until the range is moved to what the tests then ran on.
func TestTestedSchemaIsTheTestbeds(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	db, err := synapse.OpenDB(ctx, tb.HS1.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	s, err := db.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := recovery.TestedSchema
	if s.Version != r.Max || !r.Covers(recovery.SchemaState(s)) {
		t.Errorf("the testbed is at %s; the repairs declare %s", s, r)
	}
	if !slices.Equal(s.DeltasAt(r.Max), r.MaxDeltas) {
		t.Errorf("deltas at %d: testbed %q, declared %q", r.Max, s.DeltasAt(r.Max), r.MaxDeltas)
	}
}
