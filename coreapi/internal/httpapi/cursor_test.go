package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCursorRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	cc := newCursorCodec(DeriveCursorKey([]byte("0123456789abcdef0123456789abcdef")))
	type key struct {
		T  int64  `json:"t"`
		ID string `json:"id"`
	}
	in := key{T: 1_700_000_000_000_000, ID: "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001"}
	c := cc.encode("users", "tenant-a", in)
	var out key
	if err := cc.decode("users", "tenant-a", c, &out); err != nil || out != in {
		t.Fatalf("decode = %+v, %v; want %+v", out, err, in)
	}
	other := newCursorCodec(DeriveCursorKey([]byte("ffffffffffffffffffffffffffffffff")))
	tests := []struct {
		name, list, scope, cursor string
		cc                        cursorCodec
	}{
		{"other list", "roles", "tenant-a", c, cc},
		{"other scope", "users", "tenant-b", c, cc},
		{"other key", "users", "tenant-a", c, other},
		{"truncated", "users", "tenant-a", c[:len(c)-1], cc},
		{"empty", "users", "tenant-a", "", cc},
		{"too long", "users", "tenant-a", strings.Repeat("A", 2000) + "." + strings.Repeat("A", 22), cc},
		// The base64 decoder skips CR and LF even when strict: each would
		// be another spelling of the same cursor.
		{"line feed inside", "users", "tenant-a", c[:4] + "\n" + c[4:], cc},
		{"carriage return in the tag", "users", "tenant-a", c[:len(c)-2] + "\r" + c[len(c)-2:], cc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cc.decode(tt.list, tt.scope, tt.cursor, &out); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// FuzzCursorDecode: arbitrary input never panics, and only what encode
// produced is accepted.
func FuzzCursorDecode(f *testing.F) {
	cc := newCursorCodec(DeriveCursorKey([]byte("0123456789abcdef0123456789abcdef")))
	good := cc.encode("users", "t", TimeKey{T: 5, ID: "x"})
	f.Add(good)
	f.Add("")
	f.Add(".")
	f.Add("eyJ0Ijo1fQ.AAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		var k TimeKey
		err := cc.decode("users", "t", s, &k)
		if err == nil && s != good {
			// Another encoding of the same payload and tag would need the
			// key; base64 has one canonical raw-URL form per byte string.
			if cc.encode("users", "t", k) != s {
				t.Fatalf("forged cursor %q accepted as %+v", s, k)
			}
		}
	})
}

// TestAfterMatchesEncode: After writes TimeKey's JSON by hand and reuses
// pooled HMAC states; its cursors must stay the bytes that encode (through
// encoding/json and a fresh HMAC) makes, so cursors handed out before keep
// decoding, and DecodeAfter must read them back.
func TestAfterMatchesEncode(t *testing.T) {
	t.Parallel()
	c := &Cursors{cc: newCursorCodec(DeriveCursorKey([]byte("0123456789abcdef0123456789abcdef")))}
	fresh := func(list, scope string, v any) string {
		payload, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, c.cc.key)
		m.Write([]byte(list + "\x00" + scope + "\x00"))
		m.Write(payload)
		enc := base64.RawURLEncoding
		return enc.EncodeToString(payload) + "." + enc.EncodeToString(m.Sum(nil)[:macLen])
	}
	times := []time.Time{time.UnixMicro(0), time.UnixMicro(1_700_000_000_123_456), time.UnixMicro(-62135596800000000),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600))}
	idList := []string{"0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001", "", `a"b\c<d>&e`, "\u2028\x01é\xff"}
	for _, tm := range times {
		for _, id := range idList {
			for _, scope := range []string{"tenant-a", ""} {
				got := c.After("users", scope, tm, id)
				if want := fresh("users", scope, TimeKey{T: tm.UnixMicro(), ID: id}); got != want {
					t.Fatalf("After(%v, %q) = %q, want %q", tm, id, got, want)
				}
				if again := c.After("users", scope, tm, id); again != got { // from a pooled state
					t.Fatalf("second After = %q, want %q", again, got)
				}
				if got != c.Encode("users", scope, TimeKey{T: tm.UnixMicro(), ID: id}) {
					t.Fatal("After and Encode differ")
				}
			}
		}
	}
	id := idList[0]
	at, gotID, err := c.DecodeAfter("users", "tenant-a", c.After("users", "tenant-a", times[1], id))
	if err != nil || !at.Equal(times[1]) || gotID != id {
		t.Fatalf("DecodeAfter = %v, %q, %v", at, gotID, err)
	}
}

// BenchmarkCursorAfter: the cursor of a page that has a next one.
func BenchmarkCursorAfter(b *testing.B) {
	c := &Cursors{cc: newCursorCodec(DeriveCursorKey([]byte("0123456789abcdef0123456789abcdef")))}
	tm := time.UnixMicro(1_700_000_000_123_456)
	b.ReportAllocs()
	for b.Loop() {
		_ = c.After("users", "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0002", tm, "0b4f1f8e-1111-4c2a-9a53-7a1f7e0c0001")
	}
}

// TestCursorOfAnotherListedKey: a codec decodes the cursors of the keys it
// is given besides its own (the other identity keys' during a rotation),
// and makes its cursors with its own key only.
func TestCursorOfAnotherListedKey(t *testing.T) {
	t.Parallel()
	oldKey := DeriveCursorKey([]byte("0123456789abcdef0123456789abcdef"))
	newKey := DeriveCursorKey([]byte("ffffffffffffffffffffffffffffffff"))
	old, switched := newCursorCodec(oldKey, oldKey, newKey), newCursorCodec(newKey, newKey, oldKey)
	if len(old.others) != 1 || len(switched.others) != 1 {
		t.Fatalf("others %d and %d, want the one other key each", len(old.others), len(switched.others))
	}
	var k TimeKey
	for _, c := range []string{old.encode("users", "t", TimeKey{T: 1, ID: "a"}), switched.encode("users", "t", TimeKey{T: 1, ID: "a"})} {
		for _, cc := range []cursorCodec{old, switched} {
			if err := cc.decode("users", "t", c, &k); err != nil {
				t.Errorf("cursor %s refused: %v", c, err)
			}
			if err := cc.decode("users", "u", c, &k); err == nil {
				t.Errorf("cursor %s accepted in another scope", c)
			}
		}
	}
	if old.encode("users", "t", k) == switched.encode("users", "t", k) {
		t.Error("both codecs make the same cursor: one sealed with another key than its own")
	}
	if err := newCursorCodec(newKey).decode("users", "t", old.encode("users", "t", k), &k); err == nil {
		t.Error("a codec without the old key decoded its cursor")
	}
}
