// Package e2e runs the real coreapi and authproxy binaries, two of each, against one
// PostgreSQL cluster and one NATS server, and checks the behaviour that only shows up with
// more than one instance: cross-instance invalidation, OAuth flows that start on one core and
// finish on another, refresh rotation races, and recovery from a dead core, NATS or database.
package e2e
