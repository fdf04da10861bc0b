package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-auth/tollgate/shared/eventually"
	"github.com/tollgate-auth/tollgate/shared/logbuffer"
	"github.com/tollgate-auth/tollgate/shared/secretfile"

	"github.com/tollgate-auth/tollgate/shared/testca"
	"github.com/tollgate-auth/tollgate/shared/tracing"
	"github.com/tollgate-auth/tollgate/shared/tracing/otlptest"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadOffByDefault(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"nothing set":   {},
		"sampler only":  {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "x"},
		"sdk disabled":  {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
		"exporter none": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := tracing.Load(env(vars), "svc")
			if err != nil {
				t.Fatal(err)
			}
			if c.Enabled() {
				t.Fatalf("enabled with %v", vars)
			}
			p, err := tracing.New(context.Background(), c, nil)
			if p != nil || err != nil {
				t.Fatalf("New = %v, %v; want nil, nil when off", p, err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	c, err := tracing.Load(env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
		"OTEL_TRACES_SAMPLER":         "ParentBased_TraceIdRatio",
		"OTEL_TRACES_SAMPLER_ARG":     "0.01",
		"OTEL_RESOURCE_ATTRIBUTES":    "deployment.environment=prod,team=a%20b",
	}), "authproxy")
	if err != nil {
		t.Fatal(err)
	}
	if c.Endpoint != "http://collector:4318/v1/traces" || c.ServiceName != "authproxy" ||
		c.Sampler != "parentbased_traceidratio" || c.SamplerArg != 0.01 || len(c.Resource) != 2 ||
		c.Resource[1].Value.AsString() != "a b" {
		t.Fatalf("got %+v", c)
	}
	c, err = tracing.Load(env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://ignored:4318",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector/custom/path",
		"OTEL_SERVICE_NAME":                  "edge",
	}), "authproxy")
	if err != nil {
		t.Fatal(err)
	}
	if c.Endpoint != "https://collector/custom/path" || c.ServiceName != "edge" || c.Sampler != "parentbased_always_on" {
		t.Fatalf("got %+v", c)
	}
	// The signal path goes on the base URL's path.
	for base, want := range map[string]string{
		"https://collector/otlp/": "https://collector/otlp/v1/traces",
		"https://collector/otlp":  "https://collector/otlp/v1/traces",
		"http://collector:4318":   "http://collector:4318/v1/traces",
	} {
		c, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": base}), "svc")
		if err != nil || c.Endpoint != want {
			t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT=%s: traces endpoint %q (%v), want %q", base, c.Endpoint, err, want)
		}
	}
}

// Every bad value is reported, all at once, naming the variable.
func TestLoadErrors(t *testing.T) {
	_, err := tracing.Load(env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
		"OTEL_TRACES_SAMPLER":         "sometimes",
		"OTEL_TRACES_SAMPLER_ARG":     "1.5",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_TRACES_EXPORTER":        "zipkin",
		"OTEL_RESOURCE_ATTRIBUTES":    "novalue",
	}), "svc")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT", "OTEL_TRACES_SAMPLER=", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_EXPORTER", "OTEL_RESOURCE_ATTRIBUTES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
	if _, err := tracing.Load(env(map[string]string{"OTEL_SDK_DISABLED": "maybe"}), "svc"); err == nil {
		t.Error("OTEL_SDK_DISABLED=maybe accepted")
	}
	// strconv.ParseFloat reads these; none is a ratio from 0 to 1 (the
	// ratio sampler takes NaN for 1: every request recorded).
	for _, v := range []string{"NaN", "nan", "-NaN", "Inf", "-Inf", "-0.5"} {
		if c, err := tracing.Load(env(map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": v}), "svc"); err == nil {
			t.Errorf("OTEL_TRACES_SAMPLER_ARG=%s accepted (ratio %v)", v, c.SamplerArg)
		}
	}
}

