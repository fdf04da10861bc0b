package natsinv

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/authproxy/internal/testenv"
	"github.com/tollgate-auth/tollgate/shared/invalidation"
)

// FuzzMessage hands a connected subscriber messages with arbitrary
// subjects, payloads and headers, through the handler its subscription
// for the subject calls. None panics, and a payload that does not parse
// is what the code says: an invalidation still evicts what its subject
// names (the body is informational), a subject not understood purges
// everything, an unreadable auth.keys.changed refetches the key set (no
// digest), a heartbeat row's list of relays stays within its bounds.
func FuzzMessage(f *testing.F) {
	for _, c := range []struct {
		subject, data string
		row           bool
		hk, hv        string
	}{
		{invalidation.UserSubject("u1"), `{"at":1,"reason":"password_changed"}`, false, "", ""},
		{invalidation.TenantSubject("t1"), `{"at":-1}`, false, "", ""}, {invalidation.SubjectAll, ``, false, "", ""},
		{invalidation.APIKeySubject("abcdefgh01234567"), `not json`, false, "", ""},
		{"auth.invalidate.session.x", `{"at":9223372036854775807}`, false, "", ""},
		{invalidation.SubjectHeartbeat, `{"at":1,"relays":["r1","r2",""],"relays_unlisted":-5,"interval_ms":9223372036854775807}`, true, "", ""},
		{invalidation.SubjectHeartbeat, `{"relays":"r1"}`, true, "Nats-Msg-Id", ""}, {invalidation.SubjectHeartbeat, `{"at":1}`, false, "X", "y"},
		{invalidation.SubjectRelay, `{"relay":"r1"}`, false, "", ""}, {invalidation.SubjectRelay, `{"relay":1}`, false, "", ""},
		{invalidation.SubjectKeysChanged, `{"keys":"sha256:ab"}`, false, "", ""}, {invalidation.SubjectKeysChanged, `[`, false, "", ""},
		{invalidation.SubjectKeysChanged, `null`, false, "", ""}, {invalidation.UserSubject("u1"), "\xff\x00", false, "\x00", "\r\n"},
	} {
		f.Add(c.subject, []byte(c.data), c.row, c.hk, c.hv)
	}
	n := testenv.StartNATS(f)
	r := newRecorder(f)
	var mu sync.Mutex
	keys, apiKeys := []string{}, []string{}
	// KeysChangedGap: each input's auth.keys.changed answered at once.
	s, _ := connectWithPublisher(f, n, Options{HeartbeatTimeout: time.Minute, KeysChangedGap: time.Nanosecond,
		KeysChanged: func(k string) { mu.Lock(); keys = append(keys, k); mu.Unlock() },
		APIKey:      func(id string) { mu.Lock(); apiKeys = append(apiKeys, id); mu.Unlock() }}, r, metrics.New())
	testenv.Eventually(f, func() error { return testenv.Want("connected", s.Connected(), true) })
	f.Fuzz(func(t *testing.T, subject string, data []byte, row bool, hk, hv string) {
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		if hk != "" {
			msg.Header.Add(hk, hv)
		}
		if row {
			msg.Header.Set(nats.MsgIdHdr, "hb-1")
		}
		var ev invalidation.Event
		parsed := json.Unmarshal(data, &ev) == nil
		switch subject {
		case invalidation.SubjectKeysChanged:
			mu.Lock()
			before := len(keys)
			mu.Unlock()
			s.keysChanged(msg)
			mu.Lock()
			got := keys[before:]
			mu.Unlock()
			want := ""
			if parsed {
				want = ev.Keys
			}
			if len(got) != 1 || got[0] != want {
				t.Fatalf("auth.keys.changed %q: key set refetched with %q, want %q", data, got, want)
			}
			return
		case invalidation.SubjectHeartbeat:
			s.heartbeat(msg)
			s.linkMu.Lock()
			defer s.linkMu.Unlock()
			if len(s.listed) > maxRelaysListed || s.unlisted < 0 {
				t.Fatalf("heartbeat %q: %d relays listed, %d unlisted", data, len(s.listed), s.unlisted)
			}
			for id := range s.listed {
				if id == "" || len(id) > maxRelayID {
					t.Fatalf("heartbeat %q: listed %q", data, id)
				}
			}
			return
		case invalidation.SubjectRelay:
			s.relayBeat(msg)
			s.linkMu.Lock()
			defer s.linkMu.Unlock()
			if len(s.heard) > maxRelaysHeard {
				t.Fatalf("relay beat %q: %d relays heard", data, len(s.heard))
			}
			return
		}
		r.mu.Lock()
		users, purges := len(r.users), r.purges
		r.mu.Unlock()
		mu.Lock()
		keyed := len(apiKeys)
		mu.Unlock()
		s.handle(msg)
		kind, id := invalidation.Parse(subject)
		r.mu.Lock()
		defer r.mu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		switch kind {
		case invalidation.KindUser:
			if len(r.users) != users+1 || r.users[users] != id {
				t.Fatalf("%s %q: users evicted %v", subject, data, r.users[users:])
			}
		case invalidation.KindAPIKey:
			if len(apiKeys) != keyed+1 || apiKeys[keyed] != id {
				t.Fatalf("%s %q: API keys evicted %v", subject, data, apiKeys[keyed:])
			}
		case invalidation.KindAll, invalidation.KindUnknown:
			if r.purges != purges+1 {
				t.Fatalf("%s %q: %d purges", subject, data, r.purges-purges)
			}
		}
	})
}
