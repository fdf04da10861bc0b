package tracing

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tollgate-auth/tollgate/shared/envconfig"
)

// Export is what the OTLP exporter and the batch span processor are given
// beside the endpoint: the OTEL_EXPORTER_OTLP_* and OTEL_BSP_* variables,
// read and checked by Load. Both libraries read these variables too, but
// take a bad value for unset (a header list with one malformed entry loses
// that entry, so the collector refuses every export), write the value to
// standard error in their own format (the collector's key with it), or
// crash on it (a negative batch size) or spin on it (a schedule delay of
// 0 keeps a core busy): Load refuses them, and New passes what Load read.
// Zero values are the libraries' defaults.
type Export struct {
	// Headers go with every export (OTEL_EXPORTER_OTLP_HEADERS, or the
	// traces form, which replaces it); nil: none.
	Headers map[string]string
	// Timeout bounds one export request.
	Timeout time.Duration
	// Compression is "gzip" or "none"; "": none.
	Compression string
	// TLS holds the collector's CA and the client certificate; nil: the
	// system's roots and no client certificate. CAFile and CertFile name
	// where they came from.
	TLS              *tls.Config
	CAFile, CertFile string
	// The batch span processor: delay between exports, time allowed for
	// one, spans held, spans per export.
	BatchDelay, BatchTimeout   time.Duration
	MaxQueueSize, MaxBatchSize int
}

// The libraries' defaults, for the printout and the batch/queue check.
const (
	defaultExportTimeout = 10 * time.Second
	defaultBatchDelay    = 5 * time.Second
	defaultBatchTimeout  = 30 * time.Second
	defaultMaxQueueSize  = 2048
	defaultMaxBatchSize  = 512
)

// loadExport reads the exporter's and the batch processor's variables
// through get (values trimmed); every bad one is appended to errs. A
// generic variable and its traces form are both checked when both are
// set (the exporter reads both), and the traces form is used.
func loadExport(get func(string) string, endpoint string) (Export, []error) {
	var e Export
	var errs []error
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		// A collector's key: given in the variable, or in the file its
		// _FILE form names (a mounted Secret, out of the environment).
		v, source := get(k), k
		if path := get(k + "_FILE"); path != "" {
			var err error
			if v, err = envconfig.FileValue(k, v, path); err != nil {
				errs = append(errs, err)
				continue
			}
			source = k + "_FILE " + path
		}
		if v != "" {
			h, err := parseHeaders(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", source, err))
				continue
			}
			e.Headers = h
		}
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"} {
		if v := get(k); v != "" {
			ms, err := strconv.Atoi(v)
			if err != nil || ms <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a whole number of milliseconds above 0 (e.g. 10000)", k, v))
				continue
			}
			e.Timeout = time.Duration(ms) * time.Millisecond
		}
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"} {
		switch v := get(k); v {
		case "":
		case "gzip", "none":
			e.Compression = v
		default:
			errs = append(errs, fmt.Errorf("%s=%q: want gzip or none", k, v))
		}
	}
	var roots *x509.CertPool
	for _, k := range []string{"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"} {
		if v := get(k); v != "" {
			p, err := readCAFile(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k, err))
				continue
			}
			roots, e.CAFile = p, v
		}
	}
	var certs []tls.Certificate
	for _, pre := range []string{"OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_"} {
		cf, kf := get(pre+"CLIENT_CERTIFICATE"), get(pre+"CLIENT_KEY")
		switch {
		case cf == "" && kf == "":
			continue
		case cf == "" || kf == "":
			errs = append(errs, fmt.Errorf("%sCLIENT_CERTIFICATE and %sCLIENT_KEY: set both or neither", pre, pre))
			continue
		}
		crt, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			errs = append(errs, fmt.Errorf("%sCLIENT_CERTIFICATE and %sCLIENT_KEY: %w", pre, pre, err))
			continue
		}
		certs, e.CertFile = []tls.Certificate{crt}, cf
	}
	if roots != nil || certs != nil {
		e.TLS = &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}
		if u, err := url.Parse(endpoint); err == nil && u.Scheme == "http" {
			// The exporter refuses TLS settings for a plain-HTTP
			// endpoint when it starts.
			errs = append(errs, errors.New("OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE or CLIENT_CERTIFICATE is set but the endpoint is http: use an https endpoint, or unset them"))
		}
	}
	positive := func(k, unit string) int {
		v := get(k)
		if v == "" {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a whole number of %s above 0", k, v, unit))
			return 0
		}
		return n
	}
	e.BatchDelay = time.Duration(positive("OTEL_BSP_SCHEDULE_DELAY", "milliseconds")) * time.Millisecond
	e.BatchTimeout = time.Duration(positive("OTEL_BSP_EXPORT_TIMEOUT", "milliseconds")) * time.Millisecond
	e.MaxQueueSize = positive("OTEL_BSP_MAX_QUEUE_SIZE", "spans")
	e.MaxBatchSize = positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "spans")
	if q, b := cmp.Or(e.MaxQueueSize, defaultMaxQueueSize), cmp.Or(e.MaxBatchSize, defaultMaxBatchSize); b > q {
		errs = append(errs, fmt.Errorf("OTEL_BSP_MAX_EXPORT_BATCH_SIZE=%d: more than OTEL_BSP_MAX_QUEUE_SIZE (%d)", b, q))
	}
	return e, errs
}

