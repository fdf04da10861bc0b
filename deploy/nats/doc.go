// Package nats holds Tollgate's NATS authorization: tollgate.conf, a
// nats-server include that gives coreapi and the proxies a user each with
// only the subjects they use, and helm-values.yaml, the same for the
// official Helm chart. Its test checks that the chart values grant what the
// file grants and that the server reads the passwords from its environment,
// plain or bcrypt-hashed; coreapi/internal/outbox and
// authproxy/internal/natsinv run the relay and the subscriber against a
// server started from the file (TestShippedNATSConfig).
package nats
