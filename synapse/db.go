// Package synapse is medic's door to Synapse's PostgreSQL database: the connection, every
// query as a named SQL constant, and intent-level reads (rooms, memberships, rejected
// events, health figures). Its subpackages: adminapi (the admin API), journal (journaled
// changes and exact undo), importer (history import and its source readers).
package synapse

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is Synapse's PostgreSQL database.
type DB struct {
	Pool *pgxpool.Pool
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
