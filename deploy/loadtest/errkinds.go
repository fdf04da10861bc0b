package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/valyala/fasthttp"
)

// errKinds counts a run's errors by kind: for an answer with the wrong
// status, the status with the problem code and detail of its
// problem+json body; for a request that got no answer, the kind of
// transport error.
type errKinds struct {
	mu sync.Mutex
	n  map[string]int64
}

func (k *errKinds) add(kind string) {
	k.mu.Lock()
	if k.n == nil {
		k.n = map[string]int64{}
	}
	k.n[kind]++
	k.mu.Unlock()
}

// kindCount is one kind of error and how often it was seen.
type kindCount struct {
	kind string
	n    int64
}

// counts are the kinds seen, most frequent first.
func (k *errKinds) counts() []kindCount {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]kindCount, 0, len(k.n))
	for kind, n := range k.n {
		out = append(out, kindCount{kind, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].n != out[j].n {
			return out[i].n > out[j].n
		}
		return out[i].kind < out[j].kind
	})
	return out
}

// formatKinds is "n × kind; …", or "" when there were none.
func formatKinds(ks []kindCount) string {
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%d × %s", k.n, k.kind)
	}
	return strings.Join(parts, "; ")
}

// statusKind names an answer with an unexpected status: "503
// upstream_unavailable (upstream unavailable)" from a problem+json body,
// else the status and its text.
func statusKind(status int, contentType, body []byte) string {
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	if strings.HasPrefix(string(contentType), "application/problem+json") && json.Unmarshal(body, &p) == nil && p.Code != "" {
		if p.Detail != "" {
			return fmt.Sprintf("%d %s (%s)", status, p.Code, p.Detail)
		}
		return fmt.Sprintf("%d %s", status, p.Code)
	}
	return fmt.Sprintf("%d %s", status, fasthttp.StatusMessage(status))
}

// responseKind is statusKind of resp.
func responseKind(resp *fasthttp.Response) string {
	return statusKind(resp.StatusCode(), resp.Header.ContentType(), resp.Body())
}

// transportKind names an error that left a request without an answer.
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &ne) && ne.Timeout():
		return "transport: timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "transport: connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "transport: connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "transport: broken pipe"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "transport: too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "transport: no local port"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, fasthttp.ErrConnectionClosed):
		return "transport: closed by the server"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return "transport: " + op.Op + " error"
	}
	return fmt.Sprintf("transport: %T", err)
}
