// Package tracing sets up OpenTelemetry tracing for Tollgate's services from
// the standard OTEL_* variables: spans are exported over OTLP/HTTP
// (protobuf) to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or to
// OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces"; neither set means tracing is
// off and nothing of it runs. Trace context travels in the W3C traceparent
// and tracestate headers (TraceContext). The package also carries what both
// services share: a carrier over fasthttp's request headers and a slog
// handler that adds the trace id to every record logged with a traced
// context.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-auth/tollgate/shared/envconfig"
)

// Config is the tracing configuration. The zero value is off.
type Config struct {
	// Endpoint is the full OTLP/HTTP traces URL; "" means off.
	Endpoint    string
	ServiceName string
	// Resource holds OTEL_RESOURCE_ATTRIBUTES, parsed.
	Resource []attribute.KeyValue
	// Sampler and SamplerArg are as given (normalized to lower case), the
	// defaults filled in.
	Sampler    string
	SamplerArg float64
	// Export holds the exporter's other settings and the batch
	// processor's (export.go).
	Export Export
}

// Enabled reports whether spans are exported.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// LogValue prints the configuration; the endpoint's user information (if
// any) is masked.
func (c Config) LogValue() slog.Value {
	if !c.Enabled() {
		return slog.GroupValue(slog.Bool("enabled", false))
	}
	return slog.GroupValue(slog.Bool("enabled", true), slog.String("endpoint", maskURL(c.Endpoint)),
		slog.String("service_name", c.ServiceName), slog.String("sampler", c.Sampler),
		slog.String("sampler_arg", strconv.FormatFloat(c.SamplerArg, 'g', -1, 64)))
}

// Rows are the configuration's lines for a printed table (VAR, value).
func (c Config) Rows() [][2]string {
	if !c.Enabled() {
		return [][2]string{{"OTEL_EXPORTER_OTLP_ENDPOINT", "(unset: tracing off)"}}
	}
	return append([][2]string{
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", maskURL(c.Endpoint)},
		{"OTEL_SERVICE_NAME", c.ServiceName},
		{"OTEL_TRACES_SAMPLER", c.Sampler},
		{"OTEL_TRACES_SAMPLER_ARG", strconv.FormatFloat(c.SamplerArg, 'g', -1, 64)},
	}, c.Export.rows()...)
}

// maskURL hides an endpoint's user information whole (a token may be
// written as the user alone) and any other credential envconfig.MaskURL
// knows; an endpoint that does not parse is masked whole.
func maskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return envconfig.Masked
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	return envconfig.MaskURL(u.String())
}

