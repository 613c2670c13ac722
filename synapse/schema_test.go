package synapse

import (
	"context"
	"slices"
	"testing"

	"github.com/synapse-medic/medic/testbed"
)

// TestSchemaOfTheTestbed reads the testbed's Synapse 1.160 database: schema 94, compat 84;
// the first connection reads it, and reading the same schema again is not reported again.
func TestSchemaOfTheTestbed(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	db, err := OpenDB(ctx, tb.HS1.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	var seen []int
	db.OnSchema(func(s *Schema) { seen = append(seen, s.Version) })
	// The pool's first connection reads the schema, whatever the query it was opened for:
	// a database that was down at start is logged as soon as it answers.
	if _, err = db.Pool.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int{94}) {
		t.Errorf("after the first connection OnSchema saw %v, want [94]", seen)
	}
	s, err := db.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != 94 || s.Compat != 84 {
		t.Errorf("schema %d, compat %d; want 94, 84 (Synapse 1.160)", s.Version, s.Compat)
	}
	if !slices.Contains(s.DeltasAt(94), "94/01_redactions_recheck.sql") || len(s.DeltasAt(93)) == 0 {
		t.Errorf("deltas at 94: %q; at 93: %q", s.DeltasAt(94), s.DeltasAt(93))
	}
	if _, err = db.Schema(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int{94}) {
		t.Errorf("OnSchema saw %v, want the first read only", seen)
	}
}

// TestSchemaWithoutCompatTable: an old Synapse database (before 1.55) has no
// schema_compat_version; the read still works, and a changed version is reported again.
func TestSchemaWithoutCompatTable(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	db, err := OpenDB(ctx, testbed.ScratchDB(t, tb.HS1, "schema_version", "applied_schema_deltas"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	for _, sql := range []string{
		`INSERT INTO schema_version (lock, version, upgraded) VALUES ('X', 68, false)`,
		`INSERT INTO applied_schema_deltas (version, file) VALUES (68, '68/02_b.sql'), (68, '68/01_a.sql'), (67, '67/01_x.sql')`,
	} {
		if _, err = db.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var seen []int
	db.OnSchema(func(s *Schema) { seen = append(seen, s.Version) })
	s, err := db.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != 68 || s.Upgraded || s.Compat != 0 || !slices.Equal(s.DeltasAt(68), []string{"68/01_a.sql", "68/02_b.sql"}) {
		t.Errorf("read %+v", s)
	}
	if got := s.String(); got != "schema 68 (2 deltas at 68)" {
		t.Errorf("String() = %q", got)
	}
	if _, err = db.Pool.Exec(ctx, `UPDATE schema_version SET version = 69`); err != nil {
		t.Fatal(err)
	}
	if _, err = db.Schema(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int{68, 69}) {
		t.Errorf("OnSchema saw %v, want 68 then 69", seen)
	}
}
