package projection

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/tollgate-auth/tollgate/authproxy/internal/metrics"
	"github.com/tollgate-auth/tollgate/shared/apikey"
	"github.com/tollgate-auth/tollgate/shared/clip"
	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/problem"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/tollgate-auth/tollgate/shared/tracing"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// HTTPFetcher fetches projections from coreapi's internal endpoint,
// authenticating with v2 identity headers signed with the core key over an
// anonymous identity.
type HTTPFetcher struct {
	hc      *fasthttp.HostClient
	host    string
	signer  *identity.KeySigner
	timeout time.Duration
	m       *metrics.Metrics
	now     func() time.Time
}

// NewHTTPFetcher returns a fetcher using hc (which must buffer bodies).
func NewHTTPFetcher(hc *fasthttp.HostClient, host string, signer *identity.KeySigner, timeout time.Duration, m *metrics.Metrics) *HTTPFetcher {
	return &HTTPFetcher{hc: hc, host: host, signer: signer, timeout: timeout, m: m, now: time.Now}
}

// maxProjection bounds a projection body.
const maxProjection = 1 << 20

// Fetch implements Fetcher.
func (f *HTTPFetcher) Fetch(ctx context.Context, userID, tenantID, requestID string) (*identity.Projection, error) {
	pq := identity.ProjectionPath + "/" + url.PathEscape(userID) + "?tenant_id=" + url.QueryEscape(tenantID)
	// The request id is what makes two identical signed requests'
	// signatures differ (coreapi refuses one without, and a signature it
	// accepted before): the client's may be reused by its client, so the
	// fetch has one of its own, which starts with it.
	requestID = requestid.Child(requestID)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(pq)
	req.Header.SetHost(f.host)
	if f.hc.IsTLS {
		req.URI().SetScheme("https") // the request line holds the path only
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set(identity.HeaderRequestID, requestID)
	ts := f.now().UnixMilli()
	id := identity.Identity{Principal: identity.PrincipalAnonymous}
	r := identity.Request{Timestamp: ts, RequestID: requestID, Method: fasthttp.MethodGet, PathQuery: pq, BodySHA256: identity.EmptyBodySHA256}
	req.Header.Set(identity.HeaderKeyID, f.signer.KeyID())
	req.Header.Set(identity.HeaderPrincipal, identity.PrincipalAnonymous)
	req.Header.Set(identity.HeaderEmailVerified, "false")
	req.Header.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(identity.HeaderSignature, f.signer.Sign(&id, &r))
	if trace.SpanContextFromContext(ctx).IsValid() {
		// The request's trace continues in coreapi's projection handler.
		propagation.TraceContext{}.Inject(ctx, tracing.RequestHeaderCarrier{H: &req.Header})
	}
	timeout := f.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if err := f.hc.DoTimeout(req, resp, timeout); err != nil {
		f.m.UpstreamErrors.WithLabelValues("projection", errKind(err)).Inc()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	switch code := resp.StatusCode(); {
	case code == fasthttp.StatusOK:
	case code == fasthttp.StatusNotFound && problemCode(resp.Body()) == problem.CodeNoMembership:
		return nil, ErrNoMembership
	case code == fasthttp.StatusNotFound:
		// Not coreapi's answer about the membership: IDENTITY_URL naming
		// another service, or a coreapi without the route (404
		// not_found). Never remembered as "no membership".
		f.m.UpstreamErrors.WithLabelValues("projection", "status_other").Inc()
		return nil, fmt.Errorf("%w: projection fetch answered status 404 (%q)", ErrUpstream, foreignCode(resp.Body()))
	case code >= 500:
		f.m.UpstreamErrors.WithLabelValues("projection", "status_5xx").Inc()
		return nil, fmt.Errorf("%w: status %d", ErrUnavailable, code)
	default:
		f.m.UpstreamErrors.WithLabelValues("projection", "status_other").Inc()
		return nil, fmt.Errorf("%w: status %d", ErrUpstream, code)
	}
	body := resp.Body()
	if len(body) > maxProjection {
		return nil, fmt.Errorf("%w: body too large", ErrUpstream)
	}
	var p identity.Projection
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrUpstream, err)
	}
	return &p, nil
}

// errKind classifies a transport error for the upstream_errors metric.
func errKind(err error) string {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout):
		return "timeout"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no_free_conns"
	}
	return "transport"
}