// parseHeaders reads name=value[,name=value...], values URL-encoded, as
// the exporter does; but an entry it would drop is an error here, and no
// error shows a value (it is usually a key).
func parseHeaders(s string) (map[string]string, error) {
	h := map[string]string{}
	for i, p := range strings.Split(s, ",") {
		n, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("entry %d is not name=value (a comma too many, or ':' for '='); not shown, it may hold a key", i+1)
		}
		n = strings.TrimSpace(n)
		if !validHeaderName(n) {
			return nil, fmt.Errorf("entry %d: the name is not a header name", i+1)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("entry %d (%s): the value is not URL-encoded (write %% as %%25)", i+1, n)
		}
		dv = strings.TrimSpace(dv)
		for j := 0; j < len(dv); j++ {
			if c := dv[j]; c < 0x20 && c != '\t' || c == 0x7f {
				return nil, fmt.Errorf("entry %d (%s): the value holds a control character", i+1, n)
			}
		}
		h[n] = dv
	}
	return h, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// readCAFile reads PEM certificates into a pool; a block that is no
// certificate is refused (envconfig.AppendCertificates).
func readCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if err := envconfig.AppendCertificates(p, b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// exporterOptions are the exporter's options for e, beside the endpoint.
func (e Export) exporterOptions() []otlptracehttp.Option {
	var o []otlptracehttp.Option
	if e.Headers != nil {
		o = append(o, otlptracehttp.WithHeaders(e.Headers))
	}
	if e.Timeout > 0 {
		o = append(o, otlptracehttp.WithTimeout(e.Timeout))
	}
	switch e.Compression {
	case "gzip":
		o = append(o, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	case "none":
		o = append(o, otlptracehttp.WithCompression(otlptracehttp.NoCompression))
	}
	if e.TLS != nil {
		o = append(o, otlptracehttp.WithTLSClientConfig(e.TLS))
	}
	return o
}

// batchOptions are the batch span processor's options for e.
func (e Export) batchOptions() []sdktrace.BatchSpanProcessorOption {
	var o []sdktrace.BatchSpanProcessorOption
	if e.BatchDelay > 0 {
		o = append(o, sdktrace.WithBatchTimeout(e.BatchDelay))
	}
	if e.BatchTimeout > 0 {
		o = append(o, sdktrace.WithExportTimeout(e.BatchTimeout))
	}
	if e.MaxQueueSize > 0 {
		o = append(o, sdktrace.WithMaxQueueSize(e.MaxQueueSize))
	}
	if e.MaxBatchSize > 0 {
		o = append(o, sdktrace.WithMaxExportBatchSize(e.MaxBatchSize))
	}
	return o
}

// rows are the export settings in force, for Config.Rows.
func (e Export) rows() [][2]string {
	ms := func(d, def time.Duration) string { return strconv.FormatInt(cmp.Or(d, def).Milliseconds(), 10) }
	var r [][2]string
	if e.Headers != nil {
		names := make([]string, 0, len(e.Headers))
		for n := range e.Headers {
			names = append(names, n)
		}
		sort.Strings(names)
		r = append(r, [2]string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS", strings.Join(names, ",")}) // masked: a secret
	}
	r = append(r, [2]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", ms(e.Timeout, defaultExportTimeout)},
		[2]string{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", cmp.Or(e.Compression, "none")})
	if e.CAFile != "" {
		r = append(r, [2]string{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", e.CAFile})
	}
	if e.CertFile != "" {
		r = append(r, [2]string{"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", e.CertFile})
	}
	return append(r,
		[2]string{"OTEL_BSP_SCHEDULE_DELAY", ms(e.BatchDelay, defaultBatchDelay)},
		[2]string{"OTEL_BSP_EXPORT_TIMEOUT", ms(e.BatchTimeout, defaultBatchTimeout)},
		[2]string{"OTEL_BSP_MAX_QUEUE_SIZE", strconv.Itoa(cmp.Or(e.MaxQueueSize, defaultMaxQueueSize))},
		[2]string{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", strconv.Itoa(cmp.Or(e.MaxBatchSize, defaultMaxBatchSize))})
}
