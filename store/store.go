// Package store is medic's own database: which rooms are admin rooms and small state the bot
// keeps between runs. SQLite by default, PostgreSQL optional (go.mau.fi/util/dbutil).
//
// It is not Synapse's database; that one is in package synapse.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for database.type: postgres
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // "sqlite3-fk-wal" driver
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/store/upgrades"
)

const (
	addAdminRoomQuery = `
		INSERT INTO admin_room (room_id, invited_by, added_at) VALUES ($1, $2, $3)
		ON CONFLICT (room_id) DO NOTHING`
	getAdminRoomsQuery   = `SELECT room_id, invited_by, added_at FROM admin_room ORDER BY added_at, room_id`
	removeAdminRoomQuery = `DELETE FROM admin_room WHERE room_id = $1`
	getKVQuery           = `SELECT value FROM kv WHERE key = $1`
	setKVQuery           = `
		INSERT INTO kv (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`
)

// Keys of values kept in the kv table.
const (
	// KeyAccessToken is the bot's current access token, so `medic exec` on the same host can
	// call the admin API without creating another device.
	KeyAccessToken = "access_token"
	KeyDeviceID    = "device_id"
	// KeyTerminalToken is the token `medic exec` logged in for, as device MEDIC_TERMINAL.
	KeyTerminalToken = "terminal_access_token"
)

// Store wraps the bot's database. DB is shared with the crypto helper, which keeps its own
// tables and version table in the same file.
type Store struct {
	DB *dbutil.Database
}

// Open connects to the bot's database and brings its schema up to date.
func Open(ctx context.Context, cfg dbutil.Config, log zerolog.Logger) (*Store, error) {
	if cfg.Type == "postgres" {
		cfg.Type = "pgx"
	}
	db, err := dbutil.NewFromConfig("medic", cfg, dbutil.ZeroLogger(log))
	if err != nil {
		return nil, fmt.Errorf("open bot database: %w", err)
	}
	medicDB := db.Child("medic_version", upgrades.Table, dbutil.ZeroLogger(log))
	if err = medicDB.Upgrade(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("upgrade bot database: %w", err)
	}
	return &Store{DB: medicDB}, nil
}

func (s *Store) Close() error { return s.DB.Close() }

// AddAdminRoom records a room adopted as an admin room.
func (s *Store) AddAdminRoom(ctx context.Context, roomID id.RoomID, invitedBy id.UserID) error {
	_, err := s.DB.Exec(ctx, addAdminRoomQuery, roomID, invitedBy, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("add admin room %s: %w", roomID, err)
	}
	return nil
}

// AdoptedRoom is an admin room medic joined on an admin's invite.
type AdoptedRoom struct {
	RoomID    id.RoomID
	InvitedBy id.UserID
	AddedAt   time.Time
}

// AdoptedRooms lists adopted admin rooms, oldest first.
func (s *Store) AdoptedRooms(ctx context.Context) ([]AdoptedRoom, error) {
	rows, err := s.DB.Query(ctx, getAdminRoomsQuery)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (r AdoptedRoom, err error) {
		var ms int64
		err = row.Scan(&r.RoomID, &r.InvitedBy, &ms)
		r.AddedAt = time.UnixMilli(ms)
		return
	}, err).AsList()
}

// AdminRooms lists the IDs of adopted admin rooms.
func (s *Store) AdminRooms(ctx context.Context) ([]id.RoomID, error) {
	rooms, err := s.AdoptedRooms(ctx)
	ids := make([]id.RoomID, len(rooms))
	for i, r := range rooms {
		ids[i] = r.RoomID
	}
	return ids, err
}

// RemoveAdminRoom forgets an adopted admin room; it reports whether the room was one.
func (s *Store) RemoveAdminRoom(ctx context.Context, roomID id.RoomID) (bool, error) {
	res, err := s.DB.Exec(ctx, removeAdminRoomQuery, roomID)
	if err != nil {
		return false, fmt.Errorf("remove admin room %s: %w", roomID, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// Get returns a stored value, or "" when the key is unset.
func (s *Store) Get(ctx context.Context, key string) (string, error) {
	var v string
	err := s.DB.QueryRow(ctx, getKVQuery, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("get %s: %w", key, err)
	}
	return v, nil
}

// Set stores a value.
func (s *Store) Set(ctx context.Context, key, value string) error {
	if _, err := s.DB.Exec(ctx, setKVQuery, key, value); err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	return nil
}
