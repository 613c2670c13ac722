package synapse

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Synapse's own record of its schema (synapse/storage/prepare_database.py). schema_version
// and applied_schema_deltas exist in every Synapse database medic can work on;
// schema_compat_version only since Synapse 1.55, so its presence is asked first
// (to_regclass answers NULL instead of failing the query).
const (
	schemaVersionQuery       = `SELECT version, upgraded FROM schema_version`
	schemaCompatExistsQuery  = `SELECT to_regclass('schema_compat_version') IS NOT NULL`
	schemaCompatVersionQuery = `SELECT compat_version FROM schema_compat_version`
	// applied_schema_deltas holds a few hundred rows at most (one per delta file).
	appliedSchemaDeltasQuery = `SELECT version, file FROM applied_schema_deltas ORDER BY version, file`
)

// Schema is what Synapse's database says of its own schema.
type Schema struct {
	// Version is schema_version.version: the schema the database was last brought to by a
	// Synapse (94 for Synapse 1.160). Several releases may share one version: each release
	// adds delta files under the current version's directory until the version is bumped.
	Version int
	// Upgraded is schema_version.upgraded: false when the database was created at Version
	// from a full schema dump rather than brought there by deltas.
	Upgraded bool
	// Compat is schema_compat_version.compat_version: the oldest schema a Synapse must
	// understand to run on this database (0 when the table does not exist).
	Compat int
	// Deltas are the applied delta files (applied_schema_deltas), by version, each sorted.
	Deltas map[int][]string
}

// DeltasAt returns the delta files applied at schema version v ("94/01_redactions_recheck.sql").
func (s *Schema) DeltasAt(v int) []string { return s.Deltas[v] }

// String is "schema 94 (compat 84, 13 deltas at 94)".
func (s *Schema) String() string {
	out := fmt.Sprintf("schema %d (", s.Version)
	if s.Compat > 0 {
		out += fmt.Sprintf("compat %d, ", s.Compat)
	}
	return out + fmt.Sprintf("%d deltas at %d)", len(s.DeltasAt(s.Version)), s.Version)
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readSchema reads Synapse's schema record with q (the pool, or a transaction in tests).
func readSchema(ctx context.Context, q querier) (*Schema, error) {
	s := &Schema{Deltas: map[int][]string{}}
	if err := q.QueryRow(ctx, schemaVersionQuery).Scan(&s.Version, &s.Upgraded); err != nil {
		return nil, fmt.Errorf("read Synapse's schema_version: %w", err)
	}
	var hasCompat bool
	if err := q.QueryRow(ctx, schemaCompatExistsQuery).Scan(&hasCompat); err != nil {
		return nil, fmt.Errorf("look for Synapse's schema_compat_version: %w", err)
	}
	if hasCompat {
		if err := q.QueryRow(ctx, schemaCompatVersionQuery).Scan(&s.Compat); err != nil && err != pgx.ErrNoRows {
			return nil, fmt.Errorf("read Synapse's schema_compat_version: %w", err)
		}
	}
	rows, err := q.Query(ctx, appliedSchemaDeltasQuery)
	if err != nil {
		return nil, fmt.Errorf("read Synapse's applied_schema_deltas: %w", err)
	}
	var v int
	var file string
	if _, err = pgx.ForEachRow(rows, []any{&v, &file}, func() error {
		s.Deltas[v] = append(s.Deltas[v], file)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read Synapse's applied_schema_deltas: %w", err)
	}
	for _, files := range s.Deltas {
		slices.Sort(files)
	}
	return s, nil
}

// Schema reads Synapse's schema record now. It is read again at every call, not cached:
// Synapse may be upgraded (and migrate its database) while medic keeps running, and a repair
// must be checked against the schema it is about to write. The first successful read, and
// every read that finds a different schema than the one before, is handed to OnSchema.
func (db *DB) Schema(ctx context.Context) (*Schema, error) {
	s, err := readSchema(ctx, db.Pool)
	if err != nil {
		return nil, err
	}
	db.observe(s)
	return s, nil
}

// observe records a read of the schema and tells the OnSchema hook when it is the first or
// differs from the last.
func (db *DB) observe(s *Schema) {
	db.schemaMu.Lock()
	changed := db.schemaSeen == nil || db.schemaSeen.Version != s.Version || db.schemaSeen.Compat != s.Compat ||
		!slices.Equal(db.schemaSeen.DeltasAt(s.Version), s.DeltasAt(s.Version))
	if changed {
		db.schemaSeen = s
	}
	hook := db.onSchema
	db.schemaMu.Unlock()
	if changed && hook != nil {
		hook(s)
	}
}
