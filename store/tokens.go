package store

import (
	"context"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

const (
	addMintedQuery    = `INSERT INTO minted_token (token, user_id, job_id, minted_at) VALUES ($1, $2, $3, $4)`
	deleteMintedQuery = `DELETE FROM minted_token WHERE token = $1`
	allMintedQuery    = `SELECT token, user_id FROM minted_token`
	countMintedQuery  = `SELECT count(*) FROM minted_token`
)

// MintedToken is an access token medic created for a user and has not logged out yet.
type MintedToken struct {
	Token  string
	UserID string
}

// AddMinted records a token before it is used, so a crash cannot lose track of it.
func (s *Store) AddMinted(ctx context.Context, token, userID, jobID string) error {
	if _, err := s.DB.Exec(ctx, addMintedQuery, token, userID, jobID, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("record minted token: %w", err)
	}
	return nil
}

// DeleteMinted forgets a token that has been logged out.
func (s *Store) DeleteMinted(ctx context.Context, token string) error {
	if _, err := s.DB.Exec(ctx, deleteMintedQuery, token); err != nil {
		return fmt.Errorf("forget minted token: %w", err)
	}
	return nil
}

// AllMinted lists tokens not logged out yet.
func (s *Store) AllMinted(ctx context.Context) ([]MintedToken, error) {
	rows, err := s.DB.Query(ctx, allMintedQuery)
	return dbutil.NewRowIterWithError(rows, func(r dbutil.Scannable) (MintedToken, error) {
		var m MintedToken
		return m, r.Scan(&m.Token, &m.UserID)
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
