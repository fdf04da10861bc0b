// Package mail delivers the account mails (email verification, password
// reset, invitation, the notice of an email change to the previous
// address, and the security notices of a password or second-factor change,
// new recovery codes included, to the account's address) without losing or blocking anything.
//
// A mail is a row of mail_queue written with Enqueue inside the
// transaction of the change that causes it, so it commits or rolls back
// with that change. A Sender on every replica claims due rows with FOR
// UPDATE SKIP LOCKED and a lease, renders them from the templates in
// templates/, and hands them to a Transport (SMTP, or the log in
// development). A failure is retried with exponential backoff; a permanent
// one (SMTP 5xx to the mail's recipient or content) or too many attempts
// parks the row, but a server that refuses the session, every
// recipient or every message parks nothing and holds the queue back
// instead (the first mail it refuses waits for that verdict). The raw one-time token
// is kept in the row only until it is sent or parked: the database holds
// only its hash elsewhere. Whatever ends a token before its mail is sent
// (revoked, withdrawn, replaced) deletes that mail too (DropUnsentSQL),
// and the Sender checks each link at its turn (its expiry, LinkCheck),
// deleting unsent a mail whose link died otherwise, so no dead link is
// mailed. This queue is separate from the NATS outbox, so
// an SMTP outage never delays an invalidation and a NATS outage never
// stops mail.
package mail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"

	"github.com/tollgate-auth/tollgate/shared/address"
)

// Kind names a template.
type Kind string

// The kinds of mail.
const (
	KindVerifyEmail   Kind = "verify_email"
	KindPasswordReset Kind = "password_reset"
	KindInvitation    Kind = "invitation"
	// KindEmailChanged tells an account's previous address, once an
	// email change is confirmed, that the account moved; it has no link
	// (and no token).
	KindEmailChanged Kind = "email_changed"
	// The security notices tell an account's verified address that its
	// password changed, that a second factor was enabled, disabled by the
	// owner or reset by an administrator, or that new recovery codes were
	// made (a way past the factor for whoever asked for them), so that a
	// change made by someone else holding the password or a session is
	// noticed. They
	// carry no token; their link (Links.ForgotPassword) asks for a reset
	// link, which goes to the account's address.
	KindPasswordChanged Kind = "password_changed"
	KindMFAEnabled      Kind = "mfa_enabled"
	KindMFADisabled     Kind = "mfa_disabled"
	KindMFAReset        Kind = "mfa_reset"
	KindRecoveryCodes   Kind = "mfa_recovery_codes_regenerated"
	// KindIdentityLinked tells an account's verified address that a
	// sign-in provider's account was linked to it (a new way in, which
	// whoever holds an account at the provider with the address gets);
	// KindIdentityUnlinked that one was removed. Their link asks for a
	// reset link, as the other notices'.
	KindIdentityLinked   Kind = "identity_linked"
	KindIdentityUnlinked Kind = "identity_unlinked"
	// KindAccountDeleted confirms to an account's verified address that
	// the account was deleted. It has no link: there is no account left
	// to act on.
	KindAccountDeleted Kind = "account_deleted"
)

// hasToken reports whether mails of kind k carry a link with a one-time
// token.
func (k Kind) hasToken() bool {
	switch k {
	case KindVerifyEmail, KindPasswordReset, KindInvitation:
		return true
	}
	return false
}

// Data is what a template shows besides the link.
type Data struct {
	DisplayName string    `json:"display_name,omitempty"`
	TenantName  string    `json:"tenant_name,omitempty"`
	InviterName string    `json:"inviter_name,omitempty"`
	ExpiresAt   time.Time `json:"expires_at"`
	// EmailChange marks a verification of a new address (not a signup).
	EmailChange bool `json:"email_change,omitempty"`
	// NewAddress is, in a KindEmailChanged mail, the address the account
	// moved to, masked (audit.MaskEmail).
	NewAddress string `json:"new_address,omitempty"`
	// At is, in a security notice, when the change was made.
	At time.Time `json:"at,omitzero"`
	// Provider is, in a KindIdentityLinked or KindIdentityUnlinked mail,
	// the sign-in provider's configured name.
	Provider string `json:"provider,omitempty"`
}

