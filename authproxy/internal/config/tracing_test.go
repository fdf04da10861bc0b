package config

import (
	"strings"
	"testing"
)

// Tracing is off by default, on with an endpoint (named authproxy), and a
// bad OTEL_* value is reported with the other problems.
func TestTracingConfig(t *testing.T) {
	c, err := Load(env(map[string]string{"IDENTITY_HMAC_KEY": key}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tracing.Enabled() {
		t.Fatal("tracing on without an endpoint")
	}
	c, err = Load(env(map[string]string{"IDENTITY_HMAC_KEY": key, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
		"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Tracing.Enabled() || c.Tracing.ServiceName != "authproxy" || c.Tracing.Endpoint != "http://otel:4318/v1/traces" || c.Tracing.SamplerArg != 0.01 {
		t.Fatalf("tracing = %+v", c.Tracing)
	}
	_, err = Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_TRACES_SAMPLER_ARG": "2"}))
	if err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER_ARG") || !strings.Contains(err.Error(), "IDENTITY") {
		t.Fatalf("err = %v, want the sampler argument and the missing key reported together", err)
	}
}
