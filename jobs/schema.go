package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
)

// SchemaRange is the span of Synapse database schema versions (Synapse's `schema_version`
// table) an operation that writes Synapse's tables directly was tested on. Synapse changes
// its tables between releases (new columns, new tables that must be kept consistent, tables
// that go away), so outside this span such an operation may write rows Synapse no longer
// reads the way medic expects: the manager refuses to plan it unless the admin forces it.
type SchemaRange struct {
	Min, Max int
	// Synapse names the release(s) the range was tested with, for messages ("Synapse 1.160").
	Synapse string
}

// Contains tells whether schema version v is in the range.
func (r SchemaRange) Contains(v int) bool { return v >= r.Min && v <= r.Max }

// IsZero tells whether no range is set.
func (r SchemaRange) IsZero() bool { return r == SchemaRange{} }

// String is "schema 94 (Synapse 1.160)" or "schema 88–92 (Synapse 1.158–1.160)".
func (r SchemaRange) String() string {
	s := fmt.Sprintf("schema %d", r.Min)
	if r.Max != r.Min {
		s = fmt.Sprintf("schema %d–%d", r.Min, r.Max)
	}
	if r.Synapse != "" {
		s += " (" + r.Synapse + ")"
	}
	return s
}

// Verdict says where schema version v stands against the range, in the words !version,
// health and the read-only commands put after "schema 95, ".
func (r SchemaRange) Verdict(v int) string {
	if r.Contains(v) {
		return fmt.Sprintf("within the range medic's repairs were tested on: %s", r)
	}
	return fmt.Sprintf("outside the range medic's repairs were tested on: %s. The repairs that write Synapse's tables "+
		"refuse without %s; read-only commands and health still run, but may misread what this version changed", r, ForceSchemaFlag)
}

// ForceSchemaFlag is the command flag that sets SchemaForce.ForceSchema.
const ForceSchemaFlag = "--force-schema"

// SchemaForce is embedded in the arguments of every operation that declares a SchemaRange:
// it carries --force-schema, so the override is part of the job's persisted arguments and
// holds for its approval and resume too. Register refuses an operation with a range whose
// arguments lack it.
type SchemaForce struct {
	ForceSchema bool `json:"force_schema,omitempty"`
}

// SchemaForced reports whether the admin asked to run outside the tested schema range.
func (f SchemaForce) SchemaForced() bool { return f.ForceSchema }

type schemaForcer interface{ SchemaForced() bool }

// SchemaError is the refusal of an operation on a schema outside its tested range.
type SchemaError struct {
	Version int
	Tested  SchemaRange
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("Synapse's database is at schema %d; this repair was tested on %s. Run with %s to proceed anyway",
		e.Version, e.Tested, ForceSchemaFlag)
}

// schemaGate checks, before op is planned (proposal, approval, resume), that Synapse's
// database is at a schema version op was tested on. Outside the range it refuses, unless the
// job's arguments force it; then it returns the risk the plan must show. It is read afresh
// each time, because Synapse may be upgraded while medic runs (between proposal and approval).
func (m *Manager) schemaGate(ctx context.Context, op operation, rawArgs json.RawMessage) (risk string, err error) {
	tested := op.schema()
	if tested == nil || m.SchemaVersion == nil {
		// No range: the operation goes through Synapse's APIs, which keep Synapse's tables
		// consistent on any version. No reader: no Synapse database is configured, and the
		// operations that write it refuse on their own.
		return "", nil
	}
	forced, err := op.forced(rawArgs)
	if err != nil {
		return "", err
	}
	v, err := m.SchemaVersion(ctx)
	if err != nil {
		if !forced {
			return "", fmt.Errorf("could not read Synapse's schema version, which this repair must check against the one it was tested on (%s): %w", tested, err)
		}
		m.log.Warn().Err(err).Str("kind", op.kind()).Msg("Schema version unreadable; planning anyway because of --force-schema")
		return fmt.Sprintf("Synapse's schema version could not be read (%s), so it was not checked against the one this repair was tested on (%s); it is planned anyway because of `%s`.",
			err, tested, ForceSchemaFlag), nil
	}
	if tested.Contains(v) {
		return "", nil
	}
	if !forced {
		m.log.Info().Str("kind", op.kind()).Int("schema_version", v).Int("tested_min", tested.Min).Int("tested_max", tested.Max).
			Msg("Refused a repair on an untested Synapse schema")
		return "", &SchemaError{Version: v, Tested: *tested}
	}
	m.log.Warn().Str("kind", op.kind()).Int("schema_version", v).Int("tested_min", tested.Min).Int("tested_max", tested.Max).
		Msg("Planning a repair on an untested Synapse schema because of --force-schema")
	return fmt.Sprintf("**Untested Synapse schema**: Synapse's database is at schema %d; this repair was tested on %s. "+
		"It is planned anyway because of `%s`: a table or column this version changed may be written wrongly or not at all. "+
		"Have a backup of Synapse's database; `%sundo` restores only the rows medic changed.", v, tested, ForceSchemaFlag, m.Prefix), nil
}

// plan computes op's plan behind the schema gate: refused outside the tested schema range,
// or, when forced there, with the untested schema first among the risks.
func (m *Manager) plan(ctx context.Context, op operation, rawArgs json.RawMessage) (*Plan, error) {
	risk, err := m.schemaGate(ctx, op, rawArgs)
	if err != nil {
		return nil, err
	}
	plan, err := op.plan(ctx, rawArgs)
	if err != nil || risk == "" || plan.Nothing != "" {
		return plan, err
	}
	plan.Risks = append([]string{risk}, plan.Risks...)
	return plan, nil
}

// checkSchemaArgs makes sure an operation with a schema range can be forced: its arguments
// must embed SchemaForce, or --force-schema would have nowhere to go.
func checkSchemaArgs[A any](kind string, r *SchemaRange) {
	if r == nil {
		return
	}
	if r.IsZero() || r.Min > r.Max {
		panic(fmt.Sprintf("jobs: operation %s declares an empty schema range %+v", kind, *r))
	}
	if _, ok := any(*new(A)).(schemaForcer); !ok {
		panic(fmt.Sprintf("jobs: operation %s declares a schema range but its arguments (%s) do not embed jobs.SchemaForce",
			kind, reflect.TypeFor[A]()))
	}
}
