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
