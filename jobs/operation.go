package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// Order is how an operation's steps depend on each other.
type Order struct {
	parallel  int
	lastAfter bool
}

// Sequential steps run one after another and the job stops at the first failed step: a step
// builds on the ones before it (no restart after a failed transaction, no chunk after a
// failed chunk).
var Sequential = Order{}

// Parallel steps are independent: up to n run at once, and a failed step does not stop the
// others; the report lists the failures.
func Parallel(n int) Order { return Order{parallel: max(n, 1)} }

// ParallelThenLast is Parallel for every step but the last, which runs once all the others
// ended (e.g. a report on what they did).
func ParallelThenLast(n int) Order { return Order{parallel: max(n, 1), lastAfter: true} }

func (o Order) workers() int { return max(o.parallel, 1) }

// StopsOnFailure tells whether a failed step ends the run.
func (o Order) StopsOnFailure() bool { return o.parallel == 0 }

// Operation is one kind of change medic can make, with arguments A (what the admin asked
// for, persisted with the job) and plan data D (what the plan hands its steps).
type Operation[A, D any] struct {
	// Kind names the operation in medic's store, so a job can be approved or resumed by a
	// later process. Nothing looks an operation up by it to propose one.
	Kind string
	// Plan computes the dry-run plan. It must not change anything. The plan's Data, if any,
	// is Encode(D).
	Plan func(ctx context.Context, args A) (*Plan, error)
	// Step performs one step. A step either completes or leaves nothing behind (one
	// transaction), and must be safe to run again if it completed but was not recorded.
	Step func(ctx context.Context, s *Step[A, D]) error
	// Order says how steps depend on each other (default Sequential).
	Order Order
	// Finish, if set, runs when a run of the job ends, to release what steps held between
	// them (e.g. an import's source connection). state is done, failed or cancelled.
	Finish func(ctx context.Context, jobID, state string)
	// Summary, if set, gives a line (Markdown) the report shows after a run: what the run's
	// steps came to beyond done/failed (e.g. how many users joined, and how).
	Summary func(jobID string) string
	// RestartsSynapse says the operation changes rows Synapse caches, so its jobs restart
	// Synapse after the change, and undoing one of them must restart Synapse too
	// (Manager.RestartsSynapse).
	RestartsSynapse bool
	// Schema is the span of Synapse schema versions the operation was tested on. Set it on
	// every operation that writes Synapse's tables directly (then A must embed SchemaForce):
	// outside the span the manager refuses to plan it unless --force-schema is given. nil
	// for operations that change Synapse only through its APIs, which work on any version.
	Schema *SchemaRange
}

// Step is what a step of job Job gets: its index and name, the job's arguments and plan
// data, and a way to speak.
type Step[A, D any] struct {
	Job  string
	Idx  int
	Name string
	Args A
	Data D
	// Retry is set when the step failed or was cut off in an earlier run of the job.
	Retry bool
	Reporter
}

// Reporter lets a running step speak: Note adds a line to the job's report, Say tells the
// requester right away (e.g. "restart Synapse now").
type Reporter interface {
	Note(format string, args ...any)
	Say(format string, args ...any)
}

// With binds arguments to the operation: what Manager.Propose takes.
func (op *Operation[A, D]) With(args A) Request {
	return Request{op: op, args: args}
}

// Request is an operation with its arguments, ready to be planned.
type Request struct {
	op   operation
	args any
}

// operation is what the manager needs of an Operation[A, D], with arguments and plan data
// in their persisted (JSON) form.
type operation interface {
	kind() string
	order() Order
	plan(ctx context.Context, args json.RawMessage) (*Plan, error)
	step(ctx context.Context, job string, idx int, args json.RawMessage, plan *Plan, retry bool, rep Reporter) error
	finish(ctx context.Context, jobID, state string)
	summary(jobID string) string
	restartsSynapse() bool
	schema() *SchemaRange
	forced(args json.RawMessage) (bool, error)
	checkSchema()
}

func (op *Operation[A, D]) kind() string          { return op.Kind }
func (op *Operation[A, D]) order() Order          { return op.Order }
func (op *Operation[A, D]) restartsSynapse() bool { return op.RestartsSynapse }
func (op *Operation[A, D]) schema() *SchemaRange  { return op.Schema }
func (op *Operation[A, D]) checkSchema()          { checkSchemaArgs[A](op.Kind, op.Schema) }

// forced tells whether the job's arguments carry --force-schema (SchemaForce).
func (op *Operation[A, D]) forced(raw json.RawMessage) (bool, error) {
	var args A
	if err := json.Unmarshal(raw, &args); err != nil {
		return false, fmt.Errorf("arguments of %s: %w", op.Kind, err)
	}
	f, ok := any(args).(schemaForcer)
	return ok && f.SchemaForced(), nil
}

func (op *Operation[A, D]) plan(ctx context.Context, raw json.RawMessage) (*Plan, error) {
	var args A
	if err := json.Unmarshal(raw, &args); err != nil {
		return nil, fmt.Errorf("arguments of %s: %w", op.Kind, err)
	}
	return op.Plan(ctx, args)
}

func (op *Operation[A, D]) step(ctx context.Context, job string, idx int, raw json.RawMessage, plan *Plan, retry bool, rep Reporter) error {
	s := &Step[A, D]{Job: job, Idx: idx, Name: plan.Steps[idx], Retry: retry, Reporter: rep}
	if err := json.Unmarshal(raw, &s.Args); err != nil {
		return fmt.Errorf("arguments of %s: %w", op.Kind, err)
	}
	if len(plan.Data) > 0 {
		if err := json.Unmarshal(plan.Data, &s.Data); err != nil {
			return fmt.Errorf("plan data of %s: %w", op.Kind, err)
		}
	}
	return op.Step(ctx, s)
}

func (op *Operation[A, D]) summary(jobID string) string {
	if op.Summary == nil {
		return ""
	}
	return op.Summary(jobID)
}

func (op *Operation[A, D]) finish(ctx context.Context, jobID, state string) {
	if op.Finish != nil {
		op.Finish(ctx, jobID, state)
	}
}

// RunStep runs one step of op outside a manager (benchmarks), with notes going to note.
func RunStep[A, D any](ctx context.Context, op *Operation[A, D], job string, args A, plan *Plan, idx int, note func(string)) error {
	raw, err := json.Marshal(args)
	if err != nil {
		return err
	}
	return op.step(ctx, job, idx, raw, plan, false, &collector{say: note})
}

// collector gathers a run's notes and passes Say on to the requester.
type collector struct {
	mu    sync.Mutex
	notes []string
	say   func(string)
}

func (c *collector) Note(format string, args ...any) {
	c.mu.Lock()
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *collector) Say(format string, args ...any) {
	if c.say != nil {
		c.say(fmt.Sprintf(format, args...))
	}
}
