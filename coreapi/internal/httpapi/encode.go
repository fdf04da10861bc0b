package httpapi

import (
	"sync"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/jsonenc"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// jsonAppender is a response body that writes its own JSON, the same bytes
// encoding/json (c.JSON) would write, without reflection.
type jsonAppender interface {
	AppendJSON(b []byte) []byte
}

// bodyBufs holds scratch buffers for sendJSON: fasthttp copies the body
// into its own pooled buffer, so the scratch is reused at once.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// sendJSON answers status with v as application/json, like c.JSON.
func sendJSON(c *fiber.Ctx, status int, v jsonAppender) error {
	bp := bodyBufs.Get().(*[]byte)
	b := v.AppendJSON((*bp)[:0])
	resp := c.Response()
	resp.SetStatusCode(status)
	resp.Header.SetContentType(fiber.MIMEApplicationJSON)
	resp.SetBody(b)
	if cap(b) <= 1<<20 { // keep no giant buffer alive
		*bp = b
		bodyBufs.Put(bp)
	}
	return nil
}

// memberPage is the member list's response, written by AppendJSON.
type memberPage listResponse[users.Member]

// AppendJSON appends p as encoding/json marshals listResponse[users.Member]
// (a test holds them equal).
func (p memberPage) AppendJSON(b []byte) []byte {
	b = append(b, `{"data":`...)
	if p.Data == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range p.Data {
			if i > 0 {
				b = append(b, ',')
			}
			b = p.Data[i].AppendJSON(b)
		}
		b = append(b, ']')
	}
	b = append(b, `,"next_cursor":`...)
	if p.NextCursor == nil {
		b = append(b, "null"...)
	} else {
		b = jsonenc.String(b, *p.NextCursor)
	}
	if p.Total != nil {
		b = jsonenc.Int(append(b, `,"total":`...), *p.Total)
	}
	return append(b, '}')
}