// Message is one mail to queue.
type Message struct {
	Kind  Kind
	To    string
	Token string // the raw one-time token the link carries ("" for a kind without a link)
	Data  Data
	// UserID is the account the mail is about, whichever address it goes
	// to (mail_queue.user_id): the account's deletion deletes every mail
	// that names it, those to an address it left or was moving to
	// included, and so does any other deletion of its row (ON DELETE
	// CASCADE). Every mail about an account names it; "" only for one
	// about no account: an invitation (the tenant's, to an address) and
	// the confirmation of a deletion (its account is gone).
	UserID string
}

// ErrBadAddress means a recipient that is not one plain address (CR/LF,
// a display name, a list...).
var ErrBadAddress = errors.New("mail: not a single plain address")

// ErrUndeliverable means a plain address that ValidAddress refuses all
// the same, stored before it did: a single-label domain ("lee@localhost",
// which a relay delivers on its own host or network). No mail is sent to
// it; the account or invitation needs another address.
var ErrUndeliverable = errors.New("mail: no mail is sent to this address: its domain is a single label (an address stored before such addresses were refused); it needs another address")

// whyNotMailed is why no mail goes to addr, which ValidAddress refuses:
// ErrUndeliverable for a plain address stored before ValidAddress refused
// it, else ErrBadAddress.
func whyNotMailed(addr string) error {
	if ValidSender(addr) {
		return ErrUndeliverable
	}
	return ErrBadAddress
}

// MaxAddress is the longest address accepted for a new account, an email
// change or an invitation, in octets. RFC 5321 (4.5.3.1.3) limits a path
// to 256 octets including its angle brackets, so no deliverable mailbox is
// longer than 254; the 320 of local part (64) plus domain (255) is not
// reachable. Lookups of existing accounts (sign-in, password reset) accept
// up to MaxStoredAddress, as before.
const MaxAddress = 254

// MaxStoredAddress is the longest address users.email holds (the schema's
// CHECK): the bound of lookups of existing accounts, which may predate
// MaxAddress.
const MaxStoredAddress = 320

// Canonical is the form in which an address is stored, compared and looked
// up (address.Canonical): without surrounding white space, in Unicode NFC,
// its domain in one spelling, its Unicode form. One address typed with
// precomposed or decomposed letters ("é" as U+00E9, or as "e" and U+0301),
// or with its domain in Unicode or Punycode ("bücher.example",
// "xn--bcher-kva.example", "bücher。example", "bücher.example."), is one
// account, one invitation, one sign-in. The local part keeps its letter
// case; queries compare lower() of both sides (users.email is unique on
// lower(email)). Every address a client or an identity provider gives
// (signup, sign-in, password reset, invitation, new member, email change,
// OIDC) goes through it before ValidAddress and before any query, so every
// address written is in this form; migrations 00012 and 00044 rewrote the
// addresses stored before. The mail transport sends the domain in ASCII
// (wireAddress), so mail reaches it through a server without SMTPUTF8 as
// well.
//
// An address still longer than MaxCanonicalInput octets once trimmed is
// returned as it is, trimmed only: no address that long is one a client
// means (an address of MaxStoredAddress octets typed decomposed, in
// full-width letters or in Punycode is at most about three times as
// long), every caller refuses it as too long, and
// normalizing it first cost up to 80 ms of CPU for each address of a
// 1 MiB body, on public routes (sign-in, sign-up, password reset), before
// any rate limit.
func Canonical(s string) string {
	if len(s) > MaxCanonicalInput {
		if s = strings.TrimSpace(s); len(s) > MaxCanonicalInput {
			return s
		}
	}
	return address.Canonical(s)
}

// DomainKey is the form in which a domain is compared with the domain of
// a Canonical address: its one spelling (address.Domain: IDNA's Unicode
// form, without trailing dots), lower-cased as lower() compares
// addresses. "bücher.example", "XN--BCHER-KVA.example" and
// "bücher.example." are one key.
func DomainKey(d string) string {
	return strings.ToLower(address.Domain(strings.TrimSpace(d)))
}

