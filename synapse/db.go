// Package synapse is medic's door to Synapse's PostgreSQL database: the connection, every
// query as a named SQL constant, and intent-level reads (rooms, memberships, rejected
// events, health figures). Its subpackages: adminapi (the admin API), journal (journaled
// changes and exact undo), importer (history import and its source readers).
package synapse

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is Synapse's PostgreSQL database.
type DB struct {
	Pool *pgxpool.Pool

	schemaMu   sync.Mutex
	schemaSeen *Schema
	onSchema   func(*Schema)
}

// OpenDB connects to Synapse's database. The pool connects lazily; its first connection
// that succeeds also reads Synapse's schema (DB.OnSchema), so a database that was down when
// medic started has its schema read (and logged) as soon as it answers.
func OpenDB(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to Synapse's database: %w", err)
	}
	// Named, so that the aftercare can tell medic's sessions from Synapse's (OtherSessions).
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = ApplicationName
	}
	db := &DB{}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		db.schemaMu.Lock()
		seen := db.schemaSeen != nil
		db.schemaMu.Unlock()
		if !seen {
			// A failed read must not fail the connection: a database without Synapse's
			// schema tables (a scratch copy) is still one medic can query.
			if s, err := readSchema(ctx, conn); err == nil {
				db.observe(s)
			}
		}
		return nil
	}
	if db.Pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("connect to Synapse's database: %w", err)
	}
	return db, nil
}

// OnSchema sets f to be told Synapse's schema the first time it is read, and again when it
// changed (Synapse upgraded while medic runs): medic logs it. Set it before the pool is used.
func (db *DB) OnSchema(f func(*Schema)) {
	db.schemaMu.Lock()
	defer db.schemaMu.Unlock()
	db.onSchema = f
}

func (db *DB) Close() { db.Pool.Close() }
