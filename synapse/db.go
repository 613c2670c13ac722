// Package synapse is medic's door to Synapse's PostgreSQL database: the connection, every
// query as a named SQL constant, and intent-level reads (rooms, memberships, rejected
// events, health figures). Its subpackages: adminapi (the admin API), journal (journaled
// changes and exact undo), importer (history import and its source readers).
package synapse

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is Synapse's PostgreSQL database.
type DB struct {
	Pool *pgxpool.Pool
	// OnSchema, if set, is told Synapse's schema the first time Schema reads it, and again
	// when it changed (Synapse upgraded while medic runs): medic logs it. The connection is
	// lazy, so the first read may come long after the start, when the database first answers.
	OnSchema func(*Schema)

	schemaMu   sync.Mutex
	schemaSeen *Schema
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
