package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
)

// noticeOwner queues, in tx (the change's own transaction: a rollback
// sends nothing, a commit always sends), the security notice k telling
// userID's owner that the change was made at at. It goes only to an
// address the owner proved: one never proven may be anyone's, as the
// notice of an email change is sent only to a verified previous address.
// A service account gets none (its address is under .invalid, and nobody
// reads it); one to an address mail is not sent to is parked
// (mail.EnqueueOrPark). Like that
// notice, it is not counted against the per-inbox mail limits: it goes to
// the account's own address, for a change behind the account's password,
// session or an administrator's permission, and holding one back would
// hide the very change its owner must hear of.
func noticeOwner(ctx context.Context, tx pgx.Tx, userID string, k mail.Kind, at time.Time) error {
	return NoticeOwner(ctx, tx, userID, k, mail.Data{At: at})
}

// NoticeOwner is noticeOwner with the notice's data (its At, and what
// else its template shows), for the changes made outside this package (a
// sign-in provider linked to the account, or unlinked from it).
func NoticeOwner(ctx context.Context, tx pgx.Tx, userID string, k mail.Kind, d mail.Data) error {
	const q = `SELECT email FROM users WHERE id = $1 AND kind = 'human' AND email_verified_at IS NOT NULL`
	var addr string
	err := tx.QueryRow(ctx, q, userID).Scan(&addr)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load the address to notify: %w", err)
	}
	// An address stored before ValidAddress refused it gets the notice
	// parked, with the reason, for the operator to see.
	return mail.EnqueueOrPark(ctx, tx, mail.Message{Kind: k, To: addr, Data: d, UserID: userID})
}
