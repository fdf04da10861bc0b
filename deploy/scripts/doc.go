// Package scripts tests the repository's shell scripts (scripts/) that set
// up a developer's machine: scripts/with-postgres.sh, which `make run` and
// `make test` run under; and that README.md's requirements name every
// program a test cannot do without.
package scripts
