// Package scripts tests the repository's shell scripts (scripts/) that set
// up a developer's machine: scripts/with-postgres.sh, which `make run` and
// `make test` run under.
package scripts
