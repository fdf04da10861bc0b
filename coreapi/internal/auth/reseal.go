package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
)

// Resealed is what ResealTOTP did.
type Resealed struct {
	// KeyID is the key every readable secret is now sealed under (the
	// first of MFA_ENCRYPTION_KEYS).
	KeyID string `json:"key_id"`
	// Resealed counts the secrets moved to KeyID.
	Resealed int64 `json:"resealed"`
	// Unreadable lists the secrets left as they were: sealed under a key
	// id missing from the list, or not opening under the key listed with
	// theirs.
	Unreadable []UnreadableSecret `json:"unreadable"`
	// Remaining counts, per key id, the secrets still sealed under
	// another key than KeyID once done (the unreadable ones, and any
	// stored meanwhile by a server with another first key).
	Remaining map[string]int64 `json:"remaining"`
}

// UnreadableSecret is a TOTP secret ResealTOTP could not open.
type UnreadableSecret struct {
	UserID string `json:"user_id"`
	KeyID  string `json:"key_id"`
	Status string `json:"status"` // pending or active
	Reason string `json:"reason"`
}

// resealBatch is how many secrets ResealTOTP reads at a time.
const resealBatch = 500

// ResealTOTP seals every stored TOTP secret, active or pending, under the
// first key of s (`coreapi mfa reseal`), so that a key rotated out of
// first place can be dropped from MFA_ENCRYPTION_KEYS: a secret is
// otherwise resealed only when its owner next gives a code, and an account
// that does not sign in (or an enrolment never confirmed) would keep the
// old key needed for ever. Each secret is replaced only if its row still
// holds what was read (a code given meanwhile may have resealed it, a
// restarted enrolment replaced it: either is already under the first
// key); a code checked against the old ciphertext at that very moment is
// refused once, as a wrong code. Secrets that do not open are listed and
// left as they were.
func ResealTOTP(ctx context.Context, pool *pgxpool.Pool, s *mfa.Sealer) (Resealed, error) {
	const (
		qPage = `
SELECT user_id::text, key_id, secret_sealed, status FROM mfa_totp
WHERE key_id <> $1 AND user_id > $2::uuid
ORDER BY user_id LIMIT $3`
		qSwap = `
UPDATE mfa_totp SET key_id = $2, secret_sealed = $3
WHERE user_id = $1 AND key_id = $4 AND secret_sealed = $5`
		qLeft = `SELECT key_id, count(*) FROM mfa_totp WHERE key_id <> $1 GROUP BY key_id ORDER BY key_id`
	)
	r := Resealed{KeyID: s.KeyID(), Unreadable: []UnreadableSecret{}, Remaining: map[string]int64{}}
	after := "00000000-0000-0000-0000-000000000000"
	for {
		type row struct {
			userID, keyID, status string
			sealed                []byte
		}
		rows, err := pool.Query(ctx, qPage, r.KeyID, after, resealBatch)
		if err != nil {
			return r, fmt.Errorf("read totp secrets: %w", err)
		}
		var (
			page []row
			x    row
		)
		_, err = pgx.ForEachRow(rows, []any{&x.userID, &x.keyID, &x.sealed, &x.status}, func() error {
			page = append(page, row{userID: x.userID, keyID: x.keyID, status: x.status, sealed: x.sealed})
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("read totp secrets: %w", err)
		}
		for _, x := range page {
			plain, err := s.Open(x.keyID, x.sealed, []byte(x.userID))
			if err != nil {
				reason := "the key that sealed it is not the one listed under its id"
				if errors.Is(err, mfa.ErrUnknownKey) {
					reason = "its key id is not in MFA_ENCRYPTION_KEYS"
				}
				r.Unreadable = append(r.Unreadable, UnreadableSecret{UserID: x.userID, KeyID: x.keyID, Status: x.status, Reason: reason})
				continue
			}
			keyID, sealed, err := s.Seal(plain, []byte(x.userID))
			if err != nil {
				return r, err
			}
			tag, err := pool.Exec(ctx, qSwap, x.userID, keyID, sealed, x.keyID, x.sealed)
			if err != nil {
				return r, fmt.Errorf("reseal totp secret of user %s: %w", x.userID, err)
			}
			r.Resealed += tag.RowsAffected()
		}
		if len(page) < resealBatch {
			break
		}
		after = page[len(page)-1].userID
	}
	rows, err := pool.Query(ctx, qLeft, r.KeyID)
	if err != nil {
		return r, fmt.Errorf("count totp secrets: %w", err)
	}
	var (
		id string
		n  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		r.Remaining[id] = n
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("count totp secrets: %w", err)
	}
	return r, nil
}
