package server

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/tollgate-auth/tollgate/authproxy/internal/streams"
	"github.com/tollgate-auth/tollgate/shared/logging"
)

// lineFields are the fields a request's access line and the end line of
// the stream it opens share: both lines write them with append (buffered)
// or attrs (through the logger), so that a field added to one is in the
// other. A request's are views of its pooled state (fields); a stream's,
// copies (clone).
type lineFields struct {
	reqID, method, path, route, upstream string
	principal, userID, tenantID          string
	remoteIP                             netip.Addr // the peer; the zero Addr (written "") when unknown
	clientReqID, traceID                 string     // "" (left out) when none
}

// fields are the request's shared line fields, views of st and c's
// memory: valid until the request's state goes back to the pool.
func (st *state) fields(c *fiber.Ctx) lineFields {
	userID, tenantID := st.ids()
	f := lineFields{reqID: b2s(st.reqID), method: logMethod(c.Request().Header.Method()),
		path: logging.ClipPath(b2s(st.path)), route: st.route, upstream: st.upstream,
		principal: st.principal, userID: userID, tenantID: tenantID, clientReqID: b2s(st.clientReqID)}
	if ip, ok := netip.AddrFromSlice(c.Context().RemoteIP()); ok {
		f.remoteIP = ip.Unmap()
	}
	if st.trace.on {
		f.traceID = b2s(st.trace.id[:])
	}
	return f
}

// clone is f with strings of its own, to outlive the request.
func (f lineFields) clone() lineFields {
	for _, p := range []*string{&f.reqID, &f.method, &f.path, &f.route, &f.upstream, &f.principal, &f.userID, &f.tenantID, &f.clientReqID, &f.traceID} {
		*p = strings.Clone(*p)
	}
	return f
}

// append writes f's fields as JSON members, each after a comma.
func (f *lineFields) append(b []byte) []byte {
	b = append(b, `,"request_id":`...)
	b = logging.AppendString(b, f.reqID)
	b = append(b, `,"method":`...)
	b = logging.AppendString(b, f.method)
	b = append(b, `,"path":`...)
	b = logging.AppendString(b, f.path)
	b = append(b, `,"route":`...)
	b = logging.AppendString(b, f.route)
	b = append(b, `,"upstream":`...)
	b = logging.AppendString(b, f.upstream)
	b = append(b, `,"principal":`...)
	b = logging.AppendString(b, f.principal)
	b = append(b, `,"user_id":`...)
	b = logging.AppendString(b, f.userID)
	b = append(b, `,"tenant_id":`...)
	b = logging.AppendString(b, f.tenantID)
	b = append(b, `,"remote_ip":"`...)
	b = f.remoteIP.AppendTo(b) // nothing for the zero Addr
	b = append(b, '"')
	if f.clientReqID != "" {
		b = append(b, `,"client_request_id":`...)
		b = logging.AppendString(b, f.clientReqID)
	}
	if f.traceID != "" {
		b = append(b, `,"trace_id":`...)
		b = logging.AppendString(b, f.traceID)
	}
	return b
}

// attrs appends f's fields to a, as append writes them.
func (f *lineFields) attrs(a []slog.Attr) []slog.Attr {
	ip := ""
	if f.remoteIP.IsValid() {
		ip = f.remoteIP.String()
	}
	return append(a,
		slog.String("request_id", f.reqID),
		slog.String("method", f.method),
		slog.String("path", f.path),
		slog.String("route", f.route),
		slog.String("upstream", f.upstream),
		slog.String("principal", f.principal),
		slog.String("user_id", f.userID),
		slog.String("tenant_id", f.tenantID),
		slog.String("remote_ip", ip),
		optionalAttr("client_request_id", f.clientReqID), // empty, so left out, unless the client sent one not taken
		optionalAttr("trace_id", f.traceID),              // empty, so left out, unless traced
	)
}

// accessLine writes the request's access log line into Deps.Lines,
// buffered: the same JSON object the logger writes (time, level, msg,
// then the attributes of accessLog, in that order), encoded without
// allocating, and no write system call of its own.
//
//go:noinline
func (s *Server) accessLine(c *fiber.Ctx, st *state, status int, d time.Duration) {
	f := st.fields(c)
	b := st.line[:0]
	b = append(b, `{"time":"`...)
	b = st.times.Append(b, st.start.Add(d))
	b = append(b, `","level":"INFO","msg":"request"`...)
	b = f.append(b)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"duration_ms":`...)
	b = logging.AppendMillis(b, d.Microseconds())
	b = append(b, `,"outcome":`...)
	b = logging.AppendString(b, st.outcome)
	b = append(b, "}\n"...)
	st.line = b
	s.d.Lines.Append(b)
}

// accessLog writes the request's access log line through the logger. Out
// of line (noinline): its attributes are much code, and ACCESS_LOG may be
// off.
//
//go:noinline
func (s *Server) accessLog(c *fiber.Ctx, st *state, status int, d time.Duration) {
	f := st.fields(c)
	var buf [16]slog.Attr
	a := f.attrs(buf[:0])
	a = append(a,
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("outcome", st.outcome),
	)
	s.d.Log.LogAttrs(c.Context(), slog.LevelInfo, "request", a...)
}

// streamLine is what a stream's end line repeats of its opening request's
// access line (its lineFields), copied as the stream opens: the request's
// state is pooled, the stream outlives it.
type streamLine struct {
	s     *Server
	start time.Time
	f     lineFields
}

// streamEnded returns what tells the access log how the stream of the
// request st opens ended (streams.Request.Ended): one line per stream, at
// its end, as Envoy and nginx write a stream's access line.
func (s *Server) streamEnded(c *fiber.Ctx, st *state) func(streams.End) {
	l := &streamLine{s: s, start: st.start, f: st.fields(c).clone()}
	return l.ended
}

// ended writes the stream's end line: the fields of its request's access
// line that still hold (lineFields: not its status, nor its outcome, those
// of the opening), then its kind, why it ended
// (authproxy_streams_closed_total's reason), the bytes relayed each way,
// and a duration_ms from its request's start to its end. Buffered through
// Deps.Lines as access lines are, else through the logger.
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
		var buf [16]slog.Attr
		a := l.f.attrs(buf[:0])
		a = append(a,
			slog.String("kind", e.Kind),
			slog.String("reason", e.Reason),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.Int64("bytes_to_client", e.ToClient),
			slog.Int64("bytes_to_upstream", e.ToUpstream),
		)
		s.d.Log.LogAttrs(context.Background(), slog.LevelInfo, "stream end", a...)
		return
	}
	b := make([]byte, 0, 512)
	b = append(b, `{"time":"`...)
	b = logging.AppendTime(b, end)
	b = append(b, `","level":"INFO","msg":"stream end"`...)
	b = l.f.append(b)
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
