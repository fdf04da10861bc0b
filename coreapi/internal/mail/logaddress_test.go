package mail_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/tollgate-auth/tollgate/coreapi/internal/mail"
	"github.com/tollgate-auth/tollgate/coreapi/internal/mail/mailtest"
)

// TestMailFailureLogHoldsNoAddress: a mail server's refusal usually quotes
// the recipient ("550 5.1.1 <ada@example.com>: Recipient address
// rejected"), and go-mail adds "affected recipient(s): ..." to its
// error; the sender logged that error whole ("mail parked", "mail
// delivery failed; will retry"), while coreapi's "request failed" line
// keeps addresses out of the log. The logged error now has every address
// redacted, and keeps the reply's status code and enhanced status code;
// the row's last_error, beside the row's own address, keeps the reply
// whole.
func TestMailFailureLogHoldsNoAddress(t *testing.T) {
	const to = "victim.name+tag@example.org"
	for _, tc := range []struct {
		name   string
		refuse func(*mailtest.Server, int)
		code   int
		line   string
		keep   []string // in the logged error
	}{
		{"RCPT TO 550", (*mailtest.Server).RefuseRcpt, 550, "mail refused; held until the mail server accepts or refuses another mail", []string{"550", "5.0.0"}},
		{"RCPT TO 450", (*mailtest.Server).RefuseRcpt, 450, "mail delivery failed; will retry", []string{"450", "4.0.0"}},
		{"DATA 554", (*mailtest.Server).Refuse, 554, "mail refused; held until the mail server accepts or refuses another mail", []string{"554"}},
		{"DATA 451", (*mailtest.Server).Refuse, 451, "mail delivery failed; will retry", []string{"451"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, mail.SenderOptions{})
			var logs bytes.Buffer
			s := r.sender(t, mail.SenderOptions{Transport: mustSMTP(t, r.smtp.URL()+"?starttls=off"),
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			tc.refuse(r.smtp, tc.code)
			m := verify
			m.To = to
			r.enqueue(t, m)
			if n, err := s.SendDue(context.Background()); err != nil || n != 1 {
				t.Fatalf("SendDue = %d, %v; want the mail claimed", n, err)
			}
			var logged []string
			for line := range strings.Lines(logs.String()) {
				var l struct {
					Msg string `json:"msg"`
					Err string `json:"err"`
				}
				if err := json.Unmarshal([]byte(line), &l); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if l.Msg == tc.line {
					logged = append(logged, l.Err)
				}
			}
			if len(logged) != 1 {
				t.Fatalf("%d %q lines, want 1; log:\n%s", len(logged), tc.line, logs.String())
			}
			if strings.Contains(logs.String(), "victim") || strings.Contains(logs.String(), "@example.org") {
				t.Errorf("the log holds the recipient's address:\n%s", logs.String())
			}
			for _, k := range tc.keep {
				if !strings.Contains(logged[0], k) {
					t.Errorf("logged error %q lacks %s", logged[0], k)
				}
			}
			if rows := r.rows(t); rows[0].LastErr == nil || !strings.Contains(*rows[0].LastErr, fmt.Sprint(tc.code)) {
				t.Errorf("row %+v; want the %d recorded", rows[0], tc.code)
			}
		})
	}
}