// AddressDomain is the DomainKey of the domain of addr (Canonical), ""
// when it has none.
func AddressDomain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return DomainKey(addr[at+1:])
}

// MaxCanonicalInput bounds the address, trimmed, that Canonical
// normalizes: four times MaxStoredAddress.
const MaxCanonicalInput = 4 * MaxStoredAddress

// SameAddress reports whether a and b (both Canonical) are one address as
// the database decides it: lower(a) = lower(b), the key users.email is
// unique on (and pending invitations, of their NFC form, which Canonical
// gives). Every comparison of addresses in Go
// goes through it, so that no decision in Go disagrees with a query on who
// has an address. strings.ToLower maps each character as PostgreSQL's
// lower() does in a UTF-8 database (TestSameAddressIsLower checks every
// one against the server); strings.EqualFold does not: it keeps "İ"
// (U+0130) apart from "i", which lower() folds together, and folds "ſ"
// (U+017F) onto "s" and "ς" onto "σ", which lower() keeps apart.
func SameAddress(a, b string) bool {
	//lint:ignore SA6005 lower()'s mapping is the point, not EqualFold's folding (see above)
	return a == b || strings.ToLower(a) == strings.ToLower(b)
}

// Inbox is the key under which the limits on mails to one mailbox count
// an address: Canonical, lower-cased as lower() compares addresses, and
// without its subaddress (RFC 5233: a "+" in the local part and what
// follows it), which mail systems deliver to the address without it.
// "Victim+1@example.org", "victim+2@example.org" and "victim@example.org"
// are three accounts or invitations but one inbox, and a limit counted
// per address would give someone flooding that inbox a fresh budget with
// each tag. The domain is one name however it is spelled, as in
// Canonical, here in its ASCII form (inboxDomain, the key the limits have
// always counted under): "victim@bücher.example" and
// "victim@xn--bcher-kva.example" are one inbox. Dots in the local part are
// kept: that one provider delivers "v.ictim" to "victim" is its own rule,
// not the mail system's. It is a key for counting only: accounts,
// invitations and sign-ins keep the subaddress and the local part's
// letter case (Canonical).
func Inbox(addr string) string {
	a := strings.ToLower(Canonical(addr))
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return a
	}
	local := a[:at]
	if plus := strings.IndexByte(local, '+'); plus >= 0 {
		local = local[:plus]
	}
	return local + "@" + inboxDomain(a[at+1:])
}

// inboxDomain is the one spelling of a domain name (lower case) that mail
// reaches the same way: its ASCII form (IDNA's lookup mapping, then
// Punycode: "bücher.example", "BÜCHER.example", "bücher。example" and
// "xn--bcher-kva.example" are one), without the trailing dots of a fully
// qualified name. A domain IDNA refuses (an underscore, an address
// literal, a broken Punycode label) is kept as it came, less those dots.
func inboxDomain(d string) string {
	if a, err := idna.Lookup.ToASCII(d); err == nil {
		d = strings.ToLower(a)
	}
	return strings.TrimRight(d, ".")
}

// ValidAddress reports whether s is one plain address of at most
// MaxAddress octets, with nothing that could smuggle a header or a second
// recipient, outside the reserved top-level domain .invalid (RFC 2606: no
// mail reaches it; service accounts' addresses are under it, and no person
// may hold one), and without a character that shows as nothing or as a
// space (a space, control or format character: U+00A0, U+200B, U+2060...),
// with which one address would pass for another in a member list. Its
// domain is a host name of two labels or more (mailDomain): not an address
// literal ("ada@[192.0.2.1]", "ada@[::1]"), whose mail goes straight to
// that IP past any policy of the mail system on domains, nor a single
// label ("ada@localhost", "root@mailrelay"), which a relay delivers on its
// own host or its local network. Its local part is at most 64 octets (RFC
// 5321 4.5.3.1.1), unquoted (quotes are refused above, comments by the
// parsed address having to be s itself). It is the check of every address
// mailed; an address given for an account or an invitation passes
// ValidNewAddress, which is stricter.
func ValidAddress(s string) bool { return validAddress(s, false) }

