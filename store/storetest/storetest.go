// Package storetest opens a fresh medic store for unit tests: the default SQLite database in
// a temporary data directory, as `data_dir` alone configures it.
package storetest

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
)

// Open returns the config for a temporary data directory and a store opened from it, closed
// when the test ends.
func Open(t testing.TB) (*config.Config, *store.Store) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse([]byte("data_dir: "+dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), cfg.Database, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return cfg, st
}