// post sends a signed JSON POST to one of coreapi's internal routes and
// returns the status; the body is in resp.
func (f *HTTPFetcher) post(ctx context.Context, path string, body []byte, requestID string, resp *fasthttp.Response) (int, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(path)
	req.Header.SetHost(f.host)
	if f.hc.IsTLS {
		req.URI().SetScheme("https") // the request line holds the path only
	}
	req.Header.SetContentType("application/json")
	req.Header.Set("Accept", "application/json")
	// A request id of its own, as for Fetch: coreapi refuses a signature
	// it accepted before.
	requestID = requestid.Child(requestID)
	req.Header.Set(identity.HeaderRequestID, requestID)
	req.SetBody(body)
	ts := f.now().UnixMilli()
	id := identity.Identity{Principal: identity.PrincipalAnonymous}
	r := identity.Request{Timestamp: ts, RequestID: requestID, Method: fasthttp.MethodPost, PathQuery: path, BodySHA256: sha256.Sum256(body)}
	req.Header.Set(identity.HeaderKeyID, f.signer.KeyID())
	req.Header.Set(identity.HeaderPrincipal, identity.PrincipalAnonymous)
	req.Header.Set(identity.HeaderEmailVerified, "false")
	req.Header.Set(identity.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(identity.HeaderSignature, f.signer.Sign(&id, &r))
	if trace.SpanContextFromContext(ctx).IsValid() {
		// The request's trace continues in coreapi's handler (an API
		// key's resolve).
		propagation.TraceContext{}.Inject(ctx, tracing.RequestHeaderCarrier{H: &req.Header})
	}
	timeout := f.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if err := f.hc.DoTimeout(req, resp, timeout); err != nil {
		f.m.UpstreamErrors.WithLabelValues("projection", errKind(err)).Inc()
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return resp.StatusCode(), nil
}

// FetchKey implements KeyFetcher: POST apikey.ResolvePath. The key
// travels in the signed body, never in a URL.
func (f *HTTPFetcher) FetchKey(ctx context.Context, key []byte, requestID, clientIP string) (*apikey.Projection, error) {
	body, err := json.Marshal(apikey.ResolveRequest{Key: string(key), ClientIP: clientIP})
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	code, err := f.post(ctx, apikey.ResolvePath, body, requestID, resp)
	switch {
	case err != nil:
		return nil, err
	case code == fasthttp.StatusOK:
	case code == fasthttp.StatusUnauthorized && problemCode(resp.Body()) == problem.CodeInvalidToken:
		return nil, ErrWrongSecret
	case code == fasthttp.StatusUnauthorized:
		// coreapi refused the proxy's own signature (unauthenticated: its
		// key list out of step with ours, a clock past the window), not
		// the key: never a wrong secret the client is counted for.
		f.m.UpstreamErrors.WithLabelValues("projection", "status_other").Inc()
		return nil, fmt.Errorf("%w: API key resolve refused with status 401 (%q)", ErrUpstream, foreignCode(resp.Body()))
	case code == fasthttp.StatusNotFound && problemCode(resp.Body()) == problem.CodeAPIKeyUnknown:
		return nil, ErrKeyUnknown
	case code == fasthttp.StatusGone && revokedOrExpired(problemCode(resp.Body())):
		return nil, ErrKeyRevoked
	case code == fasthttp.StatusNotFound, code == fasthttp.StatusGone:
		// Not coreapi's answer about the key: IDENTITY_URL naming another
		// service, or a coreapi without the route (404 not_found). Never
		// remembered as the key's refusal.
		f.m.UpstreamErrors.WithLabelValues("projection", "status_other").Inc()
		return nil, fmt.Errorf("%w: API key resolve answered status %d (%q)", ErrUpstream, code, foreignCode(resp.Body()))
	case code >= 500:
		f.m.UpstreamErrors.WithLabelValues("projection", "status_5xx").Inc()
		return nil, fmt.Errorf("%w: status %d", ErrUnavailable, code)
	default:
		f.m.UpstreamErrors.WithLabelValues("projection", "status_other").Inc()
		return nil, fmt.Errorf("%w: status %d", ErrUpstream, code)
	}
	if len(resp.Body()) > maxProjection {
		return nil, fmt.Errorf("%w: body too large", ErrUpstream)
	}
	var p apikey.Projection
	if err := json.Unmarshal(resp.Body(), &p); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrUpstream, err)
	}
	return &p, nil
}

// revokedOrExpired reports whether code is coreapi's for a key whose
// secret is right but which no longer works.
func revokedOrExpired(code string) bool {
	return code == problem.CodeAPIKeyRevoked || code == problem.CodeAPIKeyExpired
}

// problemCode is the code of a problem+json body ("" when it has none).
func problemCode(body []byte) string {
	var p struct {
		Code string `json:"code"`
	}
	if len(body) > maxProjection || json.Unmarshal(body, &p) != nil {
		return ""
	}
	return p.Code
}

// foreignCode is the code of a problem+json body that is not the one
// expected, as an error message quotes it: cut to 64 bytes, since the
// answer may be another service's, and its code of any length.
func foreignCode(body []byte) string { return clip.String(problemCode(body), 64) }

// ReportUsed implements KeyFetcher: POST apikey.UsedPath. A 4xx answer
// other than 408 and 429 is ErrReportRefused: the same report would be
// refused again.
func (f *HTTPFetcher) ReportUsed(ctx context.Context, publicIDs []string) error {
	body, err := json.Marshal(apikey.UsedRequest{Keys: publicIDs})
	if err != nil {
		return fmt.Errorf("encode used keys: %w", err)
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	code, err := f.post(ctx, apikey.UsedPath, body, "", resp)
	if err != nil {
		return err
	}
	switch {
	case code == fasthttp.StatusNoContent:
		return nil
	case code >= 400 && code < 500 && code != fasthttp.StatusRequestTimeout && code != fasthttp.StatusTooManyRequests:
		return fmt.Errorf("%w: report used API keys: status %d", ErrReportRefused, code)
	}
	return fmt.Errorf("%w: report used API keys: status %d", ErrUpstream, code)
}
