package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"

	"github.com/synapse-medic/medic/proc"
)

const (
	beginMintQuery   = `INSERT INTO minted_token (id, user_id, job_id, minted_by, minted_at) VALUES ($1, $2, $3, $4, $5)`
	setMintedQuery   = `UPDATE minted_token SET token = $2 WHERE id = $1`
	deleteMintQuery  = `DELETE FROM minted_token WHERE id = $1`
	allMintedQuery   = `SELECT id, token, user_id, job_id, minted_by, minted_at FROM minted_token`
	countMintedQuery = `SELECT count(*) FROM minted_token`
)

// MintedToken is a login-as-user token a medic process is minting, or minted and has not
// logged out yet.
type MintedToken struct {
	ID     string // the record, written before the mint
	Token  string // "" while the mint is under way (or if the process died during it)
	UserID string
	JobID  string
	// By is the minting process; the zero ID for records from before processes were named.
	By       proc.ID
	MintedAt time.Time
}

// BeginMint records, before Synapse is asked, that process by is minting a token for userID,
// and returns the record's ID. So a medic starting meanwhile sees that a live process may
// hold a token of that user that is not recorded yet.
func (s *Store) BeginMint(ctx context.Context, userID, jobID string, by proc.ID) (string, error) {
	recID := random.String(16)
	if _, err := s.DB.Exec(ctx, beginMintQuery, recID, userID, jobID, by.String(), time.Now().UnixMilli()); err != nil {
		return "", fmt.Errorf("record token mint: %w", err)
	}
	return recID, nil
}

// SetMinted records the token a mint got, before it is used, so a crash cannot lose track
// of it.
func (s *Store) SetMinted(ctx context.Context, recID, token string) error {
	if _, err := s.DB.Exec(ctx, setMintedQuery, recID, token); err != nil {
		return fmt.Errorf("record minted token: %w", err)
	}
	return nil
}

// DeleteMinted forgets a record: its token was logged out, or its mint failed.
func (s *Store) DeleteMinted(ctx context.Context, recID string) error {
	if _, err := s.DB.Exec(ctx, deleteMintQuery, recID); err != nil {
		return fmt.Errorf("forget minted token: %w", err)
	}
	return nil
}

// AllMinted lists the records of tokens not logged out yet, and of mints under way.
func (s *Store) AllMinted(ctx context.Context) ([]MintedToken, error) {
	rows, err := s.DB.Query(ctx, allMintedQuery)
	return dbutil.NewRowIterWithError(rows, func(r dbutil.Scannable) (MintedToken, error) {
		var m MintedToken
		var token sql.NullString
		var by string
		var ms int64
		if err := r.Scan(&m.ID, &token, &m.UserID, &m.JobID, &by, &ms); err != nil {
			return m, err
		}
		m.Token, m.MintedAt = token.String, time.UnixMilli(ms)
		m.By, _ = proc.Parse(by)
		return m, nil
	}, err).AsList()
}

// CountMinted counts the tokens not logged out yet.
func (s *Store) CountMinted(ctx context.Context) (int, error) {
	var n int
	if err := s.DB.QueryRow(ctx, countMintedQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("count minted tokens: %w", err)
	}
	return n, nil
}
