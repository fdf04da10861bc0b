// Package onetime issues and consumes the one-time tokens that mailed links
// carry (email verification, password reset). A token is 32 random bytes,
// base64url; only its SHA-256 is stored, with its purpose, user, the
// address it proves and an expiry. Consuming deletes the row (single use),
// so a reused token is simply unknown. An expired token stays known as
// expired (its page can still say whose it was) until the sweep deletes it.
package onetime

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-auth/tollgate/coreapi/internal/audit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/ratelimit"
	"github.com/tollgate-auth/tollgate/coreapi/internal/sqldb"
)

// Purpose is what a token is for; a token of one purpose never serves
// another.
type Purpose string

// Purposes.
const (
	VerifyEmail   Purpose = "verify_email"
	PasswordReset Purpose = "password_reset"
)

// Lifetimes.
const (
	VerifyTTL = 24 * time.Hour
	ResetTTL  = time.Hour
)

// Errors of Consume.
var (
	// ErrInvalid: unknown, already used, tampered with, or for another
	// purpose.
	ErrInvalid = errors.New("the link is not valid (already used, replaced, or mistyped)")
	// ErrExpired: the token is known but past its expiry; it is never
	// used, and the sweep deletes it.
	ErrExpired = errors.New("the link has expired; ask for a new one")
)

// Token is what a token proves: its user and address.
type Token struct {
	UserID string
	Email  string
}

// New returns a fresh raw token and its hash.
func New() (raw string, hash []byte, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, fmt.Errorf("read random: %w", err)
	}
	raw = base64.RawURLEncoding.EncodeToString(b[:])
	return raw, Hash(raw), nil
}

// Hash is how a token is stored and looked up.
func Hash(raw string) []byte {
	s := sha256.Sum256([]byte(raw))
	return s[:]
}

// Issue stores a new token for userID proving email, inside tx, and
// returns the raw token and its expiry.
func Issue(ctx context.Context, tx pgx.Tx, p Purpose, userID, email string, ttl time.Duration) (string, time.Time, error) {
	const q = `
INSERT INTO action_tokens (token_hash, purpose, user_id, email, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
RETURNING expires_at`
	raw, hash, err := New()
	if err != nil {
		return "", time.Time{}, err
	}
	var exp time.Time
	if err := tx.QueryRow(ctx, q, hash, string(p), userID, email, ttl.Seconds()).Scan(&exp); err != nil {
		return "", time.Time{}, fmt.Errorf("issue %s token: %w", p, err)
	}
	return raw, exp, nil
}

// MaxLen bounds a raw token as received (tokens issued are far shorter):
// a longer one is refused before it is hashed or looked up.
const MaxLen = 200

// Plausible reports whether raw could be a token: not empty, at most
// MaxLen bytes.
func Plausible(raw string) bool { return raw != "" && len(raw) <= MaxLen }

// Check reports, without consuming it, whether raw is a live token of
// purpose p, and returns what it would prove (its user and address):
// ErrInvalid otherwise, or ErrExpired with the token's user and address
// still returned (a page tells the link's holder whose link expired; only
// the sweep deletes it). Call it before any costly work: an unknown or
// expired token must not cost a password hash.
func Check(ctx context.Context, db sqldb.DB, p Purpose, raw string) (Token, error) {
	const q = `SELECT user_id::text, email, expires_at <= now() FROM action_tokens WHERE token_hash = $1 AND purpose = $2`
	if !Plausible(raw) {
		return Token{}, ErrInvalid
	}
	var (
		t       Token
		expired bool
	)
	err := db.QueryRow(ctx, q, Hash(raw), string(p)).Scan(&t.UserID, &t.Email, &expired)
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, ErrInvalid
	}
	if err != nil {
		return Token{}, fmt.Errorf("check %s token: %w", p, err)
	}
	if expired {
		return t, ErrExpired
	}
	return t, nil
}

