package logging

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Appending a record's parts as log/slog's JSON handler writes them, for a
// line encoded by hand (authproxy's access lines) that must read as the
// logger's own.

const hexDigits = "0123456789abcdef"

// AppendTime appends t as log/slog's JSON handler writes a record's time:
// RFC 3339 with as many fractional digits as the nanoseconds need (none
// for a whole second; its text handler is the one that writes
// milliseconds).
func AppendTime(b []byte, t time.Time) []byte {
	return t.AppendFormat(b, time.RFC3339Nano)
}

// TimeCache appends times as AppendTime does, formatting the date, the
// time of day and the zone once per second: an access line is written
// for every request, and formatting all of it each time cost about 600
// instructions of its 5,500. The zero value is ready; a TimeCache is not
// safe for concurrent use (keep one per goroutine or pooled state).
type TimeCache struct {
	unix int64
	loc  *time.Location
	// text is "2006-01-02T15:04:05" of that second, zone its
	// "Z07:00" ("Z" in UTC); n is the length of text (0: empty cache).
	text [19]byte
	n    int
	zone [6]byte
	nz   int
}

// Append appends t as AppendTime does.
func (c *TimeCache) Append(b []byte, t time.Time) []byte {
	sec, loc := t.Unix(), t.Location()
	if c.n == 0 || c.unix != sec || c.loc != loc {
		var tmp [40]byte
		f := t.Truncate(time.Second).AppendFormat(tmp[:0], time.RFC3339)
		if len(f) <= len(c.text) || len(f)-len(c.text) > len(c.zone) || f[4] != '-' || f[10] != 'T' ||
			f[19] != 'Z' && f[19] != '+' && f[19] != '-' {
			return AppendTime(b, t) // a year outside 0000–9999
		}
		c.unix, c.loc = sec, loc
		c.n = copy(c.text[:], f)
		c.nz = copy(c.zone[:], f[len(c.text):])
	}
	b = append(b, c.text[:c.n]...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, c.zone[:c.nz]...)
}

// AppendMillis appends a duration of us microseconds in milliseconds as
// strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64) does (the
// shortest decimal that reads back as that float: the exact quotient,
// trailing zeros trimmed, for any duration a process lives), without the
// float formatting.
func AppendMillis(b []byte, us int64) []byte {
	if us < -maxExactMicros || us > maxExactMicros {
		return strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64)
	}
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1000, 10)
	if f := us % 1000; f != 0 {
		d := [4]byte{'.', byte('0' + f/100), byte('0' + f/10%10), byte('0' + f%10)}
		n := 4
		for d[n-1] == '0' {
			n--
		}
		b = append(b, d[:n]...)
	}
	return b
}

// maxExactMicros bounds the durations AppendMillis formats itself: below
// it, float64 values a thousandth apart are distinct, so the quotient's
// own decimals are the shortest that read back (2^50 µs is 35 years).
const maxExactMicros = 1 << 50

// jsonSafe[c]: the byte c stands for itself in a JSON string (printable
// ASCII but for the quote and the backslash).
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plain reports whether the 8 bytes of x all stand for themselves in a
// JSON string: none below 0x20 or from 0x80, no quote or backslash (the
// classic "has a byte less than n" and "has a zero byte" word tricks,
// exact for whether any byte matches).
func plain(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := x ^ 0x2222222222222222 // '"'
	k := x ^ 0x5c5c5c5c5c5c5c5c // '\\'
	return (x|(x-0x2020202020202020)&^x|(q-ones)&^q|(k-ones)&^k)&highs == 0
}

// word8 is the first 8 bytes of s, the first in the low byte (one load).
func word8(s string) uint64 {
	s = s[:8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// AppendString appends s as a JSON string, as log/slog's JSON handler
// writes one: quotes, backslashes and control bytes escaped, invalid UTF-8
// replaced by U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && plain(word8(s[i:])) {
			i += 8
		}
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
