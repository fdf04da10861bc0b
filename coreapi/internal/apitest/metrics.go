package apitest

// MetricsAllowedZero are coreapi's metrics that a healthy run leaves at
// zero (failures, refusals, drops, and gauges of an instant), each with
// why: the live /metrics tests let them be all zero after their workload
// (metricslint.CheckAlwaysZero), which also checks that code updates
// each one, so the list cannot hide a dead metric.
var MetricsAllowedZero = map[string]string{
	"coreapi_db_pool_acquired_conns":                "connections in use at the instant of the scrape: 0 between requests",
	"coreapi_db_pool_canceled_acquires_total":       "acquires abandoned because their request ended",
	"coreapi_db_pool_constructing_conns":            "connections being opened at the instant of the scrape: 0 between bursts",
	"coreapi_identity_replay_cache_evictions_total": "signatures forgotten early because the replay cache was full",
	"coreapi_identity_rejected_total":               "requests refused for their identity headers (TestMetricsLint sends one)",
	"coreapi_machine_writes_unchecked_total":        "writes of API keys and service tokens that name no credential: only first-release proxies and tokens older than csid send them (TestUncheckedMachineWritesCounted counts them)",
	"coreapi_mail_dropped_total":                    "mails whose link died in the queue",
	"coreapi_mail_failures_total":                   "failed mail deliveries",
	"coreapi_mail_parked_total":                     "mails given up on",
	"coreapi_mail_server_refusing_messages":         "1 only while the mail server refuses every message at DATA (TestRelayRefusingEveryMessageAtDataHoldsTheQueue sets and clears it)",
	"coreapi_mail_server_refusing_recipients":       "1 only while the mail server refuses every recipient (TestRelayRefusingEveryRecipientParksNothingMore sets and clears it)",
	"coreapi_outbox_oldest_pending_age_seconds":     "0 while no outbox row is pending: a healthy relay publishes within milliseconds (TestBacklogGauges raises and clears it)",
	"coreapi_outbox_pending_rows":                   "outbox rows not yet published at the last reading: 0 unless NATS is down or refuses a subject (TestBacklogGauges raises and clears it)",
	"coreapi_outbox_publish_failures_total":         "outbox batches NATS did not take",
	"coreapi_outbox_publish_refused_total":          "outbox batches NATS's permissions refused",
	"coreapi_outbox_undeliverable_total":            "outbox rows with a subject NATS cannot deliver (Write refuses them)",
	"coreapi_overload_shed_total":                   "requests refused 503 under overload",
	"coreapi_permission_catalog_behind":             "1 only while the recorded catalog is not the replica's, during a rollout (TestCatalogBehindGauge sets and clears it)",
	"coreapi_permission_catalog_recorded_version":   "the recorded catalog's version: 0 for a catalog that declares none, as the tests' mostly do",
	"coreapi_permission_catalog_version":            "the replica's catalog's version: 0 for a catalog that declares none",
}