// LockUser locks, in tx, the row of the user a live-or-expired token of
// purpose p belongs to (nothing when raw is no such token: Consume then
// answers). Call it before Consume: every transaction that deletes a
// user's tokens locks the user's row first (a reset, a confirmed email
// change, a password change or a new link each deletes the others'), so
// none holds a token while it waits for the row that another, holding
// the row, waits for it behind (a deadlock PostgreSQL ends with an error).
func LockUser(ctx context.Context, tx pgx.Tx, p Purpose, raw string) error {
	const q = `SELECT 1 FROM users WHERE id = (SELECT user_id FROM action_tokens WHERE token_hash = $1 AND purpose = $2) FOR UPDATE`
	if !Plausible(raw) {
		return nil
	}
	if _, err := tx.Exec(ctx, q, Hash(raw), string(p)); err != nil {
		return fmt.Errorf("lock the %s token's user: %w", p, err)
	}
	return nil
}

// Consume deletes the token and returns what it proves; ErrInvalid or
// ErrExpired otherwise. Call it in the transaction that acts on it, so a
// failed action leaves the token usable (and an expired one known as
// expired, until the sweep).
func Consume(ctx context.Context, tx pgx.Tx, p Purpose, raw string) (Token, error) {
	const q = `
DELETE FROM action_tokens WHERE token_hash = $1 AND purpose = $2
RETURNING user_id::text, email, expires_at <= now()`
	if !Plausible(raw) {
		return Token{}, ErrInvalid
	}
	var (
		t       Token
		expired bool
	)
	err := tx.QueryRow(ctx, q, Hash(raw), string(p)).Scan(&t.UserID, &t.Email, &expired)
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, ErrInvalid
	}
	if err != nil {
		return Token{}, fmt.Errorf("consume %s token: %w", p, err)
	}
	if expired {
		return Token{}, ErrExpired
	}
	return t, nil
}

// Revoke deletes every token of userID for the given purposes, and the
// mails still to go that carry one of them (dropUnsent).
func Revoke(ctx context.Context, tx pgx.Tx, userID string, ps ...Purpose) error {
	q := `
WITH ended AS (DELETE FROM action_tokens WHERE user_id = $1 AND purpose = ANY($2::text[]) RETURNING token_hash)
` + dropUnsent
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = string(p)
	}
	if _, err := tx.Exec(ctx, q, userID, names); err != nil {
		return fmt.Errorf("revoke tokens: %w", err)
	}
	return nil
}

// dropUnsent deletes the mails still to go of userID ($1) whose link
// carries a token of the CTE ended (mail.DropUnsentSQL): the earlier link
// a new one replaces, the reset links a used one ends, the email change a
// password change or a reset ends. Such a mail, queued and not yet sent
// (an SMTP outage, a backlog), would otherwise still go out, with a link
// that only answers that it is no longer valid. A mail queued before
// mail_queue.user_id was (migration 00060) names no account, and is
// found by its token all the same.
var dropUnsent = mail.DropUnsentSQL("ended", `m.kind IN ('`+string(mail.KindVerifyEmail)+`', '`+string(mail.KindPasswordReset)+`')
  AND (m.user_id = $1 OR m.user_id IS NULL)`)

// RevokeEmailChanges deletes userID's verification tokens of an address
// other than the account's own: its pending email changes. A password
// reset or change takes an account back from whoever held a session, and
// a change that session asked for must not move the account (and every
// later reset link) to another mailbox afterwards. A link of the
// account's own address stays.
// The mails of the tokens ended go with them, those still to go
// (dropUnsent).
func RevokeEmailChanges(ctx context.Context, tx pgx.Tx, userID string) error {
	q := `
WITH ended AS (
    DELETE FROM action_tokens t USING users u
    WHERE t.user_id = $1 AND t.purpose = $2 AND u.id = t.user_id AND lower(t.email) <> lower(u.email)
    RETURNING t.token_hash)
` + dropUnsent
	if _, err := tx.Exec(ctx, q, userID, string(VerifyEmail)); err != nil {
		return fmt.Errorf("revoke email changes: %w", err)
	}
	return nil
}

