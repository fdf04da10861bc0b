package server

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/shared/logging"
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
	b = st.times.Append(b, st.start.Add(d))
	b = append(b, `","level":"INFO","msg":"request","request_id":`...)
	b = logging.AppendString(b, b2s(st.reqID))
	b = append(b, `,"method":`...)
	b = logging.AppendString(b, logMethod(c.Request().Header.Method()))
	b = append(b, `,"path":`...)
	b = logging.AppendString(b, logging.ClipPath(b2s(st.path)))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"duration_ms":`...)
	b = logging.AppendMillis(b, d.Microseconds())
	b = append(b, `,"route":`...)
	b = logging.AppendString(b, st.route)
	b = append(b, `,"upstream":`...)
	b = logging.AppendString(b, st.upstream)
	b = append(b, `,"outcome":`...)
	b = logging.AppendString(b, st.outcome)
	b = append(b, `,"principal":`...)
	b = logging.AppendString(b, st.principal)
	b = append(b, `,"user_id":`...)
	b = logging.AppendString(b, userID)
	b = append(b, `,"tenant_id":`...)
	b = logging.AppendString(b, tenantID)
	b = append(b, `,"remote_ip":"`...)
	if ip, ok := netip.AddrFromSlice(c.Context().RemoteIP()); ok {
		b = ip.Unmap().AppendTo(b)
	}
	b = append(b, '"')
	if len(st.clientReqID) > 0 {
		b = append(b, `,"client_request_id":`...)
		b = logging.AppendString(b, b2s(st.clientReqID))
	}
	if st.trace.on {
		b = append(b, `,"trace_id":`...)
		b = logging.AppendString(b, b2s(st.trace.id[:]))
	}
	b = append(b, "}\n"...)
	st.line = b
	s.d.Lines.Append(b)
}
