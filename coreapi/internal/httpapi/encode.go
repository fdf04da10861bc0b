package httpapi

import (
	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/coreapi/internal/jsonenc"
	"github.com/tollgate-auth/tollgate/coreapi/internal/users"
)

// JSONAppender is a response body that writes its own JSON, the same bytes
// encoding/json (c.JSON) would write, without reflection (for hot
// responses; everything else uses c.JSON).
type JSONAppender interface {
	AppendJSON(b []byte) []byte
}

// SendJSON answers status with v as application/json, like c.JSON does
// with encoding/json, for any route's handler. v is appended straight into
// fasthttp's pooled body buffer (taken out with SwapBody and put back): no
// copy, and no allocation once the buffer has grown to the answer's size.
func SendJSON(c *fiber.Ctx, status int, v JSONAppender) error {
	resp := c.Response()
	resp.SetStatusCode(status)
	resp.Header.SetContentType(fiber.MIMEApplicationJSON)
	buf := resp.SwapBody(nil)
	resp.SwapBody(v.AppendJSON(buf[:0]))
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
