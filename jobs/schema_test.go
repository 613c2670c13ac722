package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/synapse-medic/medic/store"
)

func TestSchemaRange(t *testing.T) {
	r := SchemaRange{Min: 88, Max: 92, Synapse: "Synapse 1.160"}
	for v, want := range map[int]bool{87: false, 88: true, 90: true, 92: true, 93: false, 0: false} {
		if got := r.Contains(v); got != want {
			t.Errorf("%s contains %d = %v, want %v", r, v, got, want)
		}
	}
	if got := r.String(); got != "schema 88–92 (Synapse 1.160)" {
		t.Errorf("String() = %q", got)
	}
	one := SchemaRange{Min: 94, Max: 94, Synapse: "Synapse 1.160"}
	if got := one.String(); got != "schema 94 (Synapse 1.160)" {
		t.Errorf("String() = %q", got)
	}
	if !one.Contains(94) || one.Contains(93) || one.Contains(95) {
		t.Errorf("%s: wrong membership", one)
	}
	err := (&SchemaError{State: SchemaState{Version: 93}, Tested: r}).Error()
	if err != "Synapse's database is at schema 93; this repair was tested on schema 88–92 (Synapse 1.160). Run with --force-schema to proceed anyway" {
		t.Errorf("refusal: %q", err)
	}
}

type schemaArgs struct {
	SchemaForce
	Steps []string `json:"steps"`
}

// schemaFixture is a manager with an operation tested on schema 94 and a Synapse whose
// schema version the test sets.
type schemaFixture struct {
	*fixture
	op      *Operation[schemaArgs, struct{}]
	mu      sync.Mutex
	version int
	deltas  []string
	readErr error
	ran     []string
}

func newSchemaFixture(t *testing.T) *schemaFixture {
	f := &schemaFixture{fixture: newFixture(t, 1, "15m"), version: 94}
	f.op = &Operation[schemaArgs, struct{}]{
		Kind:   "test.schema",
		Schema: &SchemaRange{Min: 94, Max: 94, Synapse: "Synapse 1.160", MaxDeltas: []string{"94/01_a.sql", "94/02_b.sql"}},
		Plan: func(_ context.Context, args schemaArgs) (*Plan, error) {
			return &Plan{Title: "write Synapse's tables", Changes: []string{"rows"}, Risks: []string{"the op's own risk"}, Steps: args.Steps}, nil
		},
		Step: func(_ context.Context, s *Step[schemaArgs, struct{}]) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.ran = append(f.ran, s.Name)
			if s.Name == "fail" {
				return errors.New("boom")
			}
			return nil
		},
	}
	f.m.Register(f.op)
	f.m.Schema = func(context.Context) (SchemaState, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return SchemaState{Version: f.version, Deltas: f.deltas}, f.readErr
	}
	return f
}

func (f *schemaFixture) set(v int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version, f.readErr = v, err
}

func (f *schemaFixture) propose(force bool, steps ...string) (*store.Job, error) {
	return f.m.Propose(context.Background(), f.alice, f.op.With(schemaArgs{SchemaForce: SchemaForce{ForceSchema: force}, Steps: steps}))
}

func TestSchemaGateRefusesOutsideTheRange(t *testing.T) {
	for _, v := range []int{93, 95} {
		f := newSchemaFixture(t)
		f.set(v, nil)
		job, err := f.propose(false, "a")
		var se *SchemaError
		if !errors.As(err, &se) || se.State.Version != v || job != nil {
			t.Fatalf("schema %d: propose = %v, %v; want a SchemaError", v, job, err)
		}
		if len(f.n.prompts) != 0 || len(f.ran) != 0 {
			t.Errorf("schema %d: prompted %d time(s), ran %v", v, len(f.n.prompts), f.ran)
		}
		if list, _ := f.st.RecentJobs(context.Background(), 10); len(list) != 0 {
			t.Errorf("schema %d: a refused plan left %d job(s)", v, len(list))
		}
	}
}

