package tracing

import "github.com/tollgate-auth/tollgate/shared/envconfig"

// Vars are the OTEL_* variables Load reads, as entries of a service's
// configuration table (service is its default service.name). Their
// defaults are documentation only: Load applies them, and the printout
// shows Config.Rows (which masks a password in an endpoint URL itself).
func Vars(service string) envconfig.Table {
	return envconfig.Table{
		{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Help: "OTLP/HTTP collector base URL (spans go to .../v1/traces); unset: tracing off"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Help: "full OTLP/HTTP traces URL, overriding the above"},
		{Name: "OTEL_SERVICE_NAME", DefaultDoc: service, Help: "service.name of the spans"},
		{Name: "OTEL_RESOURCE_ATTRIBUTES", Help: "more resource attributes, key=value[,key=value...]"},
		{Name: "OTEL_TRACES_SAMPLER", DefaultDoc: "parentbased_always_on", Help: "sampler, e.g. parentbased_traceidratio"},
		{Name: "OTEL_TRACES_SAMPLER_ARG", DefaultDoc: "1.0", Help: "ratio of the traceidratio samplers, 0 to 1"},
		{Name: "OTEL_SDK_DISABLED", DefaultDoc: "false", Help: "true: tracing off whatever else is set"},
		{Name: "OTEL_TRACES_EXPORTER", DefaultDoc: "otlp", Help: "otlp, or none for off"},
		{Name: "OTEL_EXPORTER_OTLP_PROTOCOL", DefaultDoc: "http/protobuf", Help: "only http/protobuf is spoken"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", DefaultDoc: "http/protobuf", Help: "the same for traces only"},
		{Name: "OTEL_EXPORTER_OTLP_HEADERS", Mask: envconfig.Secret, Help: "headers of every export, name=value[,name=value...] (values URL-encoded), e.g. a collector's key"},
		{Name: "OTEL_EXPORTER_OTLP_HEADERS_FILE", Help: "file holding those headers (a mounted Secret)"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_HEADERS", Mask: envconfig.Secret, Help: "the same for traces only, replacing the above"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE", Help: "file holding those headers (a mounted Secret)"},
		{Name: "OTEL_EXPORTER_OTLP_TIMEOUT", DefaultDoc: "10000", Help: "milliseconds one export may take"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", DefaultDoc: "10000", Help: "the same for traces only"},
		{Name: "OTEL_EXPORTER_OTLP_COMPRESSION", DefaultDoc: "none", Help: "gzip or none"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", DefaultDoc: "none", Help: "the same for traces only"},
		{Name: "OTEL_EXPORTER_OTLP_CERTIFICATE", Help: "PEM file of the CA(s) the collector's certificate is checked against (https only)"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", Help: "the same for traces only"},
		{Name: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", Help: "PEM file of a client certificate for the collector (with the key below)"},
		{Name: "OTEL_EXPORTER_OTLP_CLIENT_KEY", Help: "PEM file of the client certificate's key"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", Help: "the same for traces only"},
		{Name: "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", Help: "the same for traces only"},
		{Name: "OTEL_BSP_SCHEDULE_DELAY", DefaultDoc: "5000", Help: "milliseconds between two exports of spans"},
		{Name: "OTEL_BSP_EXPORT_TIMEOUT", DefaultDoc: "30000", Help: "milliseconds the batch processor allows one export"},
		{Name: "OTEL_BSP_MAX_QUEUE_SIZE", DefaultDoc: "2048", Help: "spans held for export; more are dropped (never waited for)"},
		{Name: "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DefaultDoc: "512", Help: "spans per export, at most OTEL_BSP_MAX_QUEUE_SIZE"},
	}
}
