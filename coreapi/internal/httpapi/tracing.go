package httpapi

import (
	"strings"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/logging"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// requestTracer gives each request a server span, the child of the
// proxy's span when the request carries its traceparent (a proxy forwards
// a client's trace context only from TRUSTED_PROXY_CIDRS, and replaces it
// otherwise). Only a request that carries an identity signature, as every
// request a proxy sends does, has its trace context adopted: another
// caller that reaches coreapi's port (an app container beside its
// sidecar, on the app-sidecar overlay) starts a trace of its own rather
// than choose the trace id coreapi logs. The span travels in the request's user context:
// the database queries (pgtrace) and the log lines (tracing.LogHandler) of
// the request find it there. It is named after the route template once
// routing is done, "unmatched" for a request no route took.
type requestTracer struct {
	p  *tracing.Provider
	tr trace.Tracer
}

func newRequestTracer(p *tracing.Provider) *requestTracer {
	return &requestTracer{p: p, tr: p.Tracer("github.com/tollgate-auth/tollgate/coreapi")}
}

// middleware traces the requests that reach the middleware.
func (t *requestTracer) middleware(c *fiber.Ctx) error {
	span := t.start(c)
	err := c.Next()
	route := c.Route().Path
	if route == "/" {
		route = "unmatched"
	}
	t.end(c, span, route)
	return err
}

// start starts the request's span and puts it in its user context.
func (t *requestTracer) start(c *fiber.Ctx) trace.Span {
	ctx := c.UserContext()
	if h := &c.Request().Header; len(h.Peek(identity.HeaderSignature)) > 0 {
		ctx = t.p.Propagator.Extract(ctx, tracing.RequestHeaderCarrier{H: h})
	}
	ctx, span := t.tr.Start(ctx, methodName(c.Method()), trace.WithSpanKind(trace.SpanKindServer))
	c.SetUserContext(ctx)
	return span
}

// end names the answered request's span after its route and ends it.
func (t *requestTracer) end(c *fiber.Ctx, span trace.Span, route string) {
	if span.IsRecording() {
		method := methodName(c.Method())
		status := c.Response().StatusCode()
		id := IdentityOf(c)
		span.SetName(method + " " + route)
		span.SetAttributes(
			attribute.String("http.request.method", method),
			attribute.String("http.route", route),
			attribute.String("url.path", strings.Clone(logging.ClipPath(c.Path()))),
			attribute.Int("http.response.status_code", status),
			attribute.String("tollgate.request_id", RequestIDOf(c)),
			attribute.String("tollgate.principal", id.Principal),
		)
		if id.UserID != "" {
			span.SetAttributes(attribute.String("tollgate.user_id", id.UserID), attribute.String("tollgate.tenant_id", id.TenantID))
		}
		// The key an api_key principal acts with: what its holder did is
		// traced to the key, not only to the user it acts as.
		if k := APIKeyOf(c); k != "" {
			span.SetAttributes(attribute.String("tollgate.api_key_id", k))
		}
		if status >= 500 {
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}