// Load reads the tracing variables through getenv; service is the default
// service.name. It returns every problem found, joined.
func Load(getenv func(string) string, service string) (Config, error) {
	var errs []error
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	if v := get("OTEL_SDK_DISABLED"); v != "" {
		off, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("OTEL_SDK_DISABLED=%q: want true or false", v))
		} else if off {
			return Config{}, errors.Join(errs...)
		}
	}
	c := Config{ServiceName: service, Sampler: "parentbased_always_on", SamplerArg: 1}
	switch ep, tep := get("OTEL_EXPORTER_OTLP_ENDPOINT"), get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); {
	case tep != "":
		c.Endpoint = tep
	case ep != "":
		c.Endpoint = tracesURL(ep)
	}
	if c.Endpoint != "" {
		// A refused endpoint is quoted as envconfig.ProblemURL quotes it:
		// its user information and whole query hidden, since what this
		// refuses is a credential put there, under any parameter name.
		switch u, err := url.Parse(c.Endpoint); {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, fmt.Errorf("OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT=%q: want an http or https URL", envconfig.ProblemURL(c.Endpoint)))
		case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			// The OTLP exporter takes the scheme, host and path of the
			// URL and drops the rest: a collector's key in the query or
			// the user information would never be sent, and every
			// export would be refused.
			errs = append(errs, fmt.Errorf("OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT=%q: the exporter sends no user information, query or fragment; "+
				"pass a collector's credential in OTEL_EXPORTER_OTLP_HEADERS (e.g. api-key=...)", envconfig.ProblemURL(c.Endpoint)))
		}
	}
	switch v := get("OTEL_TRACES_EXPORTER"); v {
	case "", "otlp":
	case "none":
		c.Endpoint = ""
	default:
		errs = append(errs, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp (or none) is supported", v))
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		if v := get(k); v != "" && v != "http/protobuf" {
			errs = append(errs, fmt.Errorf("%s=%q: only http/protobuf is supported", k, v))
		}
	}
	if v := get("OTEL_SERVICE_NAME"); v != "" {
		c.ServiceName = v
	}
	if v := get("OTEL_RESOURCE_ATTRIBUTES"); v != "" {
		attrs, err := parseResource(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err))
		}
		c.Resource = attrs
	}
	if v := strings.ToLower(get("OTEL_TRACES_SAMPLER")); v != "" {
		switch v {
		case "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio":
			c.Sampler = v
		default:
			errs = append(errs, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio, "+
				"parentbased_always_on, parentbased_always_off or parentbased_traceidratio", v))
		}
	}
	if v := get("OTEL_TRACES_SAMPLER_ARG"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		// Written so that NaN (which ParseFloat accepts, and which no
		// comparison holds for) is refused: the ratio sampler would take
		// it for 1 and record every request.
		if err != nil || !(f >= 0 && f <= 1) {
			errs = append(errs, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", v))
		} else {
			c.SamplerArg = f
		}
	}
	exp, eerrs := loadExport(get, c.Endpoint)
	c.Export, errs = exp, append(errs, eerrs...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// tracesURL is the traces URL of the base OTEL_EXPORTER_OTLP_ENDPOINT:
// v1/traces appended to its path, before any query rather than inside it
// (Load then refuses the query, but names the URL as it would be). A base
// that does not parse is returned with the suffix appended, for Load to
// refuse.
func tracesURL(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return strings.TrimSuffix(base, "/") + "/v1/traces"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	if u.RawPath != "" {
		u.RawPath = strings.TrimSuffix(u.RawPath, "/") + "/v1/traces"
	}
	return u.String()
}

// parseResource parses key=value pairs separated by commas, values
// percent-decoded (the W3C Baggage octet rules the specification refers to).
func parseResource(s string) ([]attribute.KeyValue, error) {
	var out []attribute.KeyValue
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want key=value", p)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", p, err)
		}
		out = append(out, attribute.String(k, dv))
	}
	return out, nil
}

// Sampler is the configured sampler.
func (c Config) sampler() sdktrace.Sampler {
	switch c.Sampler {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(c.SamplerArg)
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SamplerArg))
	}
	return sdktrace.ParentBased(sdktrace.AlwaysSample())
}

// Provider is a running tracer provider and the propagator the services
// use. A nil *Provider is tracing off.
type Provider struct {
	tp         *sdktrace.TracerProvider
	Propagator propagation.TextMapPropagator
}

// New starts a provider exporting to c.Endpoint in batches; nil, nil when
// c is off. Shutdown flushes it. The failures OpenTelemetry reports
// outside any call (an export of the batch processor refused or not
// delivered) are written to log (ErrorLogger); OpenTelemetry's default
// wrote them to standard error in its own format, the collector's answer
// line by line.
func New(ctx context.Context, c Config, log *slog.Logger) (*Provider, error) {
	if !c.Enabled() {
		return nil, nil
	}
	otel.SetErrorHandler(NewErrorLogger(log))
	exp, err := otlptracehttp.New(ctx, append([]otlptracehttp.Option{otlptracehttp.WithEndpointURL(c.Endpoint)}, c.Export.exporterOptions()...)...)
	if err != nil {
		return nil, fmt.Errorf("tracing: otlp exporter: %w", err)
	}
	return NewWith(c, sdktrace.WithBatcher(exp, c.Export.batchOptions()...))
}

// NewWith starts a provider with c's resource and sampler and the given
// span processor options (tests pass an in-memory exporter).
func NewWith(c Config, opts ...sdktrace.TracerProviderOption) (*Provider, error) {
	attrs := append([]attribute.KeyValue{attribute.String("service.name", c.ServiceName)}, c.Resource...)
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	opts = append([]sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(c.sampler())}, opts...)
	return &Provider{tp: sdktrace.NewTracerProvider(opts...), Propagator: propagation.TraceContext{}}, nil
}

// TracerProvider is the provider (for instrumentation libraries).
func (p *Provider) TracerProvider() trace.TracerProvider { return p.tp }

// Tracer returns the named tracer.
func (p *Provider) Tracer(name string) trace.Tracer { return p.tp.Tracer(name) }

// Shutdown exports what is buffered and stops, within ctx.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.tp.Shutdown(ctx)
}

// ForceFlush exports what is buffered (tests).
func (p *Provider) ForceFlush(ctx context.Context) error { return p.tp.ForceFlush(ctx) }
