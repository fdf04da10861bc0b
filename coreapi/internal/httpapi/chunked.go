package httpapi

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/tollgate-auth/tollgate/shared/identity"
	"github.com/tollgate-auth/tollgate/shared/requestid"
	"github.com/tollgate-auth/tollgate/shared/tracing"
)

// chunkedHeads keeps what a chunked request's refusal needs of its head
// while its body is read. fasthttp counts a chunked body against the
// limit as it reads it and, past the limit, resets the whole request
// before the error handler runs: the 413 would name neither the client's
// X-Request-Id nor the path. A body with a Content-Length is refused on
// its declared length, before that reset, and needs none of this.
//
// Entries are keyed by the request's header (one per connection's
// RequestCtx, reused request after request): remembered when the head of
// a chunked request is read (HeaderReceived), forgotten when its handler
// runs or its read fails, and replaced by the head of the next request
// read into the same header. A connection that ends in the middle of a
// chunked body leaves its entry behind; the map is bounded (emptied when
// full), so such leftovers cannot accumulate.
type chunkedHeads struct {
	mu sync.Mutex
	m  map[*fasthttp.RequestHeader]chunkedHead
	n  atomic.Int64 // len(m), read without the lock by forget
}

// chunkedHead is an owned copy of the parts of a request's head its
// refusal reports, and of the trace context its span joins (adopted from
// a signed request only: the signature is kept too).
type chunkedHead struct {
	method, uri, requestID  string
	traceparent, tracestate string
	signature               string
}

// maxChunkedHeads bounds the heads kept: more chunked requests than this
// being read at once (or left behind) empties the map, and their
// refusals get a new request id, as before.
const maxChunkedHeads = 4096

// received is the server's HeaderReceived hook: it remembers the head of
// a chunked request and forgets what an earlier request left for the
// same header.
func (ch *chunkedHeads) received(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if h.ContentLength() != -1 { // -1: chunked
		ch.forget(h)
		return fasthttp.RequestConfig{}
	}
	head := chunkedHead{
		method:    string(h.Method()),
		uri:       string(h.RequestURI()),
		requestID: string(h.Peek(requestid.Header)),
		// Read as the tracing middleware reads them.
		traceparent: strings.Clone(tracing.RequestHeaderCarrier{H: h}.Get("traceparent")),
		tracestate:  strings.Clone(tracing.RequestHeaderCarrier{H: h}.Get("tracestate")),
		signature:   string(h.Peek(identity.HeaderSignature)),
	}
	ch.mu.Lock()
	if len(ch.m) >= maxChunkedHeads {
		clear(ch.m)
	}
	if ch.m == nil {
		ch.m = map[*fasthttp.RequestHeader]chunkedHead{}
	}
	ch.m[h] = head
	ch.n.Store(int64(len(ch.m)))
	ch.mu.Unlock()
	return fasthttp.RequestConfig{}
}

// forget drops what is kept for h, if anything (without a lock when
// nothing is kept: the common case, every request with a length).
func (ch *chunkedHeads) forget(h *fasthttp.RequestHeader) {
	if ch.n.Load() == 0 {
		return
	}
	ch.take(h)
}

// take removes and returns what is kept for h.
func (ch *chunkedHeads) take(h *fasthttp.RequestHeader) (chunkedHead, bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	head, ok := ch.m[h]
	if ok {
		delete(ch.m, h)
		ch.n.Store(int64(len(ch.m)))
	}
	return head, ok
}

// restore puts back, into a request fasthttp reset after its chunked
// body went over the limit, the method, target, X-Request-Id, trace
// context and signature it had, so that its 413 reports them, and its span joins the
// proxy's trace, as any other refusal's.
func (ch *chunkedHeads) restore(ctx *fasthttp.RequestCtx, err error) {
	h := &ctx.Request.Header
	head, ok := ch.take(h)
	if !ok || !errors.Is(err, fasthttp.ErrBodyTooLarge) {
		return
	}
	h.SetMethod(head.method)
	ctx.Request.SetRequestURI(head.uri)
	for _, f := range [...][2]string{{requestid.Header, head.requestID}, {tracing.HeaderTraceparent, head.traceparent},
		{tracing.HeaderTracestate, head.tracestate}, {identity.HeaderSignature, head.signature}} {
		if f[1] != "" {
			h.Set(f[0], f[1])
		}
	}
}