// The real exporter, over HTTP, in protobuf, to a receiver that decodes
// it: the span, its resource and its parent arrive.
func TestExportOverOTLPHTTP(t *testing.T) {
	r, err := otlptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": r.URL(), "OTEL_RESOURCE_ATTRIBUTES": "team=edge"}), "coreapi")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tracing.New(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := p.Tracer("test")
	ctx, parent := tr.Start(context.Background(), "parent")
	_, child := tr.Start(ctx, "child")
	child.End()
	parent.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if errs := r.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	spans := r.Spans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2: %+v", len(spans), spans)
	}
	byName := map[string]otlptest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
		if s.Service != "coreapi" || s.Scope != "test" {
			t.Errorf("span %s: service %q scope %q", s.Name, s.Service, s.Scope)
		}
	}
	if byName["child"].ParentSpanID != byName["parent"].SpanID || byName["child"].TraceID != byName["parent"].TraceID ||
		byName["parent"].ParentSpanID != "" {
		t.Fatalf("parent chain wrong: %+v", byName)
	}
	if want := parent.SpanContext().TraceID().String(); byName["parent"].TraceID != want {
		t.Fatalf("trace id %s, want %s", byName["parent"].TraceID, want)
	}
}

// LogHandler puts the trace id on records logged with a traced context,
// and nothing on others.
func TestLogHandler(t *testing.T) {
	p, err := tracing.NewWith(tracing.Config{ServiceName: "x", Sampler: "always_on"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler{Handler: slog.NewJSONHandler(&buf, nil)}).With("component", "c")
	ctx, span := p.Tracer("t").Start(context.Background(), "s")
	log.InfoContext(ctx, "traced")
	log.Info("untraced")
	span.End()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var traced, untraced map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &traced)
	_ = json.Unmarshal([]byte(lines[1]), &untraced)
	if traced["trace_id"] != span.SpanContext().TraceID().String() || traced["span_id"] != span.SpanContext().SpanID().String() ||
		traced["component"] != "c" {
		t.Fatalf("traced line: %s", lines[0])
	}
	if _, ok := untraced["trace_id"]; ok {
		t.Fatalf("untraced line has a trace id: %s", lines[1])
	}
}

// TestBadEndpointHidesCredential: an endpoint URL that does not parse (a
// password holding an unescaped '%') is refused without its credential.
func TestBadEndpointHidesCredential(t *testing.T) {
	_, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://u:p%zzsecretpw@collector/v1/traces"}), "svc")
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), "secretpw") {
		t.Errorf("the problem shows the credential: %v", err)
	}
}

// TestEndpointCredentialRefused: the OTLP exporter sends only the scheme,
// host and path of the endpoint URL, so a collector's key in the query or
// the user information would never reach it (every export refused): such
// an endpoint is refused at start, and the problem does not show the
// credential.
func TestEndpointCredentialRefused(t *testing.T) {
	for _, vars := range []map[string]string{
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector/v1/traces?api_key=k1secret"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector/?api_key=k1secret"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://tracer:k1secret@collector/v1/traces"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://k1secret@collector/v1/traces"},
		// A collector's key under a name that says nothing of a
		// credential (Honeycomb's header is x-honeycomb-team).
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector/v1/traces?x-honeycomb-team=k1secret"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector/?dataset=d&team=k1secret"},
	} {
		c, err := tracing.Load(env(vars), "svc")
		if err == nil {
			t.Errorf("%v accepted: %+v", vars, c)
			continue
		}
		if !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_HEADERS") {
			t.Errorf("%v: the problem does not say where a credential goes: %v", vars, err)
		}
		if strings.Contains(err.Error(), "k1secret") {
			t.Errorf("%v: the problem shows the key: %v", vars, err)
		}
	}
}

