// Package storetest gives unit tests a fresh medic store.
package storetest

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/synapse-medic/medic/config"
	"github.com/synapse-medic/medic/store"
)

// Open opens a fresh store (SQLite, the default) in a temporary data directory, closed when
// the test ends, and returns it with the config naming that directory.
func Open(t testing.TB) (*store.Store, *config.Config) {
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
	return st, cfg
}
