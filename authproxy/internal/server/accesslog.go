package server

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// accessLine writes the request's access log line into Deps.Lines,
// buffered: the same JSON object the logger writes (time, level, msg,
// then the attributes of accessLog, in that order), encoded without
// allocating, and no write system call of its own.
//
//go:noinline
func (s *Server) accessLine(c *fiber.Ctx, st *state, status int, d time.Duration) {
	userID, tenantID := st.ids()
	b := st.line[:0]
	b = append(b, `{"time":"`...)
	b = appendRFC3339Millis(b, st.start.Add(d))
	b = append(b, `","level":"INFO","msg":"request","request_id":`...)
	b = appendJSONString(b, b2s(st.reqID))
	b = append(b, `,"method":`...)
	b = appendJSONString(b, logMethod(c.Request().Header.Method()))
	b = append(b, `,"path":`...)
	b = appendJSONString(b, b2s(st.path))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, st.route)
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, st.upstream)
	b = append(b, `,"outcome":`...)
	b = appendJSONString(b, st.outcome)
	b = append(b, `,"principal":`...)
	b = appendJSONString(b, st.principal)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, userID)
	b = append(b, `,"tenant_id":`...)
	b = appendJSONString(b, tenantID)
	b = append(b, `,"remote_ip":"`...)
	if ip, ok := netip.AddrFromSlice(c.Context().RemoteIP()); ok {
		b = ip.Unmap().AppendTo(b)
	}
	b = append(b, '"')
	if st.trace.on {
		b = append(b, `,"trace_id":`...)
		b = appendJSONString(b, b2s(st.trace.id[:]))
	}
	b = append(b, "}\n"...)
	st.line = b
	s.d.Lines.Append(b)
}

const hexDigits = "0123456789abcdef"

// appendRFC3339Millis appends t as log/slog writes a record's time: RFC
// 3339 with milliseconds. time's RFC3339Nano layout has a fast path of its
// own; it trims trailing zeros, so a tenth of a millisecond is added to
// keep four digits, and the fourth is dropped (as slog does).
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}

// jsonSafe[c]: the byte c stands for itself in a JSON string (printable
// ASCII but for the quote and the backslash).
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as a JSON string, as log/slog's JSON handler
// writes one: quotes, backslashes and control bytes escaped, invalid UTF-8
// replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && jsonSafe[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
				i++
				start = i
				continue
			}
			if r == '\u2028' || r == '\u2029' {
				b = append(b, s[start:i]...)
				b = append(b, `\u202`...)
				b = append(b, hexDigits[r&0xf])
				i += size
				start = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
