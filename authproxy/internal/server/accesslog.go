package server

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/authproxy/internal/streams"
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

// streamLine is what a stream's end line repeats of its opening request's
// access line, copied as the stream opens: the request's state is pooled,
// the stream outlives it.
type streamLine struct {
	s                                     *Server
	start                                 time.Time
	reqID, method, path, route, upstream  string
	principal, userID, tenantID, remoteIP string
	clientReqID, traceID                  string
}

// streamEnded returns what tells the access log how the stream of the
// request st opens ended (streams.Request.Ended): one line per stream, at
// its end, as Envoy and nginx write a stream's access line. path is the
// request's normalized path, traceID its trace id ("" untraced), both
// copied already.
func (s *Server) streamEnded(c *fiber.Ctx, st *state, path, traceID string) func(streams.End) {
	userID, tenantID := st.ids()
	l := &streamLine{s: s, start: st.start, reqID: string(st.reqID), method: string(logMethod(c.Request().Header.Method())),
		path: logging.ClipPath(path), route: st.route, upstream: st.upstream, principal: st.principal,
		userID: userID, tenantID: tenantID, clientReqID: string(st.clientReqID), traceID: traceID}
	if ip, ok := netip.AddrFromSlice(c.Context().RemoteIP()); ok {
		l.remoteIP = ip.Unmap().String()
	}
	return l.ended
}

// ended writes the stream's end line: the fields of its request's access
// line that still hold (not its status, nor its outcome: those of the
// opening), then its kind, why it ended (authproxy_streams_closed_total's
// reason), the bytes relayed each way, and a duration_ms from its
// request's start to its end. Buffered through Deps.Lines as access
// lines are, else through the logger.
func (l *streamLine) ended(e streams.End) {
	s := l.s
	if !s.d.Log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	end := time.Now() // the clock the request's start was read from
	if !s.ctxClock {
		end = s.d.Now()
	}
	d := end.Sub(l.start)
	if s.d.Lines == nil {
		s.d.Log.LogAttrs(context.Background(), slog.LevelInfo, "stream end",
			slog.String("request_id", l.reqID),
			slog.String("method", l.method),
			slog.String("path", l.path),
			slog.String("kind", e.Kind),
			slog.String("reason", e.Reason),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.Int64("bytes_to_client", e.ToClient),
			slog.Int64("bytes_to_upstream", e.ToUpstream),
			slog.String("route", l.route),
			slog.String("upstream", l.upstream),
			slog.String("principal", l.principal),
			slog.String("user_id", l.userID),
			slog.String("tenant_id", l.tenantID),
			slog.String("remote_ip", l.remoteIP),
			optionalAttr("client_request_id", l.clientReqID),
			optionalAttr("trace_id", l.traceID),
		)
		return
	}
	b := make([]byte, 0, 512)
	b = append(b, `{"time":"`...)
	b = logging.AppendTime(b, end)
	b = append(b, `","level":"INFO","msg":"stream end","request_id":`...)
	b = logging.AppendString(b, l.reqID)
	b = append(b, `,"method":`...)
	b = logging.AppendString(b, l.method)
	b = append(b, `,"path":`...)
	b = logging.AppendString(b, l.path)
	b = append(b, `,"kind":`...)
	b = logging.AppendString(b, e.Kind)
	b = append(b, `,"reason":`...)
	b = logging.AppendString(b, e.Reason)
	b = append(b, `,"duration_ms":`...)
	b = logging.AppendMillis(b, d.Microseconds())
	b = append(b, `,"bytes_to_client":`...)
	b = strconv.AppendInt(b, e.ToClient, 10)
	b = append(b, `,"bytes_to_upstream":`...)
	b = strconv.AppendInt(b, e.ToUpstream, 10)
	b = append(b, `,"route":`...)
	b = logging.AppendString(b, l.route)
	b = append(b, `,"upstream":`...)
	b = logging.AppendString(b, l.upstream)
	b = append(b, `,"principal":`...)
	b = logging.AppendString(b, l.principal)
	b = append(b, `,"user_id":`...)
	b = logging.AppendString(b, l.userID)
	b = append(b, `,"tenant_id":`...)
	b = logging.AppendString(b, l.tenantID)
	b = append(b, `,"remote_ip":`...)
	b = logging.AppendString(b, l.remoteIP)
	if l.clientReqID != "" {
		b = append(b, `,"client_request_id":`...)
		b = logging.AppendString(b, l.clientReqID)
	}
	if l.traceID != "" {
		b = append(b, `,"trace_id":`...)
		b = logging.AppendString(b, l.traceID)
	}
	b = append(b, "}\n"...)
	s.d.Lines.Append(b)
}

// optionalAttr is a string attribute, the empty Attr (left out) when v
// is empty.
func optionalAttr(k, v string) slog.Attr {
	if v == "" {
		return slog.Attr{}
	}
	return slog.String(k, v)
}