// TestExportErrorsLogged: an export the collector refuses is reported as
// one JSON warning of the service's log, the collector's answer escaped in
// it, never by OpenTelemetry's default handler, which wrote it to standard
// error in another format with each line of the answer as a line of the
// output (where a collector, or whatever answers at its address, could
// write what looked like the service's own records).
func TestExportErrorsLogged(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10") // ms: the batch is exported at once
	forged := `{"level":"ERROR","msg":"forged"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad key\n"+forged, http.StatusUnauthorized)
	}))
	defer srv.Close()
	var std logbuffer.Buffer
	log.SetOutput(&std)
	defer log.SetOutput(os.Stderr)
	var out logbuffer.Buffer
	logger := slog.New(slog.NewJSONHandler(&out, nil))
	c, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": srv.URL + "/v1/traces"}), "svc")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tracing.New(context.Background(), c, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	_, span := p.Tracer("t").Start(context.Background(), "s")
	span.End()
	eventually.Within(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), `"msg":"tracing"`) {
			return fmt.Errorf("no tracing warning in the log: %q; standard error: %q", out.String(), std.String())
		}
		return nil
	})
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a log line is no JSON record: %q", line)
		}
		if rec["msg"] == "forged" {
			t.Fatalf("the collector's answer wrote a record: %q", out.String())
		}
		if rec["msg"] == "tracing" && (rec["level"] != "WARN" || !strings.Contains(fmt.Sprint(rec["err"]), "401")) {
			t.Errorf("tracing record: %q", line)
		}
	}
	if std.String() != "" {
		t.Errorf("written to standard error: %q", std.String())
	}
}

// TestExportSettingsRefused: the exporter's and the batch processor's
// variables are checked at start. OpenTelemetry's own reading takes a bad
// value for unset and writes it to standard error in its own format (a
// header list with a ':' for '=' lost the collector's key, so every export
// was refused, and printed the key), panics on a negative batch size, and
// spins on a schedule delay of 0 (more than half a core, for nothing).
func TestExportSettingsRefused(t *testing.T) {
	const secret = "k1s3cret"
	dir := t.TempDir()
	notPEM := dir + "/ca.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A good certificate with a private key pasted after it: a CA file
	// holds certificates only (envconfig.AppendCertificates).
	withKey := dir + "/ca-and-key.pem"
	if err := os.WriteFile(withKey, append(append([]byte{}, testca.New(t, "collector CA").PEM...),
		"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ k, v string }{
		{"OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer " + secret},
		{"OTEL_EXPORTER_OTLP_HEADERS", "api-key=" + secret + ","},
		{"OTEL_EXPORTER_OTLP_HEADERS", "api-key=" + secret + "%zz"},
		{"OTEL_EXPORTER_OTLP_HEADERS", "api-key=" + secret + "%0Ax"},
		{"OTEL_EXPORTER_OTLP_HEADERS", "api key=" + secret},
		{"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=" + secret},
		{"OTEL_EXPORTER_OTLP_TIMEOUT", "10s"},
		{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"},
		{"OTEL_EXPORTER_OTLP_TIMEOUT", "-5"},
		{"OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"},
		{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "GZIP"},
		{"OTEL_EXPORTER_OTLP_CERTIFICATE", dir + "/missing.pem"},
		{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", notPEM},
		{"OTEL_EXPORTER_OTLP_CERTIFICATE", withKey},
		{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", notPEM},
		{"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", notPEM},
		{"OTEL_BSP_SCHEDULE_DELAY", "0"},
		{"OTEL_BSP_EXPORT_TIMEOUT", "30s"},
		{"OTEL_BSP_MAX_QUEUE_SIZE", "-1"},
		{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1"},
		{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"}, // more than the queue holds
	} {
		vars := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318", tc.k: tc.v}
		c, err := tracing.Load(env(vars), "svc")
		if err == nil {
			t.Errorf("%s=%q accepted (batch delay %v)", tc.k, tc.v, c.Export.BatchDelay)
			continue
		}
		if !strings.Contains(err.Error(), tc.k) {
			t.Errorf("%s=%q: the problem does not name the variable: %v", tc.k, tc.v, err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s=%q: the problem shows the key: %v", tc.k, tc.v, err)
		}
	}
	// The exporter refuses TLS settings for a plain-HTTP endpoint: said at
	// start, by -check-config too.
	ca := writeCA(t, httptest.NewTLSServer(http.NotFoundHandler()))
	if _, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
		"OTEL_EXPORTER_OTLP_CERTIFICATE": ca}), "svc"); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("a CA for an http endpoint: %v", err)
	}
}

// writeCA writes the certificate of srv (closed at the end of the test)
// as a PEM file and returns its path.
func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	t.Cleanup(srv.Close)
	path := t.TempDir() + "/ca.pem"
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExportSettingsApplied: the headers, compression, CA and batch delay
// Load read are what the exporter uses (read through the service's
// configuration, not only from the process environment).
func TestExportSettingsApplied(t *testing.T) {
	type seen struct{ key, encoding string }
	got := make(chan seen, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Get("Api-Key"), r.Header.Get("Content-Encoding")}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	srv.StartTLS()
	ca := writeCA(t, srv)
	c, err := tracing.Load(env(map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":    srv.URL + "/v1/traces",
		"OTEL_EXPORTER_OTLP_HEADERS":            "api-key=ignored",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS":     "api-key=k%2C1 , x-team=edge",
		"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
		"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": ca,
		"OTEL_BSP_SCHEDULE_DELAY":               "10",
	}), "svc")
	if err != nil {
		t.Fatal(err)
	}
	if c.Export.BatchDelay != 10*time.Millisecond || c.Export.Headers["x-team"] != "edge" {
		t.Fatalf("export settings: %+v", c.Export)
	}
	var out logbuffer.Buffer
	p, err := tracing.New(context.Background(), c, slog.New(slog.NewJSONHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	_, span := p.Tracer("t").Start(context.Background(), "s")
	span.End()
	select {
	case s := <-got:
		if s.key != "k,1" || s.encoding != "gzip" {
			t.Fatalf("export carried api-key %q, Content-Encoding %q; want k,1 and gzip", s.key, s.encoding)
		}
	case <-time.After(5 * time.Second): // the batch delay is 10 ms
		t.Fatalf("no export reached the collector; log: %s", out.String())
	}
	// The printout shows no header value (and the variable is masked).
	for _, r := range c.Rows() {
		if strings.Contains(r[1], "k,1") || strings.Contains(r[1], "edge") {
			t.Errorf("printout row %s=%s shows a header value", r[0], r[1])
		}
	}
}

// TestHeaderFiles: the export headers, which carry a collector's key, are
// read from the file OTEL_EXPORTER_OTLP_HEADERS_FILE or
// OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE names (a mounted Secret) as the
// services' other secrets are (envconfig.Reader.StringOrFile): the
// trailing newline trimmed, checked as the variable is; the variable and
// its _FILE together, a file that cannot be read, an empty one or one over
// secretfile.MaxSize are refused naming the _FILE variable and the file,
// never showing the key.
func TestHeaderFiles(t *testing.T) {
	const secret = "k1s3cret"
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		t.Run(k, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, text string) string {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			}
			file := k + "_FILE"
			good := write("headers", "api-key="+secret+",x-team=edge\n")
			c, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318", file: good}), "svc")
			if err != nil {
				t.Fatalf("%s: Load() = %v", file, err)
			}
			if c.Export.Headers["api-key"] != secret || c.Export.Headers["x-team"] != "edge" {
				t.Errorf("%s: headers %q, want the file's", file, c.Export.Headers)
			}
			_, err = tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318", k: "api-key=" + secret, file: good}), "svc")
			if err == nil || !strings.Contains(err.Error(), k+" / "+file+": set one, not both") {
				t.Errorf("%s and %s together: Load() = %v", k, file, err)
			}
			for what, path := range map[string]string{
				"missing": filepath.Join(dir, "missing"),
				"empty":   write("empty", "\n"),
				"too big": write("big", "api-key="+secret+strings.Repeat("\n", secretfile.MaxSize)),
				"refused": write("bad", "api-key: "+secret+"\n"),
			} {
				_, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318", file: path}), "svc")
				if err == nil || !strings.Contains(err.Error(), file+" "+path+": ") {
					t.Errorf("%s %s file: Load() = %v, want a problem naming %s and the file", k, what, err, file)
				} else if strings.Contains(err.Error(), secret) {
					t.Errorf("%s %s file: the problem shows the key: %v", k, what, err)
				}
			}
		})
	}
	// The traces form replaces the other, whichever way each is given.
	dir := t.TempDir()
	p := filepath.Join(dir, "traces")
	if err := os.WriteFile(p, []byte("api-key=traces\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := tracing.Load(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318",
		"OTEL_EXPORTER_OTLP_HEADERS": "api-key=generic", "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE": p}), "svc")
	if err != nil || c.Export.Headers["api-key"] != "traces" {
		t.Errorf("traces headers from a file beside generic ones: %q, %v; want the traces form's", c.Export.Headers, err)
	}
}
