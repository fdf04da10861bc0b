package httpapi

import (
	"strings"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// traceRequests returns the middleware that gives each request a server
// span, the child of the proxy's span when the request carries its
// traceparent (only the proxies reach coreapi, and a proxy forwards a
// client's trace context only from TRUSTED_PROXY_CIDRS). The span travels
// in the request's user context: the database queries (pgtrace) and the log
// lines (tracing.LogHandler) of the request find it there. It is named
// after the route template once routing is done.
func traceRequests(p *tracing.Provider) fiber.Handler {
	tr := p.Tracer("github.com/tollgate-auth/tollgate/coreapi")
	return func(c *fiber.Ctx) error {
		ctx := p.Propagator.Extract(c.UserContext(), tracing.RequestHeaderCarrier{H: &c.Request().Header})
		method := strings.Clone(c.Method())
		ctx, span := tr.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer))
		c.SetUserContext(ctx)
		err := c.Next()
		if span.IsRecording() {
			route := c.Route().Path
			if route == "/" {
				route = "unmatched"
			}
			status := c.Response().StatusCode()
			id := IdentityOf(c)
			span.SetName(method + " " + route)
			span.SetAttributes(
				attribute.String("http.request.method", method),
				attribute.String("http.route", route),
				attribute.String("url.path", strings.Clone(c.Path())),
				attribute.Int("http.response.status_code", status),
				attribute.String("tollgate.request_id", RequestIDOf(c)),
				attribute.String("tollgate.principal", id.Principal),
			)
			if id.UserID != "" {
				span.SetAttributes(attribute.String("tollgate.user_id", id.UserID), attribute.String("tollgate.tenant_id", id.TenantID))
			}
			if status >= 500 {
				span.SetStatus(codes.Error, "")
			}
		}
		span.End()
		return err
	}
}
