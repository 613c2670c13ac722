package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
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
	// MaxDeltas, if set, are the delta files (applied_schema_deltas) at schema Max of the
	// Synapse tested. Synapse releases share a schema version until it is bumped, each adding
	// delta files under it (and changing tables with them): a database at Max with a delta not
	// listed here was brought there by a newer Synapse than the one tested.
	MaxDeltas []string
}

// SchemaState is Synapse's schema record as the range is checked against it.
type SchemaState struct {
	Version int
	// Deltas are the delta files applied at Version.
	Deltas []string
}

// Contains tells whether schema version v is in the range (the version alone).
func (r SchemaRange) Contains(v int) bool { return v >= r.Min && v <= r.Max }

// Covers tells whether the range covers st: its version is in the range and, at Max, it has
// no delta the tested Synapse did not have.
func (r SchemaRange) Covers(st SchemaState) bool {
	return r.Contains(st.Version) && len(r.NewDeltas(st)) == 0
}

// NewDeltas are st's delta files at Max that the tested Synapse did not apply (none when
// MaxDeltas is not set, or st is at another version).
func (r SchemaRange) NewDeltas(st SchemaState) []string {
	if st.Version != r.Max || r.MaxDeltas == nil {
		return nil
	}
	var out []string
	for _, d := range st.Deltas {
		if !slices.Contains(r.MaxDeltas, d) {
			out = append(out, d)
		}
	}
	return out
}

// IsZero tells whether no range is set.
func (r SchemaRange) IsZero() bool { return r.Min == 0 && r.Max == 0 }

// where says where st stands when the range does not cover it: "at schema 95" or "at schema
// 94 with 1 delta … was not tested with (94/09_x.sql)".
func (r SchemaRange) where(st SchemaState, subject string) string {
	if news := r.NewDeltas(st); len(news) > 0 && r.Contains(st.Version) {
		return fmt.Sprintf("at schema %d with %d delta(s) %s was not tested with (%s), applied by a newer Synapse than %s",
			st.Version, len(news), subject, strings.Join(news, ", "), r.synapse())
	}
	return fmt.Sprintf("at schema %d", st.Version)
}

func (r SchemaRange) synapse() string {
	if r.Synapse == "" {
		return "the one tested"
	}
	return r.Synapse
}

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

// Verdict says where st stands against the range, in the words !version, health and the
// read-only commands put after "schema 95, ".
func (r SchemaRange) Verdict(st SchemaState) string {
	if r.Covers(st) {
		return fmt.Sprintf("within the range medic's repairs were tested on: %s", r)
	}
	where := "outside the range medic's repairs were tested on"
	if news := r.NewDeltas(st); len(news) > 0 {
		where = fmt.Sprintf("with %d delta(s) medic's repairs were not tested with (%s), applied by a newer Synapse than %s",
			len(news), strings.Join(news, ", "), r.synapse())
	}
	return fmt.Sprintf("%s: %s. The repairs that write Synapse's tables refuse without %s; read-only commands and health "+
		"still run, but may misread what this version changed", where, r, ForceSchemaFlag)
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
	State  SchemaState
	Tested SchemaRange
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("Synapse's database is %s; this repair was tested on %s. Run with %s to proceed anyway",
		e.Tested.where(e.State, "this repair"), e.Tested, ForceSchemaFlag)
}

// withSchemaForced returns a job's persisted arguments with SchemaForce.ForceSchema set.
func withSchemaForced(raw json.RawMessage) (json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	fields["force_schema"] = json.RawMessage("true")
	return json.Marshal(fields)
}

// schemaGate checks, before op is planned (proposal, approval, resume), that Synapse's
// database is at a schema version op was tested on. Outside the range it refuses, unless the
// job's arguments force it; then it returns the risk the plan must show. It is read afresh
// each time, because Synapse may be upgraded while medic runs (between proposal and approval).
func (m *Manager) schemaGate(ctx context.Context, op operation, rawArgs json.RawMessage) (risk string, err error) {
	tested := op.schema()
	if tested == nil || m.Schema == nil {
		// No range: the operation goes through Synapse's APIs, which keep Synapse's tables
		// consistent on any version. No reader: no Synapse database is configured, and the
		// operations that write it refuse on their own.
		return "", nil
	}
	forced, err := op.forced(rawArgs)
	if err != nil {
		return "", err
	}
	st, err := m.Schema(ctx)
	if err != nil {
		if !forced {
			return "", fmt.Errorf("could not read Synapse's schema version, which this repair must check against the one it was tested on (%s): %w", tested, err)
		}
		m.log.Warn().Err(err).Str("kind", op.kind()).Msg("Schema version unreadable; planning anyway because of --force-schema")
		return fmt.Sprintf("Synapse's schema version could not be read (%s), so it was not checked against the one this repair was tested on (%s); it is planned anyway because of `%s`.",
			err, tested, ForceSchemaFlag), nil
	}
	if tested.Covers(st) {
		return "", nil
	}
	log := m.log.With().Str("kind", op.kind()).Int("schema_version", st.Version).Strs("new_deltas", tested.NewDeltas(st)).
		Int("tested_min", tested.Min).Int("tested_max", tested.Max).Logger()
	if !forced {
		log.Info().Msg("Refused a repair on an untested Synapse schema")
		return "", &SchemaError{State: st, Tested: *tested}
	}
	log.Warn().Msg("Planning a repair on an untested Synapse schema because of --force-schema")
	return fmt.Sprintf("**Untested Synapse schema**: Synapse's database is %s; this repair was tested on %s. "+
		"It is planned anyway because of `%s`: a table or column this version changed may be written wrongly or not at all. "+
		"Have a backup of Synapse's database; `%sundo` restores only the rows medic changed.",
		tested.where(st, "this repair"), tested, ForceSchemaFlag, m.Prefix), nil
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
