package logging

import (
	"regexp"

	"github.com/tollgate-auth/tollgate/shared/clip"
)

// MaxRedactedBytes bounds a text Redact returns (before its "..."): an
// error or panic value may quote a request of any size.
const MaxRedactedBytes = 512

// bearerText matches credentials in a raw error that quotes the request.
var bearerText = regexp.MustCompile(`(?i)(bearer|basic)\s+[^\s"\\]+`)

// apiKeyText matches an API key anywhere (a header or query quoted in an
// error).
var apiKeyText = regexp.MustCompile(`tg_[a-z0-9]{4,}[_A-Za-z0-9%]*`)

// quotedText matches a quoted (%q) string, or what is left of one at
// the end.
var quotedText = regexp.MustCompile(`"(?:[^"\\]|\\.)*(?:"|\\?$)`)

// Redact keeps credentials out of the log and bounds the line, for a
// text that may quote a request: an error, a recovered panic's value.
// Quoted text is dropped whole: in an error about the request it is the
// request's own bytes (fasthttp quotes a header value it refuses even
// with SecureErrorLogMessage), where a credential may be in any header
// and under any scheme, or cut so that no pattern below recognizes it.
// What is left is cut to MaxRedactedBytes (on a rune boundary) and
// marked "..." when cut.
func Redact(s string) string {
	s = quotedText.ReplaceAllString(s, `"[redacted]"`)
	s = bearerText.ReplaceAllString(s, "$1 [redacted]")
	s = apiKeyText.ReplaceAllString(s, "tg_[redacted]")
	return clip.Mark(s, MaxRedactedBytes)
}

// addressText matches a mail address, or what looks like one: a local
// part (possibly empty, as when a quoted one was cut off at its quote),
// "@", and a domain, a host name or an address literal ("[127.0.0.1]").
var addressText = regexp.MustCompile(`[^\s<>()\[\]"',;:@\\]*@(?:\[[^\]\s]*\]|[^\s<>()\[\]"',;:@\\]+)`)

// RedactAddresses keeps mail addresses out of the log, for a text that
// quotes a mail server's reply (an SMTP error): servers often name the
// recipient in it ("550 5.1.1 <ada@example.com>: Recipient address
// rejected"), and go-mail adds the affected recipients. Each address is
// replaced by "[address]". Unlike Redact, quoted text is kept: the reply
// reaches the error quoted (net/textproto), its status code and enhanced
// status code in it, which is what an operator needs. Credentials are
// redacted as Redact does, and the text is cut to MaxRedactedBytes.
func RedactAddresses(s string) string {
	s = addressText.ReplaceAllString(s, "[address]")
	s = bearerText.ReplaceAllString(s, "$1 [redacted]")
	s = apiKeyText.ReplaceAllString(s, "tg_[redacted]")
	return clip.Mark(s, MaxRedactedBytes)
}