// ValidSender is ValidAddress for MAIL_FROM, the sender of the mails: a
// single-label domain is taken there ("no-reply@localhost", the default,
// for a relay on the same host); the sender receives no mail from
// coreapi.
func ValidSender(s string) bool { return validAddress(s, true) }

func validAddress(s string, singleLabel bool) bool {
	if len(s) < 3 || len(s) > MaxAddress || strings.ContainsAny(s, "\r\n\x00,;<>\"") {
		return false
	}
	for _, r := range s {
		if r >= 0x80 && (r == utf8.RuneError || unicode.In(r, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co)) {
			return false
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	domain := s[at+1:]
	return at <= maxLocalPart && mailDomain(domain, singleLabel) &&
		!strings.EqualFold(domain, "invalid") && !hasSuffixFold(domain, ".invalid")
}

// ValidNewAddress is ValidAddress for an address that enters: a sign-up,
// an invitation, a member added, an email change, the address of an
// account an OIDC sign-in creates or links by address. Its local part
// must not pass for another's as well (plainLocal): no compatibility
// character and no mix of scripts, so that "ａdmin@example.com"
// (full-width a) and "аdmin@example.com" (Cyrillic a) are not new
// accounts or invitations beside "admin@example.com". The stored form is
// not changed (Canonical): an address stored before this check, mailed
// (ValidAddress) and looked up at sign-in and password reset as before,
// keeps working.
func ValidNewAddress(s string) bool {
	return ValidAddress(s) && plainLocal(s[:strings.LastIndexByte(s, '@')])
}

// plainLocal reports whether a local part (in NFC, as Canonical gives
// it) has no character that Unicode NFKC changes (full-width letters and
// digits, ligatures such as "ﬁ", superscripts, the long s "ſ",
// mathematical letters such as "𝐚": each a look-alike of another
// character) and letters of one script (oneScript).
func plainLocal(local string) bool {
	return norm.NFKC.IsNormalString(local) && oneScript(local)
}

// oneScript reports whether the characters of s are of one Unicode
// script (the unicode package's tables), as UTS #39's "highly
// restrictive" level has it: Common and Inherited characters (digits,
// punctuation, combining marks) go with any script, and the scripts of
// one writing system go together, with Latin or without (Han, Hiragana
// and Katakana for Japanese, Han and Bopomofo for Chinese, Han and Hangul
// for Korean). "аdmin" (a Cyrillic a among Latin letters) and "pαypal"
// (a Greek alpha) are refused; "иван", "αλέξης", "田中", "やまだ太郎",
// "josé" and "jo+2024" are one script each. A character of no script the
// tables know (unassigned in their Unicode version) is refused: what it
// looks like cannot be told.
func oneScript(s string) bool {
	var found []string // the scripts of s's characters, once each
	for _, r := range s {
		name := ""
		switch {
		case r < utf8.RuneSelf:
			if 'a' <= r|0x20 && r|0x20 <= 'z' {
				name = "Latin"
			}
		case !unicode.In(r, unicode.Common, unicode.Inherited):
			if name = scriptOf(r); name == "" {
				return false
			}
		}
		if name != "" && !slices.Contains(found, name) {
			found = append(found, name)
		}
	}
	if len(found) <= 1 {
		return true
	}
	for _, system := range [...][]string{{"Han", "Hiragana", "Katakana"}, {"Han", "Bopomofo"}, {"Han", "Hangul"}} {
		if !slices.ContainsFunc(found, func(n string) bool { return n != "Latin" && !slices.Contains(system, n) }) {
			return true
		}
	}
	return false
}

// scriptOf is the name of r's script in unicode.Scripts, "" for none.
// The scripts' tables do not overlap, so the order of the map's
// iteration does not matter.
func scriptOf(r rune) string {
	for name, t := range unicode.Scripts {
		if unicode.Is(t, r) {
			return name
		}
	}
	return ""
}

// maxLocalPart is the longest local part SMTP carries (RFC 5321
// 4.5.3.1.1), in octets.
const maxLocalPart = 64

// mailDomain reports whether d is a domain mail can be addressed to: a
// host name whose ASCII form (IDNA's lookup: letters, digits and inner
// hyphens in each label, a Unicode label as Punycode) has labels of 1 to
// 63 octets, 253 in all, a top-level label that is not all digits (so
// "ada@192.0.2.1" is no address either), and, unless singleLabel, two
// labels or more. An address literal, an underscore or any other
// character a host name cannot hold is refused.
func mailDomain(d string, singleLabel bool) bool {
	ascii, err := idna.Lookup.ToASCII(d)
	if err != nil || ascii == "" || len(ascii) > 253 {
		return false
	}
	labels := strings.Split(ascii, ".")
	if len(labels) < 2 && !singleLabel {
		return false
	}
	for _, l := range labels {
		if len(l) < 1 || len(l) > 63 {
			return false
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// hasSuffixFold is strings.HasSuffix ignoring ASCII case.
func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// DropUnsentSQL is a data-modifying statement, for a WITH clause or on
// its own, that deletes the mails still to go (status pending: a sent or
// parked row keeps no token) whose link carries a one-time token that has
// just ended: revoked, withdrawn or replaced by another, so that no dead
// link is mailed. ended names a relation (a CTE) with a column token_hash
// of the tokens' digests, SHA-256 of the raw token (onetime.Hash: how
// action_tokens and invitations store them; the queue keeps the raw token
// until the mail is sent); where is a further condition on the mail row m
// (its kind, its account). The mails are found through the index of
// their tokens' digests (mail_token_digest, sha256(convert_to(token,
// 'UTF8')), migration 00064), not by hashing every token of the queue,
// however long a backlog it holds.
// A mail being sent at that moment (claimed by a Sender) goes all the
// same; its row is deleted, and the Sender's mark finds nothing to mark.
func DropUnsentSQL(ended, where string) string {
	return `DELETE FROM mail_queue m USING ` + ended + ` e
WHERE m.status = 'pending' AND m.token IS NOT NULL AND (` + where + `)
  AND mail_token_digest(m.token) = e.token_hash`
}

const qEnqueue = `INSERT INTO mail_queue (kind, to_address, data, token, user_id)
VALUES ($1, $2, $3::jsonb, NULLIF($4, ''), NULLIF($5, '')::uuid)`

// Enqueue writes m to the queue inside the caller's transaction. An
// address no mail is sent to is ErrUndeliverable (a plain one stored
// before ValidAddress refused it) or ErrBadAddress: a caller that acts for
// a client says so (see EnqueueOrPark for the others).
func Enqueue(ctx context.Context, tx pgx.Tx, m Message) error {
	if !ValidAddress(m.To) {
		return whyNotMailed(m.To)
	}
	if (m.Token != "") != m.Kind.hasToken() {
		return fmt.Errorf("mail: a %s mail with a token %t", m.Kind, m.Token != "")
	}
	return insert(ctx, tx, m)
}

// EnqueueOrPark is Enqueue for a mail whose cause has nobody to tell of a
// refusal (a reset asked for on the public forgot route, which answers
// alike whatever the address; a security notice; the notice of an email
// change to the address left): to an address ValidAddress refuses, a
// stored one that predates it, the mail is queued without its token and
// the Sender parks it at its first try, with the reason in last_error,
// the log (mail parked) and coreapi_mail_parked_total, instead of it being
// dropped unseen. Such an address is never sent to.
func EnqueueOrPark(ctx context.Context, tx pgx.Tx, m Message) error {
	if ValidAddress(m.To) {
		return Enqueue(ctx, tx, m)
	}
	m.Token = ""
	return insert(ctx, tx, m)
}

func insert(ctx context.Context, tx pgx.Tx, m Message) error {
	if _, ok := templates[m.Kind]; !ok {
		return fmt.Errorf("mail: unknown kind %q", m.Kind)
	}
	data, err := json.Marshal(m.Data)
	if err != nil {
		return fmt.Errorf("marshal mail data: %w", err)
	}
	// A string, not []byte: in the exec and simple-protocol modes []byte
	// would be sent as bytea.
	if _, err := tx.Exec(ctx, qEnqueue, string(m.Kind), m.To, string(data), m.Token, m.UserID); err != nil {
		return fmt.Errorf("enqueue mail: %w", err)
	}
	return nil
}
