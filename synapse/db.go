package synapse

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is Synapse's PostgreSQL database.
type DB struct {
	Pool *pgxpool.Pool

	// journalReady is set once medic's journal schema is known to exist.
	journalReady atomic.Bool
}

// OpenDB connects to Synapse's database.
func OpenDB(ctx context.Context, dsn string) (*DB, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to Synapse's database: %w", err)
	}
	return &DB{Pool: pool}, nil
}

func (db *DB) Close() { db.Pool.Close() }
