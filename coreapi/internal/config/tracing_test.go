package config

import (
	"strings"
	"testing"
)

// Tracing is off by default, on with an endpoint (named coreapi, shown by
// -check-config), and a bad OTEL_* value is reported with the others.
func TestTracingConfig(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tracing.Enabled() || !strings.Contains(c.String(), "OTEL_EXPORTER_OTLP_ENDPOINT=(unset: tracing off)") {
		t.Fatalf("tracing = %+v\n%s", c.Tracing, c)
	}
	m := minimal()
	m["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "https://otel.example/v1/traces"
	if c, err = Load(env(m)); err != nil {
		t.Fatal(err)
	}
	if !c.Tracing.Enabled() || c.Tracing.ServiceName != "coreapi" ||
		!strings.Contains(c.String(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://otel.example/v1/traces") {
		t.Fatalf("tracing = %+v\n%s", c.Tracing, c)
	}
	m["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
	m["DB_MAX_CONNS"] = "1"
	_, err = Load(env(m))
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") || !strings.Contains(err.Error(), "DB_MAX_CONNS") {
		t.Fatalf("err = %v, want the protocol and DB_MAX_CONNS reported together", err)
	}
}

// TestTracingHeaderFiles: the exporter's headers (a collector's key) come
// from OTEL_EXPORTER_OTLP_HEADERS_FILE or OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE
// as coreapi's other secrets come from their _FILE variables: read through
// the configuration table, never printed, and a file open to other users
// is warned about.
func TestTracingHeaderFiles(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS_FILE", "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"} {
		m := minimal()
		m["OTEL_EXPORTER_OTLP_ENDPOINT"] = "https://otel.example"
		m[k] = writeSecret(t, dir, k, "api-key=otel-s3cret\n", 0o440)
		c, err := Load(env(m))
		if err != nil {
			t.Fatalf("%s: Load() = %v", k, err)
		}
		if c.Tracing.Export.Headers["api-key"] != "otel-s3cret" || len(c.Warnings) != 0 {
			t.Errorf("%s: headers %q, warnings %q; want the file's, none", k, c.Tracing.Export.Headers, c.Warnings)
		}
		if strings.Contains(c.String(), "otel-s3cret") {
			t.Errorf("%s: the printout shows the key:\n%s", k, c)
		}
		m[k] = writeSecret(t, dir, k+"-open", "api-key=otel-s3cret\n", 0o644)
		if c, err = Load(env(m)); err != nil || len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], k+": "+m[k]+" ") {
			t.Errorf("%s open to others: warnings %q, %v; want one naming it", k, c.Warnings, err)
		}
	}
}