// Deltas: releases share a schema version until it is bumped. A database at the tested
// version with a delta the tested Synapse did not apply is newer than tested; one with fewer
// (an older release of the same version) or at a lower version in range is judged by version.
func TestSchemaRangeDeltas(t *testing.T) {
	r := SchemaRange{Min: 93, Max: 94, Synapse: "Synapse 1.160", MaxDeltas: []string{"94/01_a.sql", "94/02_b.sql"}}
	for _, tc := range []struct {
		st   SchemaState
		want bool
		news []string
	}{
		{SchemaState{94, []string{"94/01_a.sql", "94/02_b.sql"}}, true, nil},
		{SchemaState{94, []string{"94/01_a.sql"}}, true, nil},
		{SchemaState{94, []string{"94/01_a.sql", "94/02_b.sql", "94/03_c.sql"}}, false, []string{"94/03_c.sql"}},
		{SchemaState{93, []string{"93/09_new_to_us.sql"}}, true, nil},
		{SchemaState{95, nil}, false, nil},
	} {
		if got := r.Covers(tc.st); got != tc.want {
			t.Errorf("%+v: covered = %v, want %v", tc.st, got, tc.want)
		}
		if got := r.NewDeltas(tc.st); strings.Join(got, ",") != strings.Join(tc.news, ",") {
			t.Errorf("%+v: new deltas %q, want %q", tc.st, got, tc.news)
		}
	}
	newer := SchemaState{94, []string{"94/01_a.sql", "94/02_b.sql", "94/03_c.sql"}}
	if err := (&SchemaError{State: newer, Tested: r}).Error(); !strings.Contains(err, "at schema 94 with 1 delta(s) this repair was not tested with (94/03_c.sql)") ||
		!strings.Contains(err, "newer Synapse than Synapse 1.160") || !strings.Contains(err, ForceSchemaFlag) {
		t.Errorf("refusal: %q", err)
	}
	if v := r.Verdict(newer); !strings.HasPrefix(v, "with 1 delta(s) medic's repairs were not tested with (94/03_c.sql)") {
		t.Errorf("verdict: %q", v)
	}
	if v := r.Verdict(SchemaState{Version: 93}); !strings.HasPrefix(v, "within the range") {
		t.Errorf("verdict: %q", v)
	}
	if v := r.Verdict(SchemaState{Version: 92}); !strings.HasPrefix(v, "outside the range medic's repairs were tested on: schema 93–94 (Synapse 1.160).") {
		t.Errorf("verdict: %q", v)
	}
}

func TestSchemaGateRefusesNewDeltas(t *testing.T) {
	f := newSchemaFixture(t)
	f.set(94, nil)
	f.mu.Lock()
	f.deltas = []string{"94/01_a.sql", "94/02_b.sql", "94/03_c.sql"}
	f.mu.Unlock()
	if _, err := f.propose(false, "a"); err == nil || !strings.Contains(err.Error(), "94/03_c.sql") {
		t.Fatalf("new delta at the tested version: %v", err)
	}
	job, err := f.propose(true, "a")
	if err != nil || job == nil || !strings.Contains(ParsePlan(job.Plan).Risks[0], "94/03_c.sql") {
		t.Fatalf("forced: %v, %v", job, err)
	}
}

func TestSchemaGateInRangeAddsNoRisk(t *testing.T) {
	f := newSchemaFixture(t)
	job, err := f.propose(true, "a") // forcing in range changes nothing
	if err != nil || job == nil {
		t.Fatalf("propose: %v, %v", job, err)
	}
	if p := f.n.prompts[0]; strings.Contains(p, "schema") || !strings.Contains(p, "the op's own risk") {
		t.Errorf("plan on the tested schema: %s", p)
	}
}

func TestSchemaGateForcedShowsTheRiskAndRuns(t *testing.T) {
	f := newSchemaFixture(t)
	f.set(95, nil)
	job, err := f.propose(true, "a")
	if err != nil || job == nil {
		t.Fatalf("propose with --force-schema: %v, %v", job, err)
	}
	plan := ParsePlan(job.Plan)
	if len(plan.Risks) != 2 || !strings.Contains(plan.Risks[0], "schema 95") || !strings.Contains(plan.Risks[0], "schema 94 (Synapse 1.160)") ||
		!strings.Contains(plan.Risks[0], ForceSchemaFlag) || plan.Risks[1] != "the op's own risk" {
		t.Fatalf("risks of the forced plan: %q", plan.Risks)
	}
	if !strings.Contains(f.n.prompts[0], "⚠️ **Untested Synapse schema**") {
		t.Errorf("the prompt does not show the risk: %s", f.n.prompts[0])
	}
	// The flag is in the job's arguments: the approval's re-plan is forced too.
	f.approve(t, f.alice, job.ID)
	if j, _ := f.n.lastReport(t); j.State != store.JobDone || len(f.ran) != 1 {
		t.Fatalf("forced job: %s, ran %v", j.State, f.ran)
	}
}

func TestSchemaGateUnreadableVersion(t *testing.T) {
	f := newSchemaFixture(t)
	f.set(0, errors.New("connection refused"))
	if _, err := f.propose(false, "a"); err == nil || !strings.Contains(err.Error(), "could not read Synapse's schema version") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("unreadable version: %v", err)
	}
	job, err := f.propose(true, "a")
	if err != nil || job == nil || !strings.Contains(ParsePlan(job.Plan).Risks[0], "could not be read") {
		t.Fatalf("forced with an unreadable version: %v, %v", job, err)
	}
}

