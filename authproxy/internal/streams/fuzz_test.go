package streams

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzFrames feeds an arbitrary byte stream to the frame tracker in
// pieces of any size: where it stands (inside a header, inside a
// payload, between frames) and whether a close frame began are what a
// reading of the whole stream, frame after frame, says.
func FuzzFrames(f *testing.F) {
	var stream []byte
	for _, fr := range [][]byte{frame(0, false), frame(5, false), frame(125, true), frame(126, false), frame(300, true), frame(3, false)} {
		stream = append(stream, fr...)
	}
	f.Add(stream, uint8(1))
	f.Add(stream, uint8(7))
	f.Add(append(closeFrame("token_expired"), 0x81, 0x7f, 0, 0, 0, 0, 0, 0, 1), uint8(3))
	f.Add([]byte{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5}, uint8(2))
	f.Add([]byte{0x88, 0xfe, 0, 1, 9, 9, 9, 9, 0}, uint8(4))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		var fr frames
		n := max(int(step), 1)
		for off := 0; off < len(stream); off += n {
			fr.feed(stream[off:min(off+n, len(stream))])
		}
		// The whole stream, frame by frame.
		var hn int
		var remain uint64
		closed := false
		for p := stream; len(p) > 0; {
			need := 2
			if len(p) >= 2 {
				switch p[1] & 0x7f {
				case 126:
					need += 2
				case 127:
					need += 8
				}
				if p[1]&0x80 != 0 {
					need += 4
				}
			}
			if len(p) < need {
				hn = len(p)
				break
			}
			var l uint64
			switch p[1] & 0x7f {
			case 126:
				l = uint64(binary.BigEndian.Uint16(p[2:4]))
			case 127:
				l = binary.BigEndian.Uint64(p[2:10])
			default:
				l = uint64(p[1] & 0x7f)
			}
			closed = closed || p[0]&0x0f == 0x8
			p = p[need:]
			if l > uint64(len(p)) {
				remain = l - uint64(len(p))
				break
			}
			p = p[l:]
		}
		if fr.hn != hn || fr.remain != remain || fr.closed != closed || fr.boundary() != (hn == 0 && remain == 0) {
			t.Fatalf("fed %x by %d: hn %d remain %d closed %v; want hn %d remain %d closed %v",
				stream, n, fr.hn, fr.remain, fr.closed, hn, remain, closed)
		}
	})
}

// FuzzClientHandshake: whatever a client's upgrade carries as its
// version and key, checking it never panics, and a key accepted is the
// base64 of 16 bytes, answered with its Sec-WebSocket-Accept.
func FuzzClientHandshake(f *testing.F) {
	f.Add("13", "dGhlIHNhbXBsZSBub25jZQ==")
	f.Add("13", "dGhlIHNhbXBsZSBub25jZQ")
	f.Add("13", "dGhlIHNhbXBsZSBub25jZQ====")
	f.Add("13", "dGhlIHNhbXBsZSBub25jZQ=\x00")
	f.Add("8", "dGhlIHNhbXBsZSBub25jZQ==")
	f.Add("13", "")
	f.Fuzz(func(t *testing.T, version, key string) {
		var h fasthttp.RequestHeader
		h.Set("Sec-WebSocket-Version", version)
		h.Set("Sec-WebSocket-Key", key)
		got := string(h.Peek("Sec-WebSocket-Key"))
		accept, ok := clientHandshake(&h)
		if !ok {
			return
		}
		raw, err := base64.StdEncoding.DecodeString(got)
		if string(h.Peek("Sec-WebSocket-Version")) != "13" || err != nil || len(raw) != 16 || len(got) != 24 {
			t.Fatalf("accepted version %q, key %q (%d bytes, %v)", version, got, len(raw), err)
		}
		sum := sha1.Sum([]byte(got + websocketGUID))
		if want := base64.StdEncoding.EncodeToString(sum[:]); string(accept[:]) != want {
			t.Fatalf("key %q: accept %s, want %s", got, accept, want)
		}
		// RFC 6455's example.
		if got == "dGhlIHNhbXBsZSBub25jZQ==" && string(accept[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
			t.Fatalf("RFC 6455 example: accept %s", accept)
		}
	})
}
