package httpapi

import (
	"github.com/gofiber/fiber/v2"
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