// Synapse upgraded between the proposal and the approval: nothing runs.
func TestSchemaGateAtApproval(t *testing.T) {
	f := newSchemaFixture(t)
	job, err := f.propose(false, "a")
	if err != nil || job == nil {
		t.Fatalf("propose: %v, %v", job, err)
	}
	f.set(95, nil)
	_, err = f.m.Approve(context.Background(), f.alice, job.ID)
	var se *SchemaError
	if !errors.As(err, &se) || se.State.Version != 95 {
		t.Fatalf("approval after an upgrade: %v", err)
	}
	if f.state(t, job.ID) != store.JobAwaiting || len(f.ran) != 0 {
		t.Fatalf("after the refused approval: %s, ran %v", f.state(t, job.ID), f.ran)
	}
}

// A resumed job whose first step finished is not re-planned; its remaining steps still
// write Synapse's tables, so the gate holds there too.
func TestSchemaGateAtResume(t *testing.T) {
	f := newSchemaFixture(t)
	job, err := f.propose(false, "a", "fail")
	if err != nil || job == nil {
		t.Fatalf("propose: %v, %v", job, err)
	}
	f.approve(t, f.alice, job.ID)
	if j, _ := f.n.lastReport(t); j.State != store.JobFailed {
		t.Fatalf("state %s, want failed", j.State)
	}
	f.set(95, nil)
	_, err = f.m.Resume(context.Background(), f.alice, job.ID)
	var se *SchemaError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "was not resumed") {
		t.Fatalf("resume after an upgrade: %v", err)
	}
	if f.state(t, job.ID) != store.JobFailed || len(f.ran) != 2 {
		t.Fatalf("after the refused resume: %s, ran %v", f.state(t, job.ID), f.ran)
	}
}

// !resume <job> --force-schema: the job resumes on the untested schema, and its stored
// arguments stay as they were proposed.
func TestSchemaGateResumeForced(t *testing.T) {
	f := newSchemaFixture(t)
	job, err := f.propose(false, "a", "fail", "c")
	if err != nil || job == nil {
		t.Fatalf("propose: %v, %v", job, err)
	}
	f.approve(t, f.alice, job.ID)
	if j, _ := f.n.lastReport(t); j.State != store.JobFailed {
		t.Fatalf("state %s, want failed", j.State)
	}
	f.set(95, nil)
	f.op.Step = func(_ context.Context, s *Step[schemaArgs, struct{}]) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.ran = append(f.ran, s.Name)
		return nil
	}
	if _, err = f.m.ResumeWith(context.Background(), f.alice, job.ID, true); err != nil {
		t.Fatalf("forced resume: %v", err)
	}
	if j, _ := f.n.lastReport(t); j.State != store.JobDone || strings.Join(f.ran, ",") != "a,fail,fail,c" {
		t.Fatalf("forced resume: %s, ran %v", j.State, f.ran)
	}
	trail, _ := f.st.AuditTrail(context.Background(), job.ID)
	found := false
	for _, e := range trail {
		found = found || strings.Contains(e.What, "resumed with --force-schema")
	}
	if !found {
		t.Errorf("the audit trail does not say the resume was forced")
	}
	if j, _ := f.st.GetJob(context.Background(), job.ID); strings.Contains(j.Args, "force_schema") {
		t.Errorf("the stored arguments changed: %s", j.Args)
	}
	// A job whose operation has no range cannot be forced.
	other := f.fixture.propose(t, f.seq, "x")
	if _, err = f.m.ResumeWith(context.Background(), f.alice, other.ID, true); err == nil || !strings.Contains(err.Error(), "does not write Synapse's tables") {
		t.Errorf("forcing the schema of a job without range: %v", err)
	}
}

func TestWithSchemaForced(t *testing.T) {
	raw, err := withSchemaForced([]byte(`{"steps":["a"]}`))
	var args schemaArgs
	if err != nil || json.Unmarshal(raw, &args) != nil || !args.SchemaForced() || len(args.Steps) != 1 {
		t.Fatalf("withSchemaForced: %s, %v", raw, err)
	}
}

// Operations without a range (those that go through Synapse's APIs) plan on any schema.
func TestSchemaGateIgnoresOperationsWithoutRange(t *testing.T) {
	f := newSchemaFixture(t)
	f.set(120, nil)
	f.fixture.propose(t, f.seq, "a")
}

func TestRegisterRefusesUnforceableRange(t *testing.T) {
	f := newFixture(t, 1, "15m")
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "do not embed jobs.SchemaForce") {
			t.Fatalf("panic = %v", p)
		}
	}()
	op := f.w.op("test.noforce", Sequential)
	op.Schema = &SchemaRange{Min: 94, Max: 94}
	f.m.Register(op)
}