// AddressMailLimit bounds the verification mails that email changes and
// resends send to one inbox (mail.Inbox: its subaddresses "+tag"
// included), whichever accounts ask for them: each account's own limits
// (5 email changes an hour, 3 resends in 15 minutes) say nothing of the
// address, and anyone can sign up as many accounts as the sign-up limit
// allows and point each at the same mailbox: 5 an hour, the same for
// every caller of the process.
func AddressMailLimit() ratelimit.Limit { return ratelimit.Limit{N: 5, Window: time.Hour} }

// CountAddressMail counts, in tx, one verification mail to email against
// AddressMailLimit (a *ratelimit.Refused above it). The hit commits with the
// mail, and a caller refused rolls back, so only mails sent are counted.
// An email change, a resend, a sign-up and a new member made by a tenant
// (POST /users) call it before SendVerification: one inbox has as many
// addresses as "+tag"s, each of which may become a new account.
func CountAddressMail(ctx context.Context, tx pgx.Tx, email string) error {
	return ratelimit.CheckIn(ctx, tx, AddressMailKey(email), AddressMailLimit(), AddressMailRefusal)
}

// AddressMailKey is the key of email's inbox's count under
// AddressMailLimit.
func AddressMailKey(email string) []byte {
	return ratelimit.Key("verify-mail", "addr", mail.Inbox(email))
}

// AddressMailRefusal is the refusal of a mail past AddressMailLimit.
const AddressMailRefusal = "too many verification mails to this address"

// SendVerification issues a verify_email token for email and queues the
// mail with its link, inside tx, and audits it in the user's tenants (call
// it after the membership exists; an address to change to, change, is
// not audited at all: see verificationSentData). Earlier verification tokens of the user
// die: only the newest link works. The user's row is locked, so concurrent
// calls take turns and each revokes the links before it.
//
// The mail greets nobody by name: whoever chose the account's display
// name (a sign-up, a tenant admin's POST /users, an email change) has not
// proven to own the mailbox, so the name would be words of anyone's
// choosing in a mail from this service to an address of theirs.
func SendVerification(ctx context.Context, tx pgx.Tx, userID, email string, change bool, requestID string) error {
	if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, userID); err != nil {
		return fmt.Errorf("lock user: %w", err)
	}
	if err := Revoke(ctx, tx, userID, VerifyEmail); err != nil {
		return err
	}
	raw, exp, err := Issue(ctx, tx, VerifyEmail, userID, email, VerifyTTL)
	if err != nil {
		return err
	}
	err = mail.Enqueue(ctx, tx, mail.Message{Kind: mail.KindVerifyEmail, To: email, Token: raw,
		Data: mail.Data{ExpiresAt: exp, EmailChange: change}, UserID: userID})
	if err != nil {
		return err
	}
	return audit.WriteForUser(ctx, tx, userID, audit.Event{ActorUserID: userID, Action: audit.ActionUserVerificationSent,
		TargetType: audit.TargetUser, TargetID: userID, RequestID: requestID, Data: verificationSentData(email, change)})
}

// verificationSentData is the data of a user.verification_sent audit
// event, written in every tenant of the account: the address for a link
// to the account's own address (which each tenant's member list shows);
// for a link to an address to change to, only email_change. That address
// is not the account's until the link is used, and may never be (a typo,
// someone else's mailbox, a private address its owner thinks better of):
// not even masked, whose first character and domain still say whose it
// is, to every tenant's admins for as long as the row lives. Once
// confirmed, user.email_changed names it.
func verificationSentData(email string, change bool) map[string]any {
	if change {
		return map[string]any{"email_change": true}
	}
	return map[string]any{"email": email, "email_change": false}
}
