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
	}
}
