package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/auth"
	"github.com/tollgate-auth/tollgate/coreapi/internal/dbtest"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mfa"
)

// TestMFAReseal: `coreapi mfa reseal` moves every TOTP secret that opens,
// active or pending, used or not, to the first key of
// MFA_ENCRYPTION_KEYS (the same secret, its state untouched), so the old
// key can then be dropped: before it, a secret moved only when its owner
// gave a code, and the rotation never ended for an account that did not
// sign in. A secret it cannot read is listed, left as it was, and fails
// the command.
func TestMFAReseal(t *testing.T) {
	db := dbtest.New(t)
	ctx := context.Background()
	key := func(id string, b byte) string {
		return id + ":" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
	}
	sealer := func(text string) *mfa.Sealer {
		ks, err := mfa.ParseKeys(text)
		if err != nil {
			t.Fatal(err)
		}
		s, err := mfa.NewSealer(ks)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	old, lost := sealer(key("old", 1)), sealer(key("lost", 3))
	type seeded struct{ uid, secret, status string }
	seed := func(email, status string, s *mfa.Sealer) seeded {
		var uid string
		if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email) VALUES ($1) RETURNING id::text`, email).Scan(&uid); err != nil {
			t.Fatal(err)
		}
		secret, _, err := mfa.NewSecret("Tollgate", email)
		if err != nil {
			t.Fatal(err)
		}
		keyID, sealed, err := s.Seal([]byte(secret), []byte(uid))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO mfa_totp (user_id, key_id, secret_sealed, status, last_step) VALUES ($1, $2, $3, $4, 42)`,
			uid, keyID, sealed, status); err != nil {
			t.Fatal(err)
		}
		return seeded{uid, secret, status}
	}
	active, pending := seed("dormant@example.com", "active", old), seed("pending@example.com", "pending", old)
	unreadable := seed("lost@example.com", "active", lost)

	keys := key("new", 2) + "," + key("old", 1)
	var out bytes.Buffer
	err := run(ctx, []string{"mfa", "reseal"}, envOf(map[string]string{"DATABASE_URL": db.URL, "MFA_ENCRYPTION_KEYS": keys}), &out)
	if err == nil || !strings.Contains(err.Error(), "1 secrets could not be read") {
		t.Fatalf("mfa reseal with a secret under a missing key: %v, want it to fail naming it", err)
	}
	var r auth.Resealed
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("printed %q: %v", out.String(), err)
	}
	if r.KeyID != "new" || r.Resealed != 2 || len(r.Unreadable) != 1 || r.Unreadable[0].UserID != unreadable.uid ||
		r.Unreadable[0].KeyID != "lost" || len(r.Remaining) != 1 || r.Remaining["lost"] != 1 {
		t.Fatalf("printed %+v, want 2 resealed under new, the secret under lost unreadable and remaining", r)
	}
	only := sealer(key("new", 2))
	for _, s := range []seeded{active, pending} {
		var (
			keyID, status string
			sealed        []byte
			step          int64
		)
		if err := db.Pool.QueryRow(ctx, `SELECT key_id, secret_sealed, status, last_step FROM mfa_totp WHERE user_id = $1`, s.uid).
			Scan(&keyID, &sealed, &status, &step); err != nil {
			t.Fatal(err)
		}
		plain, err := only.Open(keyID, sealed, []byte(s.uid))
		if keyID != "new" || err != nil || string(plain) != s.secret || status != s.status || step != 42 {
			t.Errorf("%s secret after reseal: key %s, opens with new alone: %v, same secret %v, status %s, last step %d",
				s.status, keyID, err, string(plain) == s.secret, status, step)
		}
	}
	var keyID string
	if err := db.Pool.QueryRow(ctx, `SELECT key_id FROM mfa_totp WHERE user_id = $1`, unreadable.uid).Scan(&keyID); err != nil || keyID != "lost" {
		t.Errorf("the unreadable secret: key %s (%v), want left under lost", keyID, err)
	}

	// With the lost key listed again, the last one moves too.
	out.Reset()
	if err := run(ctx, []string{"mfa", "reseal"}, envOf(map[string]string{"DATABASE_URL": db.URL, "MFA_ENCRYPTION_KEYS": key("new", 2) + "," + key("lost", 3)}), &out); err != nil {
		t.Fatalf("mfa reseal: %v", err)
	}
	r = auth.Resealed{}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Resealed != 1 || len(r.Unreadable) != 0 || len(r.Remaining) != 0 {
		t.Fatalf("printed %q (%v), want 1 resealed and nothing left", out.String(), err)
	}
	if err := run(ctx, []string{"mfa", "reseal"}, envOf(map[string]string{"DATABASE_URL": db.URL}), &out); err == nil ||
		!strings.Contains(err.Error(), "MFA_ENCRYPTION_KEYS") {
		t.Errorf("mfa reseal without keys: %v, want it refused naming MFA_ENCRYPTION_KEYS", err)
	}
}
